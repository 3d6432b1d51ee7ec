//! Host tests: entropy mixing, the in-memory link and addressing.

use alloc::collections::VecDeque;
use alloc::vec;

use smoltcp::wire::{Ipv4Address, Ipv4Cidr};

use crate::link::MemoryLink;
use crate::stack::{AddressSource, QEMU_ADDRESS, QEMU_GATEWAY};
use crate::{Addressing, Entropy, Link, Stack, StackConfig};

#[test]
fn entropy_depends_on_every_input() {
    let mut a = Entropy::new();
    let mut b = Entropy::new();
    a.add(b"seed", &[1, 2, 3]);
    b.add(b"seed", &[1, 2, 3]);
    assert_eq!(a.clone().next_u64(), b.clone().next_u64());
    let first = a.next_u64();
    assert_ne!(first, a.next_u64(), "outputs differ");
    b.add(b"seed", &[4]);
    assert_ne!(Entropy::new().next_u64(), b.next_u64());
    // Source names are framed: ("ab", "c") is not ("a", "bc").
    let mut c = Entropy::new();
    c.add(b"ab", b"c");
    let mut d = Entropy::new();
    d.add(b"a", b"bc");
    assert_ne!(c.next_u64(), d.next_u64());
}

#[test]
fn jitter_samples_are_counted() {
    let mut pool = Entropy::new();
    let mut counter = 100u64;
    let changes = pool.add_jitter(
        16,
        || {
            counter += 3;
            counter
        },
        || {},
    );
    assert_eq!(changes, 16);
    assert_eq!(pool.samples(), 16);
    let stuck = pool.add_jitter(8, || 5, || {});
    assert_eq!(stuck, 0, "a counter that does not move is reported");
}

#[test]
fn memory_link_carries_frames_both_ways() {
    let (mut a, mut b) = MemoryLink::pair();
    let mut out = VecDeque::from([vec![1u8; 60], vec![2u8; 70]]);
    a.transmit(&mut out).expect("sent");
    assert!(out.is_empty());
    let mut inbox = VecDeque::new();
    b.receive(&mut inbox).expect("received");
    assert_eq!(inbox, VecDeque::from([vec![1u8; 60], vec![2u8; 70]]));
    a.receive(&mut inbox).expect("nothing");
    assert_eq!(inbox.len(), 2);
}

fn config(addressing: Addressing) -> StackConfig {
    StackConfig {
        mac: [2, 0, 0, 0, 0, 1],
        mtu: 1500,
        seed: 42,
        addressing,
    }
}

#[test]
fn dhcp_falls_back_to_static_after_the_timeout() {
    let (link, peer) = MemoryLink::pair();
    let mut stack = Stack::new(link, config(Addressing::qemu_user()), 1_000);
    assert_eq!(stack.address(), None);
    stack.poll(1_000);
    assert!(*peer.sent.lock() == 0, "the peer sent nothing");
    // A DHCP discover went out on the cable.
    let mut seen = VecDeque::new();
    let mut peer_end = peer.clone();
    peer_end.receive(&mut seen).expect("frames");
    assert!(!seen.is_empty(), "DHCP discover sent");
    assert_eq!(seen[0][..6], [0xff; 6], "broadcast");
    stack.poll(3_000);
    assert_eq!(stack.address_source(), AddressSource::None);
    stack.poll(6_001);
    assert_eq!(stack.address(), Some(QEMU_ADDRESS));
    assert_eq!(stack.address_source(), AddressSource::Static);
    let _ = QEMU_GATEWAY;
}

#[test]
fn static_addressing_is_immediate() {
    let address = Ipv4Cidr::new(Ipv4Address::new(192, 168, 7, 2), 24);
    let (link, _peer) = MemoryLink::pair();
    let mut stack = Stack::new(
        link,
        config(Addressing::Static(
            address,
            Some(Ipv4Address::new(192, 168, 7, 1)),
        )),
        0,
    );
    assert_eq!(stack.address(), Some(address));
    stack.poll(0);
    assert_eq!(stack.link_errors(), 0);
}

#[test]
fn a_bulk_sender_fills_the_transmit_queue_in_one_poll() {
    use smoltcp::socket::tcp;
    use smoltcp::wire::IpAddress;

    let server_address = Ipv4Cidr::new(Ipv4Address::new(10, 0, 2, 15), 24);
    let client_address = Ipv4Cidr::new(Ipv4Address::new(10, 0, 2, 2), 24);
    let (server_link, client_link) = MemoryLink::pair();
    let server_sent = server_link.sent.clone();
    let mut server = Stack::new(
        server_link,
        config(Addressing::Static(server_address, None)),
        0,
    );
    let mut client_config = config(Addressing::Static(client_address, None));
    client_config.mac = [2, 0, 0, 0, 0, 2];
    let mut client = Stack::new(client_link, client_config, 0);
    let socket = || {
        tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 64 * 1024]),
            tcp::SocketBuffer::new(vec![0; 64 * 1024]),
        )
    };
    let listener = server.sockets().add(socket());
    server
        .sockets()
        .get_mut::<tcp::Socket<'_>>(listener)
        .listen(19)
        .expect("listen");
    let connection = client.sockets().add(socket());
    {
        let (sockets, context) = client.sockets_and_context();
        sockets
            .get_mut::<tcp::Socket<'_>>(connection)
            .connect(
                context,
                (IpAddress::Ipv4(server_address.address()), 19),
                40000,
            )
            .expect("connect");
    }
    let mut now = 0;
    while !server.sockets().get::<tcp::Socket<'_>>(listener).may_send() {
        now += 1;
        assert!(now < 1000, "no connection");
        client.poll(now);
        server.poll(now);
    }
    // The client advertises its window with the next exchange.
    client.poll(now);
    server.poll(now);
    let queued = server
        .sockets()
        .get_mut::<tcp::Socket<'_>>(listener)
        .send_slice(&[7u8; 60 * 1024])
        .expect("queued");
    assert_eq!(queued, 60 * 1024);
    let before = *server_sent.lock();
    server.poll(now + 1);
    let frames = *server_sent.lock() - before;
    // smoltcp's own poll sends one segment per socket, so a poll of four rounds sent at most
    // four; now the window's worth (the client advertises 16 segments) leaves at once.
    assert!(frames >= 8, "only {frames} frames left in one poll");
}
