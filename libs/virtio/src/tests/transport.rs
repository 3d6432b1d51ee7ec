//! The transport against the fake register model.

use std::vec::Vec;

use crate::fake::FakeMmioDevice;
use crate::features::{
    ACCESS_PLATFORM, EVENT_IDX, INDIRECT_DESC, NOTIFICATION_DATA, RING_PACKED, VERSION_1,
};
use crate::mmio::{MAGIC, interrupt, register, status};
use crate::queue::QueueAddresses;
use crate::transport::{Transport, TransportError};

const BLK: u32 = 2;
const POLLS: u32 = 100;
const DEVICE_BITS: u64 = 0b1010_0110; // some device-type features

fn device() -> FakeMmioDevice {
    FakeMmioDevice::new(
        BLK,
        VERSION_1 | ACCESS_PLATFORM | EVENT_IDX | DEVICE_BITS,
        2,
        256,
    )
}

fn statuses(device: &FakeMmioDevice) -> Vec<u32> {
    device
        .writes()
        .into_iter()
        .filter(|&(offset, _)| offset == register::STATUS)
        .map(|(_, value)| value)
        .collect()
}

#[test]
fn probe_accepts_a_modern_device() {
    let device = device();
    let transport = Transport::probe(device.clone()).expect("modern device");
    assert_eq!(transport.device_id(), BLK);
    // Probing writes nothing.
    assert!(device.writes().is_empty());
}

#[test]
fn probe_refuses_legacy_wrong_magic_unknown_version_and_empty_slots() {
    let legacy = device();
    legacy.set_identity(MAGIC, 1);
    assert_eq!(Transport::probe(legacy).err(), Some(TransportError::Legacy));

    let bad_magic = device();
    bad_magic.set_identity(0x1234_5678, 2);
    assert_eq!(
        Transport::probe(bad_magic).err(),
        Some(TransportError::BadMagic(0x1234_5678))
    );

    let future = device();
    future.set_identity(MAGIC, 3);
    assert_eq!(
        Transport::probe(future).err(),
        Some(TransportError::UnsupportedVersion(3))
    );

    let empty = FakeMmioDevice::new(0, VERSION_1, 1, 16);
    assert_eq!(
        Transport::probe(empty).err(),
        Some(TransportError::NoDevice)
    );
}

#[test]
fn initialize_negotiates_required_platform_and_wanted_features() {
    let device = device();
    let mut transport = Transport::probe(device.clone()).expect("probe");
    // Ask for a device bit that is offered, one that is not, event idx, and transport features
    // this crate cannot drive.
    let wanted = 0b10 | 0b1 | EVENT_IDX | RING_PACKED | NOTIFICATION_DATA | INDIRECT_DESC;
    let accepted = transport.initialize(wanted, POLLS).expect("negotiates");
    assert_eq!(accepted, VERSION_1 | ACCESS_PLATFORM | EVENT_IDX | 0b10);
    assert_eq!(device.driver_features(), accepted);
    assert_eq!(transport.features(), accepted);
    // Reset, ACKNOWLEDGE, DRIVER, FEATURES_OK in order, each keeping the earlier bits.
    assert_eq!(
        statuses(&device),
        [
            0,
            status::ACKNOWLEDGE,
            status::ACKNOWLEDGE | status::DRIVER,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        ]
    );
    transport.driver_ok();
    assert_eq!(
        device.status(),
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK
    );
}

#[test]
fn features_are_read_and_written_in_two_halves() {
    let device = device();
    let mut transport = Transport::probe(device.clone()).expect("probe");
    assert_eq!(
        transport.device_features(),
        VERSION_1 | ACCESS_PLATFORM | EVENT_IDX | DEVICE_BITS
    );
    transport.initialize(0, POLLS).expect("negotiates");
    let writes = device.writes();
    let position = |offset, value| writes.iter().position(|&w| w == (offset, value));
    let low_select = position(register::DRIVER_FEATURES_SEL, 0).expect("low half selected");
    let high_select = position(register::DRIVER_FEATURES_SEL, 1).expect("high half selected");
    assert!(low_select < high_select);
    assert_eq!(writes[low_select + 1], (register::DRIVER_FEATURES, 0));
    assert_eq!(writes[high_select + 1], (register::DRIVER_FEATURES, 0b11));
}

#[test]
fn a_device_without_version_1_is_refused_and_marked_failed() {
    let device = FakeMmioDevice::new(BLK, DEVICE_BITS, 1, 16);
    let mut transport = Transport::probe(device.clone()).expect("probe");
    assert_eq!(
        transport.initialize(DEVICE_BITS, POLLS),
        Err(TransportError::MissingFeatures(VERSION_1))
    );
    assert_ne!(device.status() & status::FAILED, 0);
}

