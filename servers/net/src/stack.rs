//! [`Stack`]: a `smoltcp` interface on a [`Link`], addressed by DHCP with a static fallback.

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::dhcpv4;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Address, Ipv4Cidr};

use crate::link::Link;

/// QEMU user networking's guest address (what its DHCP server hands out first).
pub const QEMU_ADDRESS: Ipv4Cidr = Ipv4Cidr::new(Ipv4Address::new(10, 0, 2, 15), 24);
/// QEMU user networking's gateway (and DHCP server, DNS at .3).
pub const QEMU_GATEWAY: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);
/// How long to wait for a DHCP lease before using the static fallback.
pub const DEFAULT_DHCP_TIMEOUT_MS: u64 = 5_000;

/// How the stack gets its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addressing {
    /// DHCP; after `timeout_ms` without a lease, `fallback`. DHCP keeps running, and a lease
    /// that comes later replaces the fallback.
    Dhcp {
        /// Milliseconds to wait for a lease.
        timeout_ms: u64,
        /// Address and gateway to use meanwhile.
        fallback: (Ipv4Cidr, Option<Ipv4Address>),
    },
    /// This address and gateway only.
    Static(Ipv4Cidr, Option<Ipv4Address>),
}

impl Addressing {
    /// DHCP with QEMU user networking's defaults as the fallback.
    pub const fn qemu_user() -> Addressing {
        Addressing::Dhcp {
            timeout_ms: DEFAULT_DHCP_TIMEOUT_MS,
            fallback: (QEMU_ADDRESS, Some(QEMU_GATEWAY)),
        }
    }
}

/// What the stack needs to start.
#[derive(Clone, Copy, Debug)]
pub struct StackConfig {
    /// The interface's MAC address (the driver's).
    pub mac: [u8; 6],
    /// The link MTU (IP packet size).
    pub mtu: u16,
    /// Seed for `smoltcp`'s random numbers (see [`crate::entropy`]).
    pub seed: u64,
    /// How to get an address.
    pub addressing: Addressing,
}

/// Where the current address came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressSource {
    /// No address yet.
    None,
    /// A DHCP lease.
    Dhcp,
    /// Static configuration or the DHCP fallback.
    Static,
}

impl fmt::Display for AddressSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressSource::None => "none",
            AddressSource::Dhcp => "dhcp",
            AddressSource::Static => "static",
        })
    }
}

/// Frame queues between `smoltcp` and the link: the stack polls the link into `rx` and flushes
/// `tx` to it around every interface poll.
#[derive(Debug)]
struct Queues {
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
    mtu: usize,
}

/// Frames queued for the link, at most (beyond, `smoltcp` is told there is no room).
const TX_QUEUE_LIMIT: usize = 64;

struct RxToken(Vec<u8>);
struct TxToken<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0; len];
        let result = f(&mut frame);
        self.0.push_back(frame);
        result
    }
}

