//! [`FakeKernel`] (the test's handle for setting up and inspecting the system) and [`FakeTask`]
//! (one task's view, implementing [`Syscalls`]).

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use moat_abi::{
    CapSlot, Error, FaultReason, Message, Rights, Syscall, TaskId, TaskInfo, TaskState, Timeout,
};
use moat_kernel_core::queue::MessageQueue;
use moat_userlib::{CapInfo, MemoryInfo, Received, Syscalls, TaskStatus};

use crate::state::{
    CAP_TABLE_SIZE, CallState, Cap, DEFAULT_PER_SENDER_LIMIT, Endpoint, Irq, MmioRegion, Object,
    Pump, Record, RecvOutcome, State, Task,
};

/// How long a task may block "forever" before the fake declares a deadlock and panics.
pub const DEFAULT_STALL_LIMIT: Duration = Duration::from_secs(10);

/// The unwind payload that ends a fake task's thread when it calls `exit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskExit(pub u64);

/// The unwind payload that ends a blocked task when the kernel shuts down or the task is killed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskStopped;

/// How a task body run with [`run_task`] or [`FakeKernel::spawn`] ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome<T> {
    /// The body returned.
    Returned(T),
    /// The task called `exit` with this code.
    Exited(u64),
    /// The task was killed, or the kernel shut down while it was blocked.
    Stopped,
    /// The body panicked with this message.
    Panicked(String),
}

/// Runs `body` as a task would run: `exit`, a kill or a panic end it without failing the test.
pub fn run_task<T>(body: impl FnOnce() -> T) -> Outcome<T> {
    match panic::catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => Outcome::Returned(value),
        Err(payload) => outcome_of(payload),
    }
}

fn outcome_of<T>(payload: Box<dyn Any + Send>) -> Outcome<T> {
    if let Some(TaskExit(code)) = payload.downcast_ref::<TaskExit>() {
        return Outcome::Exited(*code);
    }
    if payload.downcast_ref::<TaskStopped>().is_some() {
        return Outcome::Stopped;
    }
    if let Some(message) = payload.downcast_ref::<&str>() {
        return Outcome::Panicked((*message).to_owned());
    }
    if let Some(message) = payload.downcast_ref::<String>() {
        return Outcome::Panicked(message.clone());
    }
    Outcome::Panicked("non-string panic".to_owned())
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    stall_limit: Mutex<Duration>,
}

/// A fake Moat kernel: tasks, capability tables, endpoint queues with the real queue logic
/// (`moat_kernel_core::queue`), calls with one-shot reply capabilities, notifications,
/// interrupts, memory objects backed by `Vec<u8>`, task control and fault reports — and a record
/// of every syscall. Cheap to clone: clones share one kernel.
///
/// Blocking syscalls really block (on a condition variable), so a server can run its real serve
/// loop on a thread ([`FakeKernel::spawn`]) while the test calls it. For single-threaded tests,
/// [`FakeKernel::set_pump`] attaches code that serves one request to an endpoint: a `call` to
/// that endpoint runs it inline instead of waiting.
#[derive(Clone)]
pub struct FakeKernel {
    shared: Arc<Shared>,
}

impl Default for FakeKernel {
    fn default() -> Self {
        FakeKernel::new()
    }
}

/// Names an endpoint created with [`FakeKernel::create_endpoint`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EndpointId(pub(crate) usize);

/// Names an interrupt line created with [`FakeKernel::grant_irq`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IrqId(usize);