#[test]
fn features_ok_is_checked_by_reading_it_back() {
    let device = device();
    device.set_refuse_features(true);
    let mut transport = Transport::probe(device.clone()).expect("probe");
    assert_eq!(
        transport.initialize(0, POLLS),
        Err(TransportError::FeaturesRefused)
    );
    assert_ne!(device.status() & status::FAILED, 0);
    assert_eq!(device.status() & status::FEATURES_OK, 0);
    assert_eq!(transport.features(), 0);
}

#[test]
fn a_device_that_requires_access_platform_gets_it() {
    let device = device();
    device.set_required_features(VERSION_1 | ACCESS_PLATFORM);
    let mut transport = Transport::probe(device.clone()).expect("probe");
    let accepted = transport.initialize(0, POLLS).expect("negotiates");
    assert_ne!(accepted & ACCESS_PLATFORM, 0);
}

#[test]
fn a_device_that_does_not_offer_access_platform_works_without_it() {
    let device = FakeMmioDevice::new(BLK, VERSION_1, 1, 16);
    let mut transport = Transport::probe(device.clone()).expect("probe");
    assert_eq!(transport.initialize(0, POLLS), Ok(VERSION_1));
}

#[test]
fn reset_waits_until_status_reads_back_zero() {
    let device = device();
    let mut transport = Transport::probe(device.clone()).expect("probe");
    transport.initialize(0, POLLS).expect("negotiates");
    transport.driver_ok();
    device.set_reset_reads(5);
    let mut waits = 0;
    transport
        .reset_with(POLLS, || waits += 1)
        .expect("completes after six reads");
    assert_eq!(waits, 5);
    assert_eq!(device.resets(), 2);
}

#[test]
fn reset_gives_up_after_the_allowed_polls() {
    let device = device();
    let mut transport = Transport::probe(device.clone()).expect("probe");
    transport.initialize(0, POLLS).expect("negotiates");
    device.set_reset_reads(5);
    assert!(matches!(
        transport.reset(3),
        Err(TransportError::ResetTimeout { status }) if status != 0
    ));
    // A device that never finishes: also an error, never a hang.
    device.set_reset_reads(u32::MAX);
    assert!(matches!(
        transport.reset(1000),
        Err(TransportError::ResetTimeout { .. })
    ));
    // And no polls at all is an immediate timeout.
    assert!(matches!(
        transport.reset(0),
        Err(TransportError::ResetTimeout { .. })
    ));
}

#[test]
fn initialize_fails_when_reset_does_not_complete() {
    let device = device();
    let mut transport = Transport::probe(device.clone()).expect("probe");
    transport.initialize(0, POLLS).expect("negotiates");
    device.set_reset_reads(u32::MAX);
    assert!(matches!(
        transport.initialize(0, POLLS),
        Err(TransportError::ResetTimeout { .. })
    ));
}

#[test]
fn queue_setup_programs_sizes_and_64_bit_addresses() {
    let device = device();
    let mut transport = Transport::probe(device.clone()).expect("probe");
    transport.initialize(0, POLLS).expect("negotiates");
    assert_eq!(transport.queue_max_size(1), Ok(256));
    let addresses = QueueAddresses {
        descriptors: 0x1_2345_6000,
        driver: 0x1_2345_6400,
        device: 0x1_2345_6800,
    };
    transport
        .setup_queue(1, 128, addresses)
        .expect("queue set up");
    let queue = device.queue(1).expect("queue 1");
    assert!(queue.ready);
    assert_eq!(queue.num, 128);
    assert_eq!(queue.addresses(), addresses);
    // Queue 0 untouched.
    assert!(!device.queue(0).expect("queue 0").ready);
    // Set up twice: refused.
    assert_eq!(
        transport.setup_queue(1, 128, addresses),
        Err(TransportError::QueueInUse(1))
    );
    assert_eq!(
        transport.queue_max_size(1),
        Err(TransportError::QueueInUse(1))
    );
}

#[test]
fn queue_setup_refuses_missing_queues_and_bad_sizes() {
    let device = device();
    let mut transport = Transport::probe(device.clone()).expect("probe");
    transport.initialize(0, POLLS).expect("negotiates");
    let addresses = QueueAddresses {
        descriptors: 0x1000,
        driver: 0x2000,
        device: 0x3000,
    };
    assert_eq!(
        transport.queue_max_size(7),
        Err(TransportError::QueueUnavailable(7))
    );
    assert_eq!(
        transport.setup_queue(7, 16, addresses),
        Err(TransportError::QueueUnavailable(7))
    );
    for size in [0, 3, 100, 512] {
        assert_eq!(
            transport.setup_queue(0, size, addresses),
            Err(TransportError::BadQueueSize {
                index: 0,
                size,
                max: 256
            })
        );
    }
    // A queue a previous driver left ready (no reset in between) is refused.
    device.set_queue_ready(0, true);
    assert_eq!(
        transport.setup_queue(0, 16, addresses),
        Err(TransportError::QueueInUse(0))
    );
    // A reset clears it.
    transport.initialize(0, POLLS).expect("negotiates again");
    assert_eq!(transport.setup_queue(0, 16, addresses), Ok(()));
}

