//! userlib's helpers against the fake kernel.

use moat_abi::{CapabilityKind, Error, MAP_BASE, MAP_LIMIT, PAGE_SIZE, Rights, TaskInfo};
use moat_testkit::FakeKernel;
use moat_userlib::{caps, memory, task};

#[test]
fn allocate_maps_fresh_memory_in_the_map_region() {
    let kernel = FakeKernel::new();
    let fake = kernel.add_task("mapper");
    let first = memory::allocate(&fake, 2, Rights::READ | Rights::WRITE).expect("quota");
    let second = memory::allocate(&fake, 1, Rights::READ).expect("quota");
    assert!(first.address >= MAP_BASE && first.address + first.len() <= MAP_LIMIT);
    assert!(
        second.address >= first.address + first.len() + PAGE_SIZE,
        "guard page between"
    );
    fake.write(first.address + 100, b"data").expect("writable");
    let mut buffer = [0; 4];
    fake.read(first.address + 100, &mut buffer)
        .expect("readable");
    assert_eq!(&buffer, b"data");
    assert_eq!(fake.write(second.address, b"x"), Err(Error::BadAddress));

    // SAFETY: the fake backs mappings with no host memory.
    unsafe { memory::unmap(&fake, first) }.expect("mapped");
    assert_eq!(
        fake.read(first.address, &mut buffer),
        Err(Error::BadAddress)
    );
}

#[test]
fn failed_allocations_give_everything_back() {
    let kernel = FakeKernel::new();
    let fake = kernel.add_task("poor");
    kernel.set_quota(&fake, 1);
    assert_eq!(
        memory::allocate(&fake, 2, Rights::READ).err(),
        Some(Error::QuotaExceeded)
    );
    // Mapping fails (write+execute): the frames are dropped and the quota is free again.
    assert_eq!(
        memory::allocate(&fake, 1, Rights::WRITE | Rights::EXECUTE).err(),
        Some(Error::InvalidArgument)
    );
    assert!(memory::allocate(&fake, 1, Rights::READ).is_ok());
}

#[test]
fn mmio_is_mapped_whole_and_bounded() {
    let kernel = FakeKernel::new();
    let driver = kernel.add_task("driver");
    let mmio = kernel.grant_mmio(&driver, "mmio", 0x200);
    let mapping =
        memory::map_mmio(&driver, mmio, Rights::READ | Rights::WRITE, 8 * PAGE_SIZE).expect("maps");
    assert_eq!(mapping.pages, 1);
    driver
        .write(mapping.address + 0x70, &[1, 2, 3, 4])
        .expect("writable");
    assert_eq!(
        &kernel.mmio(&driver, mmio).expect("region")[0x70..0x74],
        &[1, 2, 3, 4]
    );

    let big = kernel.grant_mmio(&driver, "big", 3 * PAGE_SIZE);
    assert_eq!(
        memory::map_mmio(&driver, big, Rights::READ, PAGE_SIZE).err(),
        Some(Error::BadLength)
    );
}

#[test]
fn capabilities_are_found_by_name_from_the_installed_page() {
    let kernel = FakeKernel::new();
    let server = kernel.add_task("dma");
    let client = kernel.add_task("blk");
    let (endpoint, _) = kernel.create_endpoint(&server, "serve");
    let slot = kernel.grant_endpoint(&client, endpoint, "dma", 1);
    assert_eq!(caps::find("dma"), None, "nothing installed yet");
    assert_eq!(
        caps::expect("dma", CapabilityKind::Endpoint),
        Err(caps::CapError::NoTaskInfo)
    );
    let info: &'static TaskInfo = Box::leak(Box::new(client.task_info()));
    assert!(task::install(info));
    assert!(!task::install(info), "first installation wins");
    assert_eq!(task::name(), "blk");
    assert_eq!(task::id(), Some(client.id()));
    assert_eq!(caps::find("dma"), Some(slot));
    assert_eq!(caps::expect("dma", CapabilityKind::Endpoint), Ok(slot));
    assert_eq!(caps::find("net"), None);
}