impl FakeKernel {
    /// A kernel with no tasks.
    pub fn new() -> FakeKernel {
        FakeKernel {
            shared: Arc::new(Shared {
                state: Mutex::new(State::new()),
                wake: Condvar::new(),
                stall_limit: Mutex::new(DEFAULT_STALL_LIMIT),
            }),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn wake_all(&self) {
        self.shared.wake.notify_all();
    }

    /// Changes how long a "forever" wait may last before the fake panics with a deadlock report.
    pub fn set_stall_limit(&self, limit: Duration) {
        *self
            .shared
            .stall_limit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = limit;
    }

    fn stall_limit(&self) -> Duration {
        *self
            .shared
            .stall_limit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a running task named `name` with a memory quota of 1024 pages. Task index 0 is the
    /// supervisor: fault reports go to the first endpoint it serves.
    pub fn add_task(&self, name: &str) -> FakeTask {
        let mut state = self.lock();
        let index = u16::try_from(state.tasks.len()).expect("fewer than 65535 fake tasks");
        state.tasks.push(Task {
            name: name.to_owned(),
            id: TaskId::new(index, 0),
            state: TaskState::Runnable,
            detail: 0,
            caps: vec![None; CAP_TABLE_SIZE],
            named: Vec::new(),
            notifications: 0,
            console: Vec::new(),
            mappings: Vec::new(),
            quota_pages: 1024,
            used_pages: 0,
            physical: false,
        });
        FakeTask {
            kernel: self.clone(),
            index,
        }
    }

    /// Sets a task's memory quota in pages.
    pub fn set_quota(&self, task: &FakeTask, pages: usize) {
        self.lock().task_mut(task.index).quota_pages = pages;
    }

    /// Lets a task's `MemAlloc` capabilities carry `PHYSICAL` (as the manifest grants the DMA
    /// server).
    pub fn grant_physical(&self, task: &FakeTask) {
        self.lock().task_mut(task.index).physical = true;
    }

    fn grant(
        &self,
        task: &FakeTask,
        name: &str,
        object: Object,
        rights: Rights,
        badge: u64,
    ) -> CapSlot {
        let mut state = self.lock();
        let slot = state
            .insert_cap(
                task.index,
                Cap {
                    object,
                    rights,
                    badge,
                    initial: true,
                },
            )
            .expect("fake task capability table full");
        state
            .task_mut(task.index)
            .named
            .push((name.to_owned(), slot));
        slot
    }

    /// Creates an endpoint served by `server` (per-sender limit
    /// [`DEFAULT_PER_SENDER_LIMIT`](crate::DEFAULT_PER_SENDER_LIMIT)) and gives the server a
    /// `SEND | RECEIVE | TRANSFER` capability named `name`.
    pub fn create_endpoint(&self, server: &FakeTask, name: &str) -> (EndpointId, CapSlot) {
        self.create_endpoint_limited(server, name, DEFAULT_PER_SENDER_LIMIT)
    }

    /// As [`FakeKernel::create_endpoint`] with a per-sender limit.
    pub fn create_endpoint_limited(
        &self,
        server: &FakeTask,
        name: &str,
        per_sender_limit: usize,
    ) -> (EndpointId, CapSlot) {
        let endpoint = {
            let mut state = self.lock();
            state.endpoints.push(Endpoint {
                server: server.index,
                queue: MessageQueue::new(per_sender_limit),
            });
            state.endpoints.len() - 1
        };
        let slot = self.grant(
            server,
            name,
            Object::Endpoint(endpoint),
            Rights::SEND | Rights::RECEIVE | Rights::TRANSFER,
            0,
        );
        (EndpointId(endpoint), slot)
    }

    /// Gives `client` a `SEND | TRANSFER` capability to `endpoint` with `badge`, named `name`.
    pub fn grant_endpoint(
        &self,
        client: &FakeTask,
        endpoint: EndpointId,
        name: &str,
        badge: u64,
    ) -> CapSlot {
        self.grant(
            client,
            name,
            Object::Endpoint(endpoint.0),
            Rights::SEND | Rights::TRANSFER,
            badge,
        )
    }

    /// Gives `holder` a capability, named `name`, that sets `bits` in `target`'s notification
    /// word.
    pub fn grant_notification(
        &self,
        holder: &FakeTask,
        target: &FakeTask,
        name: &str,
        bits: u64,
    ) -> CapSlot {
        self.grant(
            holder,
            name,
            Object::Notification(target.index),
            Rights::SEND | Rights::TRANSFER,
            bits,
        )
    }

    /// Gives `owner` an interrupt line delivered as notification bit `bit`, named `name`.
    pub fn grant_irq(&self, owner: &FakeTask, name: &str, bit: u32) -> (IrqId, CapSlot) {
        assert!(bit < 64, "notification bits are 0..64");
        let irq = {
            let mut state = self.lock();
            state.irqs.push(Irq {
                owner: owner.index,
                bit,
                masked: false,
                pending: false,
                acks: 0,
            });
            state.irqs.len() - 1
        };
        let slot = self.grant(owner, name, Object::Irq(irq), Rights::RECEIVE, 0);
        (IrqId(irq), slot)
    }

    /// Gives `owner` an MMIO region of `size` bytes (zeroed registers), named `name`.
    pub fn grant_mmio(&self, owner: &FakeTask, name: &str, size: usize) -> CapSlot {
        let region = {
            let mut state = self.lock();
            state.mmios.push(MmioRegion {
                bytes: vec![0; size],
            });
            state.mmios.len() - 1
        };
        self.grant(
            owner,
            name,
            Object::Mmio(region),
            Rights::READ | Rights::WRITE,
            0,
        )
    }

    /// Gives `owner` the Share capability, named `name`.
    pub fn grant_share(&self, owner: &FakeTask, name: &str) -> CapSlot {
        self.grant(owner, name, Object::Share, Rights::WRITE, 0)
    }

    /// Gives `owner` the TaskControl capability, named `name`.
    pub fn grant_task_control(&self, owner: &FakeTask, name: &str) -> CapSlot {
        self.grant(owner, name, Object::TaskControl, Rights::WRITE, 0)
    }

    /// Gives `owner` the ConsoleInput capability, named `name`.
    pub fn grant_console_input(&self, owner: &FakeTask, name: &str) -> CapSlot {
        self.grant(owner, name, Object::ConsoleInput, Rights::RECEIVE, 0)
    }

    /// Types `bytes` on the console: `ConsoleRead` returns them (waking a waiting reader).
    pub fn type_input(&self, bytes: &[u8]) {
        self.lock().console_input.extend(bytes.iter().copied());
        self.wake_all();
    }

    /// Raises an interrupt line: its bit is set in the owner's notification word and the line
    /// masked until `IrqAck` (raised again while masked, it fires on the acknowledgement).
    pub fn raise_irq(&self, irq: IrqId) {
        self.lock().raise_irq(irq.0);
        self.wake_all();
    }

    /// How many times the owner acknowledged `irq`.
    pub fn irq_acks(&self, irq: IrqId) -> usize {
        self.lock().irqs[irq.0].acks
    }

    /// Sets notification bits of `task` directly (as another task's signal would).
    pub fn notify(&self, task: &FakeTask, bits: u64) {
        self.lock().task_mut(task.index).notifications |= bits;
        self.wake_all();
    }

    /// Makes `task` fault as if by `reason`: it stops, its peers see `Dead`, and the supervisor
    /// gets a fault report with these register values.
    pub fn fault(&self, task: &FakeTask, reason: FaultReason, esr: u64, far: u64) {
        let mut state = self.lock();
        let id = state.task(task.index).id;
        let mut report = State::report(task.index, id, reason, 0);
        report.esr = esr;
        report.far = far;
        state.task_mut(task.index).detail = esr;
        state.stop_task(task.index, TaskState::Faulted, Some(report));
        drop(state);
        self.wake_all();
    }

    /// Attaches `pump` to `endpoint`: when a `call` to it would wait while its queue holds
    /// messages, the fake runs `pump` (typically the server's `serve_one`) inline instead.
    pub fn set_pump(&self, endpoint: EndpointId, pump: impl FnMut() + Send + 'static) {
        let pump: Pump = Box::new(pump);
        self.lock().pumps.insert(endpoint.0, Some(pump));
    }

    /// Runs `body` on a thread as `task`. Dropping (or [`TaskThread::stop`]ping) the handle
    /// shuts the kernel down, so a server loop blocked in `recv` ends.
    pub fn spawn<T: Send + 'static>(
        &self,
        task: &FakeTask,
        body: impl FnOnce(FakeTask) -> T + Send + 'static,
    ) -> TaskThread<T> {
        let task = task.clone();
        let handle = thread::spawn(move || run_task(move || body(task)));
        TaskThread {
            kernel: self.clone(),
            handle: Some(handle),
        }
    }

    /// Wakes every blocked task and makes it (and any later blocking call) unwind with
    /// [`TaskStopped`].
    pub fn shutdown(&self) {
        self.lock().shutdown = true;
        self.wake_all();
    }

    /// Advances the fake clock (what `Time` returns) by `nanoseconds`.
    pub fn advance_time(&self, nanoseconds: u64) {
        self.lock().clock += nanoseconds;
    }

    /// The status passed to a successful `SystemOff`, if any task powered the system off.
    pub fn system_off_status(&self) -> Option<u64> {
        self.lock().system_off
    }

    /// Every syscall made so far, in order.
    pub fn records(&self) -> Vec<Record> {
        self.lock().records.clone()
    }

    /// How many times `syscall` was made.
    pub fn count(&self, syscall: Syscall) -> usize {
        self.lock()
            .records
            .iter()
            .filter(|record| record.syscall == syscall)
            .count()
    }

    /// Everything every task wrote to the console, in order.
    pub fn console(&self) -> String {
        String::from_utf8_lossy(&self.lock().console).into_owned()
    }

    /// Messages waiting on `endpoint`.
    pub fn queued(&self, endpoint: EndpointId) -> usize {
        self.lock().endpoints[endpoint.0].queue.len()
    }

    /// A copy of the bytes of the memory named by `task`'s Memory capability `slot`.
    pub fn memory(&self, task: &FakeTask, slot: CapSlot) -> Result<Vec<u8>, Error> {
        let state = self.lock();
        let Object::Memory {
            object,
            first_page,
            pages,
        } = state.cap(task.index, slot)?.object
        else {
            return Err(Error::WrongKind);
        };
        let start = first_page * moat_abi::PAGE_SIZE;
        Ok(state.memories[object].bytes[start..start + pages * moat_abi::PAGE_SIZE].to_vec())
    }

    /// Writes into the memory named by `task`'s Memory capability `slot` at `offset`, as a
    /// device or the host would (no mapping needed; for hostile-host tests on shared memory).
    pub fn write_memory(
        &self,
        task: &FakeTask,
        slot: CapSlot,
        offset: usize,
        bytes: &[u8],
    ) -> Result<(), Error> {
        let mut state = self.lock();
        let Object::Memory {
            object,
            first_page,
            pages,
        } = state.cap(task.index, slot)?.object
        else {
            return Err(Error::WrongKind);
        };
        let start = first_page * moat_abi::PAGE_SIZE + offset;
        let end = start.checked_add(bytes.len()).ok_or(Error::BadLength)?;
        if end > (first_page + pages) * moat_abi::PAGE_SIZE {
            return Err(Error::BadLength);
        }
        state.memories[object].bytes[start..end].copy_from_slice(bytes);
        Ok(())
    }

    /// Bytes of the MMIO region of `task`'s Mmio capability `slot` (for checking register
    /// writes).
    pub fn mmio(&self, task: &FakeTask, slot: CapSlot) -> Result<Vec<u8>, Error> {
        let state = self.lock();
        let Object::Mmio(region) = state.cap(task.index, slot)?.object else {
            return Err(Error::WrongKind);
        };
        Ok(state.mmios[region].bytes.clone())
    }
}

/// A task body running on its own thread (see [`FakeKernel::spawn`]).
pub struct TaskThread<T> {
    kernel: FakeKernel,
    handle: Option<JoinHandle<Outcome<T>>>,
}

impl<T> TaskThread<T> {
    /// Waits for the body to end by itself.
    pub fn join(mut self) -> Outcome<T> {
        self.handle
            .take()
            .map(|handle| handle.join().unwrap_or_else(outcome_of))
            .unwrap_or(Outcome::Stopped)
    }

    /// Shuts the kernel down (ending blocked tasks) and waits for the body.
    pub fn stop(self) -> Outcome<T> {
        self.kernel.shutdown();
        self.join()
    }
}

impl<T> Drop for TaskThread<T> {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            self.kernel.shutdown();
            let _ = handle.join();
        }
    }
}

