//! The task's own description: the [`TaskInfo`] page the kernel filled, once the runtime has
//! checked and installed it.

use core::sync::atomic::{AtomicPtr, Ordering};

use moat_abi::{TaskId, TaskInfo};

static TASK_INFO: AtomicPtr<TaskInfo> = AtomicPtr::new(core::ptr::null_mut());

/// Makes `info` the task's description (the runtime does this at start with the kernel's page;
/// host tests may install their own). The first installation wins; returns whether this one did.
pub fn install(info: &'static TaskInfo) -> bool {
    TASK_INFO
        .compare_exchange(
            core::ptr::null_mut(),
            core::ptr::from_ref(info).cast_mut(),
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_ok()
}

/// The task's description, once installed.
pub fn info() -> Option<&'static TaskInfo> {
    let pointer = TASK_INFO.load(Ordering::Acquire);
    // SAFETY: the only non-null value ever stored is a `&'static TaskInfo` (see `install`),
    // which is never written through.
    unsafe { pointer.cast_const().as_ref() }
}

/// The task's manifest name, or `"?"` before the runtime installed the description.
pub fn name() -> &'static str {
    info().map_or("?", TaskInfo::name_str)
}

/// The task's id for this instance, once installed.
pub fn id() -> Option<TaskId> {
    info().map(|info| info.task_id)
}
