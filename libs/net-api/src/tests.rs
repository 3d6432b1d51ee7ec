//! Host tests: wire sizes, slot arithmetic, the region copies and the client stub.

extern crate std;

use moat_abi::MAX_PAYLOAD;

use super::*;

#[test]
fn layout_constants_agree() {
    assert_eq!(REGION_SIZE % moat_abi::PAGE_SIZE, 0);
    assert_eq!(tx_slot_offset(0), Some(0));
    assert_eq!(tx_slot_offset(TX_SLOTS), None);
    assert_eq!(rx_slot_offset(0), Some(TX_SLOTS * SLOT_SIZE));
    assert_eq!(
        rx_slot_offset(RX_SLOTS - 1).map(|o| o + SLOT_SIZE),
        Some(REGION_SIZE)
    );
    assert_eq!(rx_slot_offset(RX_SLOTS), None);
}

#[test]
fn largest_messages_fit() {
    let full = Counters {
        rx_frames: u64::MAX,
        rx_bytes: u64::MAX,
        tx_frames: u64::MAX,
        tx_bytes: u64::MAX,
        rx_drops: RxDrops {
            truncated: u64::MAX,
            too_long: u64::MAX,
            bad_header: u64::MAX,
            not_for_us: u64::MAX,
            overrun: u64::MAX,
        },
        tx_drops: TxDrops {
            bad_length: u64::MAX,
            no_buffer: u64::MAX,
        },
        bad_used_entries: u64::MAX,
        ring_faults: u64::MAX,
        resets: u64::MAX,
    };
    let big = [
        Response::Counters(full),
        Response::Received {
            lengths: heapless::Vec::from_slice(&[u16::MAX; RX_SLOTS]).expect("fits"),
            more: true,
        },
        Response::Link(LinkInfo {
            mac: MacAddress([0xff; 6]),
            mtu: u16::MAX,
            link_up: true,
        }),
    ];
    for response in &big {
        let bytes = postcard::to_allocvec(response).expect("encodes");
        assert!(bytes.len() <= MAX_PAYLOAD, "{response:?}: {}", bytes.len());
    }
    let frames = [TxFrame {
        slot: u8::MAX,
        len: u16::MAX,
    }; TX_SLOTS];
    let request = Request::Transmit(heapless::Vec::from_slice(&frames).expect("fits"));
    assert!(postcard::to_allocvec(&request).expect("encodes").len() <= MAX_PAYLOAD);
}

#[test]
fn heap_region_copies_are_bounds_checked() {
    let region = HeapRegion::new(64);
    let peer = region.clone();
    assert!(region.write(60, &[1, 2, 3, 4]));
    assert!(!region.write(61, &[1, 2, 3, 4]));
    assert!(!region.write(usize::MAX, &[1]));
    let mut out = [0; 4];
    assert!(peer.read(60, &mut out));
    assert_eq!(out, [1, 2, 3, 4]);
    assert!(!peer.read(61, &mut out));
    assert!(!peer.read(usize::MAX - 1, &mut out));
}

#[test]
fn mapped_region_copies_are_bounds_checked() {
    let mut backing = std::vec![0u8; 128];
    {
        // SAFETY: the vector outlives the region and is not touched through a reference while
        // the region is in use.
        let region = unsafe { MappedRegion::new(backing.as_mut_ptr(), 128) }.expect("non-null");
        assert!(region.write(0, b"frame"));
        assert!(!region.write(125, b"frame"));
        let mut out = [0; 5];
        assert!(region.read(0, &mut out));
        assert_eq!(&out, b"frame");
        assert!(!region.read(124, &mut out));
    }
    assert_eq!(&backing[..5], b"frame");
}

#[test]
fn mac_display_and_groups() {
    let mac = MacAddress([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    assert_eq!(std::format!("{mac}"), "52:54:00:12:34:56");
    assert!(!mac.is_multicast());
    assert!(MacAddress::BROADCAST.is_multicast());
}