/// One fake task: its syscalls go to the [`FakeKernel`] it came from. Cheap to clone; `Send`
/// and `Sync`, so a task body can run on another thread.
#[derive(Clone)]
pub struct FakeTask {
    kernel: FakeKernel,
    index: u16,
}

enum Deadline {
    Now,
    At(Instant),
    Stall(Instant),
}

impl FakeTask {
    /// The kernel this task lives in.
    pub fn kernel(&self) -> &FakeKernel {
        &self.kernel
    }

    /// The task's index.
    pub fn index(&self) -> u16 {
        self.index
    }

    /// The current instance's id.
    pub fn id(&self) -> TaskId {
        self.kernel.lock().task(self.index).id
    }

    /// The task's state.
    pub fn state(&self) -> TaskState {
        self.kernel.lock().task(self.index).state
    }

    /// The slot of the initial capability named `name`.
    pub fn capability(&self, name: &str) -> Option<CapSlot> {
        self.kernel
            .lock()
            .task(self.index)
            .named
            .iter()
            .find(|(named, _)| named == name)
            .map(|(_, slot)| *slot)
    }

    /// The task information page the kernel would give this task.
    pub fn task_info(&self) -> TaskInfo {
        let state = self.kernel.lock();
        let task = state.task(self.index);
        let mut info = TaskInfo::new(task.id, &task.name).expect("valid fake task name");
        for (name, slot) in &task.named {
            if let Some(cap) = task.caps[slot.index().unwrap_or(usize::MAX)] {
                info.push_capability(name, *slot, cap.object.kind())
                    .expect("valid fake capability name");
            }
        }
        info
    }

