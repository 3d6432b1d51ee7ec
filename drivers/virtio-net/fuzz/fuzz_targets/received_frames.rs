//! Received-frame handling against a hostile device: the input is a script of device actions
//! on the receive queue (frames with arbitrary net headers and contents, claimed lengths beyond
//! the buffer, used entries with arbitrary ids, used-index jumps, interrupts with and without
//! causes). After every step the driver must not have panicked, and every frame it hands on
//! must have passed its checks; those frames then go through smoltcp's Ethernet, ARP and IPv4
//! parsers as the stack would.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use moat_virtio_net::fake::{DEVICE_MAC, FakeDma, FakeNet, device};
use moat_virtio_net::features;

thread_local! {
    /// One fake DMA window for the whole run (a fake window is leaked memory).
    static DMA: RefCell<Option<FakeDma>> = const { RefCell::new(None) };
}
use smoltcp::wire::{ArpPacket, EthernetFrame, EthernetProtocol, Ipv4Packet, TcpPacket, UdpPacket};

fn parse(frame: &[u8]) {
    let Ok(ethernet) = EthernetFrame::new_checked(frame) else {
        return;
    };
    match ethernet.ethertype() {
        EthernetProtocol::Ipv4 => {
            if let Ok(ip) = Ipv4Packet::new_checked(ethernet.payload()) {
                let _ = ip.verify_checksum();
                let payload = ip.payload();
                let _ = TcpPacket::new_checked(payload);
                let _ = UdpPacket::new_checked(payload);
            }
        }
        EthernetProtocol::Arp => {
            let _ = ArpPacket::new_checked(ethernet.payload());
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let dma = DMA.with(|cell| cell.borrow_mut().take()).unwrap_or_default();
    dma.recycle();
    let Ok(mut net) = FakeNet::with_device(device(features::WANTED, 1500, 256), dma) else {
        return;
    };
    run(&mut net, data);
    let dma = net.driver.into_dma();
    DMA.with(|cell| *cell.borrow_mut() = Some(dma));
});

fn run(net: &mut FakeNet, data: &[u8]) {
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        match op % 6 {
            // A frame: 2 length bytes, then that many bytes (header included) as written.
            0 | 1 => {
                let (len, tail) = take_u16(rest);
                let len = usize::from(len).min(tail.len()).min(2048);
                let (bytes, tail) = tail.split_at(len);
                rest = tail;
                let mut with_dest = bytes.to_vec();
                // Half of them aimed at us so the later checks are reached.
                if op & 0x80 != 0 && with_dest.len() >= 18 {
                    with_dest[12..18].copy_from_slice(&DEVICE_MAC.0);
                }
                net.deliver_raw(&with_dest, None);
            }
            // A frame with a claimed length that may exceed what was written or the buffer.
            2 => {
                let (claim, tail) = take_u32(rest);
                rest = tail;
                net.deliver_raw(&[0u8; 80], Some(claim));
            }
            // A used entry with an arbitrary id.
            3 => {
                let (id, tail) = take_u32(rest);
                let (len, tail) = take_u32(tail);
                rest = tail;
                net.rx.push_used(id, len);
            }
            // The used index moved by an arbitrary amount.
            4 => {
                let (delta, tail) = take_u16(rest);
                rest = tail;
                let idx = net.rx.used_idx().wrapping_add(delta);
                net.rx.set_used_idx(idx);
            }
            _ => {}
        }
        net.driver.handle_interrupt();
        for frame in net.take_all() {
            assert!((14..=1514).contains(&frame.len()));
            let destination = &frame[..6];
            assert!(destination == DEVICE_MAC.0 || destination[0] & 1 == 1);
            parse(&frame);
        }
        if net.driver.faulted() {
            return;
        }
    }
}

fn take_u16(bytes: &[u8]) -> (u16, &[u8]) {
    match bytes.split_first_chunk::<2>() {
        Some((head, tail)) => (u16::from_le_bytes(*head), tail),
        None => (0, &[]),
    }
}

fn take_u32(bytes: &[u8]) -> (u32, &[u8]) {
    match bytes.split_first_chunk::<4>() {
        Some((head, tail)) => (u32::from_le_bytes(*head), tail),
        None => (0, &[]),
    }
}
