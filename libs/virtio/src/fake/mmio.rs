//! A fake virtio-mmio device: the register model of a version 2 device.

use std::boxed::Box;
use std::sync::{Arc, Mutex, MutexGuard};
use std::vec;
use std::vec::Vec;

use crate::mmio::{CONFIG_SIZE, MAGIC, Mmio, register, status};
use crate::queue::QueueAddresses;

/// Called (outside the device's lock) with the queue index on every `QueueNotify` write.
pub type NotifyHook = Box<dyn FnMut(u16) + Send>;

/// One queue's registers as the driver programmed them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FakeQueueRegisters {
    /// `QueueNumMax` (0: the queue does not exist).
    pub num_max: u32,
    /// `QueueNum`.
    pub num: u32,
    /// `QueueReady`.
    pub ready: bool,
    /// Descriptor area.
    pub descriptors: u64,
    /// Driver area.
    pub driver: u64,
    /// Device area.
    pub device: u64,
}

impl FakeQueueRegisters {
    /// The three ring addresses.
    pub const fn addresses(&self) -> QueueAddresses {
        QueueAddresses {
            descriptors: self.descriptors,
            driver: self.driver,
            device: self.device,
        }
    }

    /// The size, as programmed (truncated to 16 bits).
    pub const fn size(&self) -> u16 {
        self.num as u16
    }
}

struct State {
    magic: u32,
    version: u32,
    device_id: u32,
    vendor_id: u32,
    device_features: u64,
    device_features_sel: u32,
    driver_features: u64,
    driver_features_sel: u32,
    required_features: u64,
    refuse_features: bool,
    status: u32,
    reset_reads: u32,
    reset_pending: u32,
    stale_status: u32,
    queue_sel: u32,
    queues: Vec<FakeQueueRegisters>,
    interrupt_status: u32,
    config: Vec<u8>,
    config_generation: u32,
    config_churn: u32,
    notifications: Vec<u16>,
    writes: Vec<(usize, u32)>,
    resets: u32,
    notify_hook: Option<NotifyHook>,
}

/// A fake version 2 virtio-mmio device. Clones share the device, so a test keeps a handle while
/// the driver owns its [`crate::Transport`].
///
/// Reset: writing 0 to `Status` resets the device model, but `Status` keeps reading the old
/// value for [`FakeMmioDevice::set_reset_reads`] more reads (a device still quiescing); with
/// `u32::MAX` it never reads 0.
#[derive(Clone)]
pub struct FakeMmioDevice {
    state: Arc<Mutex<State>>,
}

impl core::fmt::Debug for FakeMmioDevice {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let state = self.lock();
        f.debug_struct("FakeMmioDevice")
            .field("device_id", &state.device_id)
            .field("status", &state.status)
            .finish()
    }
}