    /// What this task wrote to the console.
    pub fn console_output(&self) -> String {
        String::from_utf8_lossy(&self.kernel.lock().task(self.index).console).into_owned()
    }

    /// Pending notification bits (not cleared).
    pub fn pending_notifications(&self) -> u64 {
        self.kernel.lock().task(self.index).notifications
    }

    /// Copies `buffer.len()` bytes from the task's address space at `address` (mapped readable).
    pub fn read(&self, address: usize, buffer: &mut [u8]) -> Result<(), Error> {
        let mut state = self.kernel.lock();
        let pieces = state.translate(self.index, address, buffer.len(), Rights::READ)?;
        let mut done = 0;
        for (target, start, length) in pieces {
            buffer[done..done + length]
                .copy_from_slice(&state.bytes_mut(target)[start..start + length]);
            done += length;
        }
        Ok(())
    }

    /// Copies `bytes` into the task's address space at `address` (mapped writable).
    pub fn write(&self, address: usize, bytes: &[u8]) -> Result<(), Error> {
        let mut state = self.kernel.lock();
        let pieces = state.translate(self.index, address, bytes.len(), Rights::WRITE)?;
        let mut done = 0;
        for (target, start, length) in pieces {
            state.bytes_mut(target)[start..start + length]
                .copy_from_slice(&bytes[done..done + length]);
            done += length;
        }
        Ok(())
    }

    /// Runs one locked, non-blocking operation and records it.
    fn op<T>(
        &self,
        syscall: Syscall,
        operation: impl FnOnce(&mut State, u16) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut state = self.kernel.lock();
        self.check_running(&state);
        let result = operation(&mut state, self.index);
        state.record(
            self.index,
            syscall,
            result.as_ref().map(drop).map_err(|error| *error),
        );
        drop(state);
        self.kernel.wake_all();
        result
    }