#[test]
fn interrupts_are_read_then_acknowledged() {
    let device = device();
    let transport = Transport::probe(device.clone()).expect("probe");
    assert!(transport.take_interrupt().is_empty());
    device.raise_interrupt(interrupt::USED_BUFFER | interrupt::CONFIG_CHANGE | 0x80);
    let causes = transport.take_interrupt();
    assert!(causes.used_buffer());
    assert!(causes.config_changed());
    assert_eq!(causes.bits(), 3);
    // Only the known causes were acknowledged.
    assert_eq!(device.interrupt_status(), 0x80);
    let writes = device.writes();
    assert_eq!(writes.last(), Some(&(register::INTERRUPT_ACK, 3)));
}

#[test]
fn notify_writes_the_queue_index() {
    let device = device();
    let transport = Transport::probe(device.clone()).expect("probe");
    transport.notify(1);
    transport.notify(0);
    assert_eq!(device.notifications(), [1, 0]);
}

#[test]
fn needs_reset_reports_the_device_bit() {
    let device = device();
    let mut transport = Transport::probe(device.clone()).expect("probe");
    transport.initialize(0, POLLS).expect("negotiates");
    assert!(!transport.needs_reset());
    // The device sets DEVICE_NEEDS_RESET in its own status.
    crate::mmio::Mmio::write32(
        &device,
        register::STATUS,
        device.status() | status::DEVICE_NEEDS_RESET,
    );
    assert!(transport.needs_reset());
}

#[test]
fn config_reads_fields_of_every_width() {
    let device = device();
    let transport = Transport::probe(device.clone()).expect("probe");
    device.set_config(0, &0x0123_4567_89ab_cdefu64.to_le_bytes());
    device.set_config(8, &0xdead_beefu32.to_le_bytes());
    device.set_config(12, &0x4242u16.to_le_bytes());
    device.set_config(14, &[7]);
    assert_eq!(transport.config_u64(0), Ok(0x0123_4567_89ab_cdef));
    assert_eq!(transport.config_u32(8), Ok(0xdead_beef));
    assert_eq!(transport.config_u16(12), Ok(0x4242));
    assert_eq!(transport.config_u8(14), Ok(7));
    // Several fields under one generation check.
    let (capacity, size) = transport
        .read_config(|config| Ok((config.read_u64(0)?, config.read_u32(8)?)))
        .expect("consistent");
    assert_eq!((capacity, size), (0x0123_4567_89ab_cdef, 0xdead_beef));
}

#[test]
fn config_reads_retry_while_the_generation_changes() {
    let device = device();
    let transport = Transport::probe(device.clone()).expect("probe");
    device.set_config(0, &77u64.to_le_bytes());
    device.set_config_churn(5);
    let mut runs = 0;
    let value = transport
        .read_config(|config| {
            runs += 1;
            config.read_u64(0)
        })
        .expect("settles");
    assert_eq!(value, 77);
    assert!(runs > 1, "the churn forced retries");

    device.set_config_churn(u32::MAX);
    assert_eq!(transport.config_u64(0), Err(TransportError::ConfigUnstable));
}

#[test]
fn config_reads_outside_the_space_or_misaligned_are_errors() {
    let device = device();
    let transport = Transport::probe(device).expect("probe");
    assert_eq!(
        transport.config_u32(0x100),
        Err(TransportError::ConfigOutOfRange {
            offset: 0x100,
            width: 4
        })
    );
    assert_eq!(
        transport.config_u64(0xfc),
        Err(TransportError::ConfigOutOfRange {
            offset: 0xfc,
            width: 8
        })
    );
    assert_eq!(
        transport.config_u32(2),
        Err(TransportError::ConfigOutOfRange {
            offset: 2,
            width: 4
        })
    );
    assert_eq!(
        transport.config_u16(usize::MAX),
        Err(TransportError::ConfigOutOfRange {
            offset: usize::MAX,
            width: 2
        })
    );
}

#[test]
fn queue_max_size_is_capped_to_what_a_split_queue_can_be() {
    let device = FakeMmioDevice::new(BLK, VERSION_1, 1, 1 << 20);
    let mut transport = Transport::probe(device).expect("probe");
    transport.initialize(0, POLLS).expect("negotiates");
    assert_eq!(transport.queue_max_size(0), Ok(32768));
}