impl FakeMmioDevice {
    /// A modern device of type `device_id` offering `features`, with `queues` queues of
    /// maximum size `queue_max` each.
    pub fn new(device_id: u32, features: u64, queues: usize, queue_max: u32) -> FakeMmioDevice {
        FakeMmioDevice {
            state: Arc::new(Mutex::new(State {
                magic: MAGIC,
                version: 2,
                device_id,
                vendor_id: 0x554d_4551,
                device_features: features,
                device_features_sel: 0,
                driver_features: 0,
                driver_features_sel: 0,
                required_features: 0,
                refuse_features: false,
                status: 0,
                reset_reads: 0,
                reset_pending: 0,
                stale_status: 0,
                queue_sel: 0,
                queues: vec![
                    FakeQueueRegisters {
                        num_max: queue_max,
                        ..FakeQueueRegisters::default()
                    };
                    queues
                ],
                interrupt_status: 0,
                config: vec![0; CONFIG_SIZE],
                config_generation: 0,
                config_churn: 0,
                notifications: Vec::new(),
                writes: Vec::new(),
                resets: 0,
                notify_hook: None,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets the magic value and version (e.g. 1 for a legacy device).
    pub fn set_identity(&self, magic: u32, version: u32) {
        let mut state = self.lock();
        state.magic = magic;
        state.version = version;
    }

    /// The device clears `FEATURES_OK` unless the driver accepted all of `required`.
    pub fn set_required_features(&self, required: u64) {
        self.lock().required_features = required;
    }

    /// The device clears `FEATURES_OK` whatever the driver accepts.
    pub fn set_refuse_features(&self, refuse: bool) {
        self.lock().refuse_features = refuse;
    }

    /// After a reset, `Status` reads the old value `reads` more times before 0.
    pub fn set_reset_reads(&self, reads: u32) {
        self.lock().reset_reads = reads;
    }

    /// Current status (as the device holds it, not as a pending reset shows it).
    pub fn status(&self) -> u32 {
        self.lock().status
    }

    /// Features the driver wrote.
    pub fn driver_features(&self) -> u64 {
        self.lock().driver_features
    }

    /// Queue `index`'s registers.
    pub fn queue(&self, index: usize) -> Option<FakeQueueRegisters> {
        self.lock().queues.get(index).copied()
    }

    /// Marks queue `index` ready (as if a previous driver left it set up).
    pub fn set_queue_ready(&self, index: usize, ready: bool) {
        if let Some(queue) = self.lock().queues.get_mut(index) {
            queue.ready = ready;
        }
    }

    /// Writes the configuration space at `offset` (truncated to fit) and bumps the generation.
    pub fn set_config(&self, offset: usize, bytes: &[u8]) {
        let mut state = self.lock();
        let end = offset.saturating_add(bytes.len()).min(CONFIG_SIZE);
        if offset < end {
            state.config[offset..end].copy_from_slice(&bytes[..end - offset]);
        }
        state.config_generation = state.config_generation.wrapping_add(1);
    }

    /// The next `reads` configuration reads each bump the generation (a device whose
    /// configuration keeps changing).
    pub fn set_config_churn(&self, reads: u32) {
        self.lock().config_churn = reads;
    }

    /// Raises interrupt causes (ORed into `InterruptStatus`).
    pub fn raise_interrupt(&self, causes: u32) {
        self.lock().interrupt_status |= causes;
    }

    /// Pending interrupt causes.
    pub fn interrupt_status(&self) -> u32 {
        self.lock().interrupt_status
    }

    /// Queue indices written to `QueueNotify`, in order.
    pub fn notifications(&self) -> Vec<u16> {
        self.lock().notifications.clone()
    }

    /// Every register write `(offset, value)`, in order.
    pub fn writes(&self) -> Vec<(usize, u32)> {
        self.lock().writes.clone()
    }

    /// Resets so far (writes of 0 to `Status`).
    pub fn resets(&self) -> u32 {
        self.lock().resets
    }

    /// Installs `hook`, run on every notification (e.g. a device that answers at once).
    pub fn set_notify_hook(&self, hook: impl FnMut(u16) + Send + 'static) {
        self.lock().notify_hook = Some(Box::new(hook));
    }

    fn reset(state: &mut State) {
        state.resets += 1;
        state.stale_status = state.status;
        state.reset_pending = state.reset_reads;
        state.status = 0;
        state.driver_features = 0;
        state.interrupt_status = 0;
        for queue in &mut state.queues {
            *queue = FakeQueueRegisters {
                num_max: queue.num_max,
                ..FakeQueueRegisters::default()
            };
        }
    }

    fn write_status(state: &mut State, value: u32) {
        if value == 0 {
            Self::reset(state);
            return;
        }
        state.reset_pending = 0;
        let mut value = value;
        if value & status::FEATURES_OK != 0 && state.status & status::FEATURES_OK == 0 {
            let accepted = state.driver_features;
            let acceptable = accepted & !state.device_features == 0
                && accepted & state.required_features == state.required_features
                && !state.refuse_features;
            if !acceptable {
                value &= !status::FEATURES_OK;
            }
        }
        state.status = value;
    }

    fn selected_queue(state: &mut State) -> Option<&mut FakeQueueRegisters> {
        let index = usize::try_from(state.queue_sel).ok()?;
        state.queues.get_mut(index)
    }

    fn config_read(state: &mut State, offset: usize, width: usize) -> Option<u64> {
        let at = offset.checked_sub(register::CONFIG)?;
        let end = at.checked_add(width)?;
        if end > CONFIG_SIZE {
            return None;
        }
        if state.config_churn > 0 {
            state.config_churn -= 1;
            state.config_generation = state.config_generation.wrapping_add(1);
        }
        let mut bytes = [0u8; 8];
        bytes[..width].copy_from_slice(&state.config[at..end]);
        Some(u64::from_le_bytes(bytes))
    }
}

impl Mmio for FakeMmioDevice {
    fn read32(&self, offset: usize) -> u32 {
        let mut state = self.lock();
        if offset >= register::CONFIG {
            return Self::config_read(&mut state, offset, 4).map_or(0, |v| v as u32);
        }
        match offset {
            register::MAGIC_VALUE => state.magic,
            register::VERSION => state.version,
            register::DEVICE_ID => state.device_id,
            register::VENDOR_ID => state.vendor_id,
            register::DEVICE_FEATURES => match state.device_features_sel {
                0 => state.device_features as u32,
                1 => (state.device_features >> 32) as u32,
                _ => 0,
            },
            register::QUEUE_NUM_MAX => Self::selected_queue(&mut state).map_or(0, |q| q.num_max),
            register::QUEUE_READY => {
                Self::selected_queue(&mut state).map_or(0, |q| u32::from(q.ready))
            }
            register::INTERRUPT_STATUS => state.interrupt_status,
            register::STATUS => {
                if state.reset_pending > 0 {
                    if state.reset_pending != u32::MAX {
                        state.reset_pending -= 1;
                    }
                    // Still quiescing: the old status, or at least something non-zero.
                    state.stale_status.max(status::ACKNOWLEDGE)
                } else {
                    state.status
                }
            }
            register::CONFIG_GENERATION => state.config_generation,
            _ => 0,
        }
    }

    fn write32(&self, offset: usize, value: u32) {
        let mut hook_call = None;
        {
            let mut state = self.lock();
            state.writes.push((offset, value));
            match offset {
                register::DEVICE_FEATURES_SEL => state.device_features_sel = value,
                register::DRIVER_FEATURES_SEL => state.driver_features_sel = value,
                register::DRIVER_FEATURES => match state.driver_features_sel {
                    0 => {
                        state.driver_features =
                            (state.driver_features & !0xffff_ffff) | u64::from(value)
                    }
                    1 => {
                        state.driver_features =
                            (state.driver_features & 0xffff_ffff) | u64::from(value) << 32
                    }
                    _ => {}
                },
                register::QUEUE_SEL => state.queue_sel = value,
                register::QUEUE_NUM => {
                    if let Some(q) = Self::selected_queue(&mut state) {
                        q.num = value;
                    }
                }
                register::QUEUE_READY => {
                    if let Some(q) = Self::selected_queue(&mut state) {
                        q.ready = value & 1 != 0;
                    }
                }
                register::QUEUE_DESC_LOW
                | register::QUEUE_DESC_HIGH
                | register::QUEUE_DRIVER_LOW
                | register::QUEUE_DRIVER_HIGH
                | register::QUEUE_DEVICE_LOW
                | register::QUEUE_DEVICE_HIGH => {
                    if let Some(q) = Self::selected_queue(&mut state) {
                        let field = match offset & !0xf {
                            register::QUEUE_DESC_LOW => &mut q.descriptors,
                            register::QUEUE_DRIVER_LOW => &mut q.driver,
                            _ => &mut q.device,
                        };
                        if offset & 4 == 0 {
                            *field = (*field & !0xffff_ffff) | u64::from(value);
                        } else {
                            *field = (*field & 0xffff_ffff) | u64::from(value) << 32;
                        }
                    }
                }
                register::QUEUE_NOTIFY => {
                    let index = value as u16;
                    state.notifications.push(index);
                    if let Some(hook) = state.notify_hook.take() {
                        hook_call = Some((hook, index));
                    }
                }
                register::INTERRUPT_ACK => state.interrupt_status &= !value,
                register::STATUS => Self::write_status(&mut state, value),
                _ => {}
            }
        }
        if let Some((mut hook, index)) = hook_call {
            hook(index);
            let mut state = self.lock();
            if state.notify_hook.is_none() {
                state.notify_hook = Some(hook);
            }
        }
    }

    fn read16(&self, offset: usize) -> u16 {
        let mut state = self.lock();
        Self::config_read(&mut state, offset, 2).map_or(0, |v| v as u16)
    }

    fn read8(&self, offset: usize) -> u8 {
        let mut state = self.lock();
        Self::config_read(&mut state, offset, 1).map_or(0, |v| v as u8)
    }
}