    /// A task that is not running (killed, faulted, exited) or a kernel that shut down ends the
    /// calling thread.
    fn check_running(&self, state: &State) {
        if state.shutdown || !state.alive(self.index) {
            panic::resume_unwind(Box::new(TaskStopped));
        }
    }

    fn deadline(&self, timeout: Timeout) -> Deadline {
        match timeout {
            Timeout::NonBlocking => Deadline::Now,
            Timeout::Nanoseconds(nanoseconds) => {
                Deadline::At(Instant::now() + Duration::from_nanos(nanoseconds.get()))
            }
            Timeout::Forever => Deadline::Stall(Instant::now() + self.kernel.stall_limit()),
        }
    }

    /// Waits for a change; `Err(TimedOut)` at the deadline. Unwinds if the task is stopped.
    fn wait<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        deadline: &Deadline,
        syscall: Syscall,
    ) -> Result<MutexGuard<'a, State>, (MutexGuard<'a, State>, Error)> {
        let until = match deadline {
            Deadline::Now => return Err((state, Error::WouldBlock)),
            Deadline::At(until) | Deadline::Stall(until) => *until,
        };
        let now = Instant::now();
        if now >= until {
            if let Deadline::Stall(_) = deadline {
                let name = state.task(self.index).name.clone();
                drop(state);
                panic!(
                    "fake kernel: task '{name}' blocked in {syscall:?} with nothing to wake it (deadlock?)"
                );
            }
            return Err((state, Error::TimedOut));
        }
        if state.task(self.index).state == TaskState::Runnable {
            state.task_mut(self.index).state = TaskState::Blocked;
        }
        let (mut state, _) = self
            .kernel
            .shared
            .wake
            .wait_timeout(state, until - now)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.task(self.index).state == TaskState::Blocked {
            state.task_mut(self.index).state = TaskState::Runnable;
        }
        if state.shutdown || !state.alive(self.index) {
            drop(state);
            panic::resume_unwind(Box::new(TaskStopped));
        }
        Ok(state)
    }

    fn finish<T>(
        &self,
        mut state: MutexGuard<'_, State>,
        syscall: Syscall,
        result: Result<T, Error>,
    ) -> Result<T, Error> {
        state.record(
            self.index,
            syscall,
            result.as_ref().map(drop).map_err(|error| *error),
        );
        drop(state);
        self.kernel.wake_all();
        result
    }

    fn exit_now(&self, code: u64) -> ! {
        let mut state = self.kernel.lock();
        state.record(self.index, Syscall::Exit, Ok(()));
        if state.alive(self.index) {
            let id = state.task(self.index).id;
            state.task_mut(self.index).detail = code;
            let report = State::report(self.index, id, FaultReason::Exited, code);
            state.stop_task(self.index, TaskState::Exited, Some(report));
            // stop_task leaves the detail alone; keep the exit code visible in TaskStatus.
            state.task_mut(self.index).detail = code;
        }
        drop(state);
        self.kernel.wake_all();
        panic::resume_unwind(Box::new(TaskExit(code)))
    }

    fn try_pump(&self, endpoint: usize) -> bool {
        let mut state = self.kernel.lock();
        if state.endpoints[endpoint].queue.is_empty() {
            return false;
        }
        let Some(slot) = state.pumps.get_mut(&endpoint) else {
            return false;
        };
        let Some(mut pump) = slot.take() else {
            return false;
        };
        drop(state);
        pump();
        self.kernel.lock().pumps.insert(endpoint, Some(pump));
        true
    }
}

fn decode_slot(raw: u64) -> Result<CapSlot, Error> {
    u32::try_from(raw)
        .map(CapSlot)
        .map_err(|_| Error::InvalidCapability)
}

fn decode_rights(raw: u64) -> Result<Rights, Error> {
    u32::try_from(raw)
        .ok()
        .and_then(Rights::from_bits)
        .ok_or(Error::InvalidArgument)
}

fn decode_usize(raw: u64) -> Result<usize, Error> {
    usize::try_from(raw).map_err(|_| Error::BadLength)
}

fn encode(result: Result<[u64; 3], Error>) -> [u64; 4] {
    match result {
        Ok([a, b, c]) => [0, a, b, c],
        Err(error) => [u64::from(error.to_raw()), 0, 0, 0],
    }
}