impl Device for Queues {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _timestamp: Instant) -> Option<(RxToken, TxToken<'_>)> {
        let frame = self.rx.pop_front()?;
        Some((RxToken(frame), TxToken(&mut self.tx)))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<TxToken<'_>> {
        (self.tx.len() < TX_QUEUE_LIMIT).then_some(TxToken(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut capabilities = DeviceCapabilities::default();
        capabilities.medium = Medium::Ethernet;
        capabilities.max_transmission_unit = self.mtu;
        capabilities.max_burst_size = Some(moat_net_api::TX_SLOTS);
        capabilities
    }
}

/// A TCP/IP stack on a link. See the [module docs](self).
pub struct Stack<L: Link> {
    link: L,
    queues: Queues,
    interface: Interface,
    sockets: SocketSet<'static>,
    dhcp: Option<SocketHandle>,
    addressing: Addressing,
    started_ms: Option<u64>,
    source: AddressSource,
    link_errors: u64,
}

impl<L: Link> fmt::Debug for Stack<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stack")
            .field("address", &self.address())
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl<L: Link> Stack<L> {
    /// A stack on `link`, configured by `config`, starting at `now_ms` (milliseconds on any
    /// monotonic clock, the same one given to [`Self::poll`]).
    pub fn new(link: L, config: StackConfig, now_ms: u64) -> Self {
        let mut queues = Queues {
            rx: VecDeque::new(),
            tx: VecDeque::new(),
            // The Ethernet MTU smoltcp wants is the IP MTU plus the header.
            mtu: usize::from(config.mtu) + 14,
        };
        let mut iface_config = Config::new(HardwareAddress::Ethernet(EthernetAddress(config.mac)));
        iface_config.random_seed = config.seed;
        let interface = Interface::new(iface_config, &mut queues, instant(now_ms));
        let mut stack = Stack {
            link,
            queues,
            interface,
            sockets: SocketSet::new(Vec::new()),
            dhcp: None,
            addressing: config.addressing,
            started_ms: None,
            source: AddressSource::None,
            link_errors: 0,
        };
        match config.addressing {
            Addressing::Static(address, gateway) => {
                stack.set_address(address, gateway, AddressSource::Static)
            }
            Addressing::Dhcp { .. } => {
                stack.dhcp = Some(stack.sockets.add(dhcpv4::Socket::new()));
            }
        }
        stack
    }

    /// The current address, if any.
    pub fn address(&self) -> Option<Ipv4Cidr> {
        self.interface
            .ip_addrs()
            .iter()
            .map(|cidr| match cidr {
                IpCidr::Ipv4(cidr) => *cidr,
            })
            .next()
    }

    /// Where the address came from.
    pub fn address_source(&self) -> AddressSource {
        self.source
    }

    /// Link errors seen by [`Self::poll`] (e.g. the driver restarting).
    pub fn link_errors(&self) -> u64 {
        self.link_errors
    }

    /// The sockets, to add and use TCP sockets.
    pub fn sockets(&mut self) -> &mut SocketSet<'static> {
        &mut self.sockets
    }

    /// The sockets and the interface context (for `tcp::Socket::connect`).
    pub fn sockets_and_context(
        &mut self,
    ) -> (&mut SocketSet<'static>, &mut smoltcp::iface::Context) {
        (&mut self.sockets, self.interface.context())
    }

    /// The link, shared (e.g. to ask the driver for counters).
    pub fn link_ref(&self) -> &L {
        &self.link
    }

    /// The link.
    pub fn link(&mut self) -> &mut L {
        &mut self.link
    }

    fn set_address(
        &mut self,
        address: Ipv4Cidr,
        gateway: Option<Ipv4Address>,
        source: AddressSource,
    ) {
        self.interface.update_ip_addrs(|addrs| {
            addrs.clear();
            // One address always fits.
            let _ = addrs.push(IpCidr::Ipv4(address));
        });
        let routes = self.interface.routes_mut();
        routes.remove_default_ipv4_route();
        if let Some(gateway) = gateway {
            let _ = routes.add_default_ipv4_route(gateway);
        }
        self.source = source;
    }

    fn clear_address(&mut self) {
        self.interface.update_ip_addrs(|addrs| addrs.clear());
        self.interface.routes_mut().remove_default_ipv4_route();
        self.source = AddressSource::None;
    }

    /// Moves frames in from the link, runs the interface (sockets, ARP, DHCP, timers), moves
    /// frames out, and applies DHCP results and the fallback. Returns whether anything happened.
    pub fn poll(&mut self, now_ms: u64) -> bool {
        let started = *self.started_ms.get_or_insert(now_ms);
        if self.link.receive(&mut self.queues.rx).is_err() {
            self.link_errors += 1;
        }
        let mut active = false;
        // A few rounds: replies produced by received frames go out in the same call.
        for _ in 0..4 {
            let mut result =
                self.interface
                    .poll(instant(now_ms), &mut self.queues, &mut self.sockets);
            // `poll` lets each socket send one segment; a bulk sender has more. Let them
            // fill the transmit queue, so the link sends full batches (one driver call per
            // TX_SLOTS frames instead of one per segment).
            while self.queues.tx.len() < TX_QUEUE_LIMIT {
                let queued = self.queues.tx.len();
                if self
                    .interface
                    .poll_egress(instant(now_ms), &mut self.queues, &mut self.sockets)
                    == smoltcp::iface::PollResult::SocketStateChanged
                {
                    result = smoltcp::iface::PollResult::SocketStateChanged;
                }
                if self.queues.tx.len() == queued {
                    break;
                }
            }
            let moved = !self.queues.tx.is_empty();
            if moved && self.link.transmit(&mut self.queues.tx).is_err() {
                self.link_errors += 1;
                self.queues.tx.clear();
            }
            let changed = result == smoltcp::iface::PollResult::SocketStateChanged;
            active |= changed || moved;
            if !changed && !moved && self.queues.rx.is_empty() {
                break;
            }
        }
        self.apply_dhcp(now_ms.saturating_sub(started));
        active
    }

    fn apply_dhcp(&mut self, elapsed_ms: u64) {
        let Some(handle) = self.dhcp else {
            return;
        };
        let event = self.sockets.get_mut::<dhcpv4::Socket<'_>>(handle).poll();
        match event {
            Some(dhcpv4::Event::Configured(config)) => {
                let (address, router) = (config.address, config.router);
                log::info!("dhcp: {address} via {router:?}");
                self.set_address(address, router, AddressSource::Dhcp);
            }
            Some(dhcpv4::Event::Deconfigured) if self.source == AddressSource::Dhcp => {
                log::info!("dhcp: lease lost");
                self.clear_address();
            }
            _ => {}
        }
        if let Addressing::Dhcp {
            timeout_ms,
            fallback: (address, gateway),
        } = self.addressing
            && self.source == AddressSource::None
            && elapsed_ms >= timeout_ms
        {
            log::info!("dhcp: no lease after {timeout_ms} ms, using {address}");
            self.set_address(address, gateway, AddressSource::Static);
        }
    }

    /// Milliseconds until the stack wants to be polled again (`None`: only when frames arrive).
    pub fn poll_delay_ms(&mut self, now_ms: u64) -> Option<u64> {
        self.interface
            .poll_delay(instant(now_ms), &self.sockets)
            .map(|delay| delay.total_millis())
    }
}

fn instant(ms: u64) -> Instant {
    Instant::from_millis(i64::try_from(ms).unwrap_or(i64::MAX))
}