impl FakeTask {
    /// The raw entry point's decoder for calls without pointers.
    fn raw(&self, number: Syscall, args: [u64; 6]) -> Result<[u64; 3], Error> {
        Ok(match number {
            Syscall::Yield => {
                self.yield_now();
                [0; 3]
            }
            Syscall::Exit => self.exit(args[0]),
            Syscall::Time => [self.time(), 0, 0],
            Syscall::TaskSelf => [u64::from(self.task_self()?.to_raw()), 0, 0],
            Syscall::NotifyWait => [self.notify_wait(args[0], Timeout::from_raw(args[1]))?, 0, 0],
            Syscall::NotifySignal => {
                self.notify_signal(decode_slot(args[0])?)?;
                [0; 3]
            }
            Syscall::IrqAck => {
                self.irq_ack(decode_slot(args[0])?)?;
                [0; 3]
            }
            Syscall::CapInfo => {
                let info = self.cap_info(decode_slot(args[0])?)?;
                [
                    u64::from(info.kind.to_raw()),
                    u64::from(info.rights.bits()),
                    info.badge,
                ]
            }
            Syscall::CapDerive => {
                let slot =
                    self.cap_derive(decode_slot(args[0])?, decode_rights(args[1])?, args[2])?;
                [u64::from(slot.0), 0, 0]
            }
            Syscall::CapDrop => {
                self.cap_drop(decode_slot(args[0])?)?;
                [0; 3]
            }
            Syscall::MemAlloc => {
                let slot = self.mem_alloc(decode_usize(args[0])?, decode_usize(args[1])?)?;
                [u64::from(slot.0), 0, 0]
            }
            Syscall::MemMap => {
                self.mem_map(
                    decode_slot(args[0])?,
                    decode_usize(args[1])?,
                    decode_rights(args[2])?,
                    decode_usize(args[3])?,
                    decode_usize(args[4])?,
                )?;
                [0; 3]
            }
            Syscall::MemUnmap => {
                // SAFETY: the fake's mappings back no host memory; nothing can dangle.
                unsafe { self.mem_unmap(decode_usize(args[0])?, decode_usize(args[1])?) }?;
                [0; 3]
            }
            Syscall::MemInfo => {
                let info = self.mem_info(decode_slot(args[0])?)?;
                [
                    info.pages as u64,
                    info.device_address,
                    u64::from(info.shared),
                ]
            }
            Syscall::MemSlice => {
                let slot = self.mem_slice(
                    decode_slot(args[0])?,
                    decode_usize(args[1])?,
                    decode_usize(args[2])?,
                    decode_rights(args[3])?,
                )?;
                [u64::from(slot.0), 0, 0]
            }
            Syscall::MmioMap => {
                let size = self.mmio_map(
                    decode_slot(args[0])?,
                    decode_usize(args[1])?,
                    decode_rights(args[2])?,
                )?;
                [size as u64, 0, 0]
            }
            Syscall::Share => {
                // SAFETY: fake memory is a Vec the task never references directly.
                let address = unsafe { self.share(decode_slot(args[0])?, decode_slot(args[1])?) }?;
                [address, 0, 0]
            }
            Syscall::Unshare => {
                // SAFETY: as for Share.
                unsafe { self.unshare(decode_slot(args[0])?, decode_slot(args[1])?) }?;
                [0; 3]
            }
            Syscall::TaskKill => {
                let id = u32::try_from(args[1]).map_err(|_| Error::InvalidArgument)?;
                self.task_kill(decode_slot(args[0])?, TaskId::from_raw(id))?;
                [0; 3]
            }
            Syscall::TaskRestart => {
                let index = u16::try_from(args[1]).map_err(|_| Error::InvalidArgument)?;
                let id = self.task_restart(decode_slot(args[0])?, index)?;
                [u64::from(id.to_raw()), 0, 0]
            }
            Syscall::TaskStatus => {
                let index = u16::try_from(args[1]).map_err(|_| Error::InvalidArgument)?;
                let status = self.task_status(decode_slot(args[0])?, index)?;
                [
                    u64::from(status.state.to_raw()),
                    u64::from(status.id.to_raw()),
                    status.detail,
                ]
            }
            Syscall::SystemOff => return Err(self.system_off(decode_slot(args[0])?, args[1])),
            // The fake never dereferences a raw address: use the typed methods.
            Syscall::ConsoleWrite
            | Syscall::Send
            | Syscall::Recv
            | Syscall::Call
            | Syscall::Reply
            | Syscall::ReplyRecv
            | Syscall::ConsoleRead => {
                let mut state = self.kernel.lock();
                state.record(self.index, number, Err(Error::BadAddress));
                return Err(Error::BadAddress);
            }
        })
    }
}

impl Syscalls for FakeTask {
    /// Decodes calls without pointer arguments and runs the typed method; calls that take a
    /// pointer (`ConsoleWrite`, `Send`, `Recv`, `Call`, `Reply`, `ReplyRecv`) return
    /// `BadAddress`.
    unsafe fn syscall(&self, number: Syscall, args: [u64; 6]) -> [u64; 4] {
        encode(self.raw(number, args))
    }

    fn yield_now(&self) {
        let _ = self.op(Syscall::Yield, |_, _| Ok(()));
        thread::yield_now();
    }

    fn exit(&self, code: u64) -> ! {
        self.exit_now(code)
    }

    fn console_write(&self, bytes: &[u8]) -> Result<usize, Error> {
        let length = bytes.len().min(Syscall::CONSOLE_WRITE_MAX);
        self.op(Syscall::ConsoleWrite, |state, index| {
            state
                .task_mut(index)
                .console
                .extend_from_slice(&bytes[..length]);
            state.console.extend_from_slice(&bytes[..length]);
            Ok(length)
        })
    }

    fn time(&self) -> u64 {
        self.op(Syscall::Time, |state, _| Ok(state.clock))
            .unwrap_or(0)
    }

    fn task_self(&self) -> Result<TaskId, Error> {
        self.op(Syscall::TaskSelf, |state, index| Ok(state.task(index).id))
    }

    fn send(&self, endpoint: CapSlot, message: &Message) -> Result<(), Error> {
        self.op(Syscall::Send, |state, index| {
            state.enqueue(index, endpoint, message, None).map(drop)
        })
    }

    fn recv(
        &self,
        endpoint: CapSlot,
        message: &mut Message,
        timeout: Timeout,
        mask: u64,
    ) -> Result<Received, Error> {
        let deadline = self.deadline(timeout);
        let mut state = self.kernel.lock();
        self.check_running(&state);
        loop {
            match state.try_recv(self.index, endpoint, mask) {
                Ok(Some(RecvOutcome::Message(received))) => {
                    *message = *received;
                    return self.finish(state, Syscall::Recv, Ok(Received::Message));
                }
                Ok(Some(RecvOutcome::Notification(bits))) => {
                    return self.finish(state, Syscall::Recv, Ok(Received::Notification(bits)));
                }
                Ok(None) => {}
                Err(error) => return self.finish(state, Syscall::Recv, Err(error)),
            }
            state = match self.wait(state, &deadline, Syscall::Recv) {
                Ok(state) => state,
                Err((state, error)) => return self.finish(state, Syscall::Recv, Err(error)),
            };
        }
    }

    fn call(
        &self,
        endpoint: CapSlot,
        message: &mut Message,
        timeout: Timeout,
    ) -> Result<(), Error> {
        let deadline = self.deadline(timeout);
        let mut state = self.kernel.lock();
        self.check_running(&state);
        let (call, queue) = match state.start_call(self.index, endpoint, message) {
            Ok(started) => started,
            Err(error) => return self.finish(state, Syscall::Call, Err(error)),
        };
        self.kernel.wake_all();
        loop {
            if let Some(result) = state.finish_call(self.index, call) {
                let result = result.map(|reply| *message = reply);
                return self.finish(state, Syscall::Call, result);
            }
            drop(state);
            let pumped = self.try_pump(queue);
            state = self.kernel.lock();
            if pumped {
                continue;
            }
            match state.calls.get(&call) {
                // The caller itself was stopped while its call was outstanding.
                None => {
                    drop(state);
                    panic::resume_unwind(Box::new(TaskStopped));
                }
                Some(CallState::Waiting { .. }) => {
                    state = match self.wait(state, &deadline, Syscall::Call) {
                        Ok(state) => state,
                        Err((mut state, error)) => {
                            state.cancel_call(queue, call);
                            let error = if error == Error::WouldBlock {
                                Error::TimedOut
                            } else {
                                error
                            };
                            return self.finish(state, Syscall::Call, Err(error));
                        }
                    };
                }
                Some(_) => {}
            }
        }
    }

    fn reply(&self, reply: CapSlot, message: &Message) -> Result<(), Error> {
        self.op(Syscall::Reply, |state, index| {
            state.reply(index, reply, message)
        })
    }

    fn reply_recv(
        &self,
        reply: CapSlot,
        endpoint: CapSlot,
        message: &mut Message,
        timeout: Timeout,
        mask: u64,
    ) -> Result<Received, Error> {
        // The kernel's semantics, as two steps: a caller that is gone does not stop the receive.
        if !reply.is_none() {
            match self.reply(reply, message) {
                Ok(()) | Err(Error::Dead) => {}
                Err(error) => return Err(error),
            }
        }
        self.recv(endpoint, message, timeout, mask)
    }

    fn notify_wait(&self, mask: u64, timeout: Timeout) -> Result<u64, Error> {
        let deadline = self.deadline(timeout);
        let mut state = self.kernel.lock();
        self.check_running(&state);
        loop {
            let bits = state.take_notifications(self.index, mask);
            if bits != 0 {
                return self.finish(state, Syscall::NotifyWait, Ok(bits));
            }
            state = match self.wait(state, &deadline, Syscall::NotifyWait) {
                Ok(state) => state,
                Err((state, error)) => return self.finish(state, Syscall::NotifyWait, Err(error)),
            };
        }
    }

    fn console_read(
        &self,
        input: CapSlot,
        buffer: &mut [u8],
        timeout: Timeout,
    ) -> Result<usize, Error> {
        let length = buffer.len();
        if length == 0 || length > Syscall::CONSOLE_READ_MAX {
            return self.op(Syscall::ConsoleRead, |_, _| Err(Error::BadLength));
        }
        let deadline = self.deadline(timeout);
        let mut state = self.kernel.lock();
        self.check_running(&state);
        if let Err(error) = state.console_input_cap(self.index, input) {
            return self.finish(state, Syscall::ConsoleRead, Err(error));
        }
        loop {
            if !state.console_input.is_empty() {
                let count = length.min(state.console_input.len());
                for (slot, byte) in buffer.iter_mut().zip(state.console_input.drain(..count)) {
                    *slot = byte;
                }
                return self.finish(state, Syscall::ConsoleRead, Ok(count));
            }
            state = match self.wait(state, &deadline, Syscall::ConsoleRead) {
                Ok(state) => state,
                Err((state, error)) => return self.finish(state, Syscall::ConsoleRead, Err(error)),
            };
        }
    }

    fn notify_signal(&self, notification: CapSlot) -> Result<(), Error> {
        self.op(Syscall::NotifySignal, |state, index| {
            state.notify_signal(index, notification)
        })
    }

    fn irq_ack(&self, irq: CapSlot) -> Result<(), Error> {
        self.op(Syscall::IrqAck, |state, index| state.irq_ack(index, irq))
    }

    fn cap_info(&self, slot: CapSlot) -> Result<CapInfo, Error> {
        self.op(Syscall::CapInfo, |state, index| {
            let (kind, rights, badge) = state.cap_info(index, slot)?;
            Ok(CapInfo {
                kind,
                rights,
                badge,
            })
        })
    }

    fn cap_derive(&self, slot: CapSlot, rights: Rights, badge: u64) -> Result<CapSlot, Error> {
        self.op(Syscall::CapDerive, |state, index| {
            state.cap_derive(index, slot, rights, badge)
        })
    }

    fn cap_drop(&self, slot: CapSlot) -> Result<(), Error> {
        self.op(Syscall::CapDrop, |state, index| {
            state.remove_cap(index, slot).map(drop)
        })
    }

    fn mem_alloc(&self, pages: usize, align_pages: usize) -> Result<CapSlot, Error> {
        self.op(Syscall::MemAlloc, |state, index| {
            state.mem_alloc(index, pages, align_pages)
        })
    }

    fn mem_map(
        &self,
        memory: CapSlot,
        address: usize,
        rights: Rights,
        first_page: usize,
        pages: usize,
    ) -> Result<(), Error> {
        self.op(Syscall::MemMap, |state, index| {
            state.mem_map(index, memory, address, rights, first_page, pages)
        })
    }

    unsafe fn mem_unmap(&self, address: usize, pages: usize) -> Result<(), Error> {
        self.op(Syscall::MemUnmap, |state, index| {
            state.mem_unmap(index, address, pages)
        })
    }

    fn mem_info(&self, memory: CapSlot) -> Result<MemoryInfo, Error> {
        self.op(Syscall::MemInfo, |state, index| {
            let (pages, device_address, shared) = state.mem_info(index, memory)?;
            Ok(MemoryInfo {
                pages,
                device_address,
                shared,
            })
        })
    }

    fn mem_slice(
        &self,
        memory: CapSlot,
        first_page: usize,
        pages: usize,
        rights: Rights,
    ) -> Result<CapSlot, Error> {
        self.op(Syscall::MemSlice, |state, index| {
            state.mem_slice(index, memory, first_page, pages, rights)
        })
    }

    fn mmio_map(&self, mmio: CapSlot, address: usize, rights: Rights) -> Result<usize, Error> {
        self.op(Syscall::MmioMap, |state, index| {
            state.mmio_map(index, mmio, address, rights)
        })
    }

    unsafe fn share(&self, share: CapSlot, memory: CapSlot) -> Result<u64, Error> {
        self.op(Syscall::Share, |state, index| {
            state.set_shared(index, share, memory, true)
        })
    }

    unsafe fn unshare(&self, share: CapSlot, memory: CapSlot) -> Result<(), Error> {
        self.op(Syscall::Unshare, |state, index| {
            state.set_shared(index, share, memory, false).map(drop)
        })
    }

    fn task_kill(&self, control: CapSlot, task: TaskId) -> Result<(), Error> {
        self.op(Syscall::TaskKill, |state, index| {
            state.task_kill(index, control, task)
        })
    }

    fn task_restart(&self, control: CapSlot, index: u16) -> Result<TaskId, Error> {
        self.op(Syscall::TaskRestart, |state, caller| {
            state.task_restart(caller, control, index)
        })
    }

    fn system_off(&self, control: CapSlot, status: u64) -> Error {
        let mut state = self.kernel.lock();
        self.check_running(&state);
        if let Err(error) = state.control(self.index, control) {
            state.record(self.index, Syscall::SystemOff, Err(error));
            return error;
        }
        state.record(self.index, Syscall::SystemOff, Ok(()));
        state.system_off = Some(status);
        state.shutdown = true;
        drop(state);
        self.kernel.wake_all();
        panic::resume_unwind(Box::new(TaskStopped))
    }

    fn task_status(&self, control: CapSlot, index: u16) -> Result<TaskStatus, Error> {
        self.op(Syscall::TaskStatus, |state, caller| {
            let (state, id, detail) = state.task_status(caller, control, index)?;
            Ok(TaskStatus { state, id, detail })
        })
    }
}
