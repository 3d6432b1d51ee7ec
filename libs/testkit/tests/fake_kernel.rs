//! The fake kernel behaves like the ABI says the real one does.

use std::time::Duration;

use moat_abi::{
    CapSlot, CapabilityKind, Error, FaultReason, FaultReport, MAP_BASE, Message, MessageFlags,
    PAGE_SIZE, Rights, Syscall, TaskId, TaskState, Timeout,
};
use moat_testkit::{FakeKernel, Outcome, QUEUE_CAPACITY, run_task};
use moat_userlib::{Received, Syscalls};

#[test]
fn send_and_receive_with_badges() {
    let kernel = FakeKernel::new();
    let server = kernel.add_task("server");
    let client = kernel.add_task("client");
    let (endpoint, serve) = kernel.create_endpoint(&server, "serve");
    let to_server = kernel.grant_endpoint(&client, endpoint, "server", 77);

    client
        .send(to_server, &Message::new(5, b"hi").expect("fits"))
        .expect("queued");
    assert_eq!(kernel.queued(endpoint), 1);
    let mut message = Message::empty(0);
    assert_eq!(
        server.recv(serve, &mut message, Timeout::NonBlocking, 0),
        Ok(Received::Message)
    );
    assert_eq!(message.label(), 5);
    assert_eq!(message.payload(), b"hi");
    assert_eq!(message.header.badge, 77);
    assert_eq!(message.header.sender, client.id());
    assert_eq!(message.reply_capability(), None);
    assert_eq!(
        server.recv(serve, &mut message, Timeout::NonBlocking, 0),
        Err(Error::WouldBlock)
    );
    assert_eq!(
        server.recv(serve, &mut message, Timeout::from_milliseconds(5), 0),
        Err(Error::TimedOut)
    );
    // The client cannot receive on a send-only capability.
    assert_eq!(
        client.recv(to_server, &mut message, Timeout::NonBlocking, 0),
        Err(Error::MissingRight)
    );
    assert_eq!(kernel.count(Syscall::Recv), 4);
}

#[test]
fn per_sender_limit_keeps_room_for_others() {
    let kernel = FakeKernel::new();
    let server = kernel.add_task("server");
    let greedy = kernel.add_task("greedy");
    let polite = kernel.add_task("polite");
    let (endpoint, _) = kernel.create_endpoint_limited(&server, "serve", 2);
    let greedy_slot = kernel.grant_endpoint(&greedy, endpoint, "server", 1);
    let polite_slot = kernel.grant_endpoint(&polite, endpoint, "server", 2);
    let message = Message::empty(1);
    assert_eq!(greedy.send(greedy_slot, &message), Ok(()));
    assert_eq!(greedy.send(greedy_slot, &message), Ok(()));
    assert_eq!(greedy.send(greedy_slot, &message), Err(Error::QueueFull));
    assert_eq!(polite.send(polite_slot, &message), Ok(()));
    const _: () = assert!(QUEUE_CAPACITY >= 3);
}

#[test]
fn call_and_reply_across_threads() {
    let kernel = FakeKernel::new();
    let server = kernel.add_task("echo");
    let client = kernel.add_task("client");
    let (endpoint, serve) = kernel.create_endpoint(&server, "serve");
    let to_server = kernel.grant_endpoint(&client, endpoint, "echo", 9);

    let thread = kernel.spawn(&server, move |server| {
        let mut message = Message::empty(0);
        loop {
            server
                .recv(serve, &mut message, Timeout::Forever, 0)
                .expect("recv");
            let reply = message.reply_capability().expect("a call");
            let mut answer = Message::new(message.label() + 1, message.payload()).expect("fits");
            answer.header.badge = 12345; // the kernel overwrites this
            server.reply(reply, &answer).expect("caller waits");
        }
    });

    for round in 0..10u32 {
        let mut message = Message::new(round, &round.to_le_bytes()).expect("fits");
        client
            .call(to_server, &mut message, Timeout::from_milliseconds(2000))
            .expect("answered");
        assert_eq!(message.label(), round + 1);
        assert_eq!(message.payload(), round.to_le_bytes());
        assert!(message.header.flags.contains(MessageFlags::IS_REPLY));
        assert_eq!(message.header.badge, 0);
        assert_eq!(message.header.sender, server.id());
    }
    assert_eq!(thread.stop(), Outcome::Stopped);
}

#[test]
fn call_with_a_pump_runs_on_one_thread() {
    let kernel = FakeKernel::new();
    let server = kernel.add_task("server");
    let client = kernel.add_task("client");
    let (endpoint, serve) = kernel.create_endpoint(&server, "serve");
    let to_server = kernel.grant_endpoint(&client, endpoint, "server", 3);
    let pumped = server.clone();
    kernel.set_pump(endpoint, move || {
        let mut message = Message::empty(0);
        pumped
            .recv(serve, &mut message, Timeout::NonBlocking, 0)
            .expect("a message is queued");
        let badge = message.header.badge;
        let reply = message.reply_capability().expect("a call");
        pumped
            .reply(reply, &Message::new(0, &badge.to_le_bytes()).expect("fits"))
            .expect("caller waits");
    });
    let mut message = Message::empty(1);
    client
        .call(to_server, &mut message, Timeout::Forever)
        .expect("answered");
    assert_eq!(message.payload(), 3u64.to_le_bytes());
}

#[test]
fn dropped_reply_and_dead_server_give_dead() {
    let kernel = FakeKernel::new();
    let server = kernel.add_task("server");
    let client = kernel.add_task("client");
    let supervisor_control = kernel.grant_task_control(&client, "tasks");
    let (endpoint, serve) = kernel.create_endpoint(&server, "serve");
    let to_server = kernel.grant_endpoint(&client, endpoint, "server", 1);
    let pumped = server.clone();
    kernel.set_pump(endpoint, move || {
        let mut message = Message::empty(0);
        pumped
            .recv(serve, &mut message, Timeout::NonBlocking, 0)
            .expect("queued");
        pumped
            .cap_drop(message.reply_capability().expect("a call"))
            .expect("held");
    });
    let mut message = Message::empty(1);
    assert_eq!(
        client.call(to_server, &mut message, Timeout::Forever),
        Err(Error::Dead)
    );

    let old = server.id();
    client
        .task_kill(supervisor_control, old)
        .expect("alive and current");
    assert_eq!(server.state(), TaskState::Killed);
    assert_eq!(client.send(to_server, &Message::empty(1)), Err(Error::Dead));
    assert_eq!(
        client.task_kill(supervisor_control, old),
        Err(Error::Dead),
        "a stale id never reaches a new instance"
    );
    let new = client
        .task_restart(supervisor_control, server.index())
        .expect("restarts");
    assert_ne!(new, old);
    assert_eq!(new.index(), old.index());
    assert_eq!(client.send(to_server, &Message::empty(1)), Ok(()));
    let status = client
        .task_status(supervisor_control, server.index())
        .expect("exists");
    assert_eq!(status.state, TaskState::Runnable);
    assert_eq!(status.id, new);
}

#[test]
fn a_server_dying_mid_call_fails_the_caller() {
    let kernel = FakeKernel::new();
    let server = kernel.add_task("server");
    let client = kernel.add_task("client");
    let (endpoint, _serve) = kernel.create_endpoint(&server, "serve");
    let to_server = kernel.grant_endpoint(&client, endpoint, "server", 1);
    let caller = kernel.spawn(&client, move |client| {
        let mut message = Message::empty(1);
        client.call(to_server, &mut message, Timeout::from_milliseconds(5000))
    });
    while kernel.queued(endpoint) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    kernel.fault(&server, FaultReason::DataAbort, 0x9200_0046, 0xdead);
    assert_eq!(caller.join(), Outcome::Returned(Err(Error::Dead)));
    assert_eq!(server.state(), TaskState::Faulted);
}

#[test]
fn supervisor_gets_fault_and_exit_reports() {
    let kernel = FakeKernel::new();
    let supervisor = kernel.add_task("supervisor");
    let worker = kernel.add_task("worker");
    let (_, serve) = kernel.create_endpoint(&supervisor, "serve");
    let worker_id = worker.id();
    kernel.fault(&worker, FaultReason::DataAbort, 0x9200_0046, 0xdead);

    let mut message = Message::empty(0);
    supervisor
        .recv(serve, &mut message, Timeout::NonBlocking, 0)
        .expect("report queued");
    let report = FaultReport::from_message(&message).expect("a fault report");
    assert_eq!(report.reason(), Ok(FaultReason::DataAbort));
    assert_eq!(report.task_id, worker_id);
    assert_eq!(report.far, 0xdead);

    let control = kernel.grant_task_control(&supervisor, "tasks");
    supervisor
        .task_restart(control, worker.index())
        .expect("restarts");
    assert_eq!(run_task(|| worker.exit(3)), Outcome::<()>::Exited(3));
    supervisor
        .recv(serve, &mut message, Timeout::NonBlocking, 0)
        .expect("report queued");
    let report = FaultReport::from_message(&message).expect("a fault report");
    assert_eq!(report.reason(), Ok(FaultReason::Exited));
    assert_eq!(report.detail, 3);
    let status = supervisor
        .task_status(control, worker.index())
        .expect("exists");
    assert_eq!(status.state, TaskState::Exited);
    assert_eq!(status.detail, 3);
    // A stopped task's syscalls end its thread.
    assert_eq!(run_task(|| worker.yield_now()), Outcome::Stopped);
}

#[test]
fn capabilities_transfer_with_shrinking_rights() {
    let kernel = FakeKernel::new();
    let server = kernel.add_task("server");
    let client = kernel.add_task("client");
    let (endpoint, serve) = kernel.create_endpoint(&server, "serve");
    let to_server = kernel.grant_endpoint(&client, endpoint, "server", 1);

    let memory = client.mem_alloc(2, 0).expect("quota");
    let address = MAP_BASE;
    client
        .mem_map(memory, address, Rights::READ | Rights::WRITE, 0, 0)
        .expect("maps");
    client.write(address + 10, b"shared bytes").expect("mapped");

    // More rights than the source: refused.
    let greedy = Message::empty(1).with_capability(memory, Rights::ALL);
    assert_eq!(client.send(to_server, &greedy), Err(Error::MissingRight));
    let message = Message::empty(1).with_capability(memory, Rights::READ);
    client.send(to_server, &message).expect("queued");

    let mut received = Message::empty(0);
    server
        .recv(serve, &mut received, Timeout::NonBlocking, 0)
        .expect("message");
    let (slot, rights) = received.capability().expect("carries a capability");
    assert_eq!(rights, Rights::READ);
    let info = server.cap_info(slot).expect("installed");
    assert_eq!(info.kind, CapabilityKind::Memory);
    assert_eq!(
        server.mem_map(slot, address, Rights::READ | Rights::WRITE, 0, 0),
        Err(Error::MissingRight)
    );
    server
        .mem_map(slot, address + 8 * PAGE_SIZE, Rights::READ, 0, 0)
        .expect("maps read-only");
    let mut buffer = [0; 12];
    server
        .read(address + 8 * PAGE_SIZE + 10, &mut buffer)
        .expect("mapped");
    assert_eq!(&buffer, b"shared bytes");
    assert_eq!(
        server.write(address + 8 * PAGE_SIZE, b"x"),
        Err(Error::BadAddress)
    );
    // Without TRANSFER the server cannot pass it on.
    let (back, _) = kernel.create_endpoint(&client, "back");
    let to_client = kernel.grant_endpoint(&server, back, "client", 0);
    let onward = Message::empty(1).with_capability(slot, Rights::READ);
    assert_eq!(server.send(to_client, &onward), Err(Error::MissingRight));
}

#[test]
fn memory_rules() {
    let kernel = FakeKernel::new();
    let dma = kernel.add_task("dma");
    let driver = kernel.add_task("driver");
    kernel.set_quota(&dma, 8);
    kernel.grant_physical(&dma);
    let share = kernel.grant_share(&dma, "share");

    assert_eq!(dma.mem_alloc(9, 0), Err(Error::QuotaExceeded));
    assert_eq!(dma.mem_alloc(0, 0), Err(Error::BadLength));
    assert_eq!(dma.mem_alloc(1, 3), Err(Error::InvalidArgument));
    let pool = dma.mem_alloc(4, 4).expect("quota");
    let info = dma.mem_info(pool).expect("memory");
    assert_eq!(info.pages, 4);
    assert_ne!(info.device_address, 0);
    assert!(!info.shared);

    assert_eq!(
        dma.mem_map(pool, MAP_BASE + 1, Rights::READ, 0, 0),
        Err(Error::BadAlignment)
    );
    assert_eq!(
        dma.mem_map(pool, MAP_BASE, Rights::WRITE | Rights::EXECUTE, 0, 0),
        Err(Error::InvalidArgument)
    );
    dma.mem_map(pool, MAP_BASE, Rights::READ | Rights::WRITE, 0, 2)
        .expect("maps");
    assert_eq!(
        dma.mem_map(pool, MAP_BASE + PAGE_SIZE, Rights::READ, 2, 1),
        Err(Error::AlreadyMapped)
    );
    assert_eq!(
        dma.mem_map(pool, MAP_BASE + 4 * PAGE_SIZE, Rights::READ, 4, 1),
        Err(Error::BadLength)
    );

    // A window for the driver: a slice without TRANSFER, mapped by the driver.
    let window = dma
        .mem_slice(pool, 2, 2, Rights::READ | Rights::WRITE)
        .expect("slice");
    assert_eq!(
        dma.mem_slice(pool, 3, 2, Rights::READ),
        Err(Error::BadLength)
    );
    let (endpoint, serve) = kernel.create_endpoint(&driver, "serve");
    let to_driver = kernel.grant_endpoint(&dma, endpoint, "driver", 0);
    // The slice lacks TRANSFER: refused.
    assert_eq!(
        dma.send(
            to_driver,
            &Message::empty(1).with_capability(window, Rights::READ)
        ),
        Err(Error::MissingRight)
    );
    let transferable = dma
        .mem_slice(pool, 2, 2, Rights::READ | Rights::WRITE | Rights::TRANSFER)
        .expect("slice");
    dma.send(
        to_driver,
        &Message::empty(1).with_capability(transferable, Rights::READ | Rights::WRITE),
    )
    .expect("queued");
    let mut message = Message::empty(0);
    driver
        .recv(serve, &mut message, Timeout::NonBlocking, 0)
        .expect("message");
    let (driver_window, _) = message.capability().expect("window");
    driver
        .mem_map(driver_window, MAP_BASE, Rights::READ | Rights::WRITE, 0, 0)
        .expect("maps");
    // The driver maps the window, so sharing the pool is refused; the DMA server's own
    // mapping does not count.
    // SAFETY: fake memory is never referenced directly.
    let refused = unsafe { dma.share(share, pool) };
    assert_eq!(refused, Err(Error::MappedElsewhere));
    // SAFETY: as above.
    unsafe { driver.mem_unmap(MAP_BASE, 2) }.expect("mapped");
    // SAFETY: as above.
    let device_address = unsafe { dma.share(share, pool) }.expect("shares");
    assert_eq!(device_address, info.device_address);
    assert!(dma.mem_info(pool).expect("memory").shared);
    // Only the Share holder can share.
    // SAFETY: as above.
    let wrong = unsafe { driver.share(driver_window, driver_window) };
    assert_eq!(wrong, Err(Error::WrongKind));
    // SAFETY: as above.
    assert_eq!(unsafe { dma.mem_unmap(MAP_BASE, 1) }, Err(Error::NotMapped));

    // The host writes into shared memory; the task sees it through its mapping.
    kernel
        .write_memory(&dma, pool, 5, b"host")
        .expect("in range");
    let mut buffer = [0; 4];
    dma.read(MAP_BASE + 5, &mut buffer).expect("mapped");
    assert_eq!(&buffer, b"host");
}

#[test]
fn notifications_and_interrupts() {
    let kernel = FakeKernel::new();
    let driver = kernel.add_task("driver");
    let other = kernel.add_task("other");
    let (irq, irq_slot) = kernel.grant_irq(&driver, "irq", 3);
    let signal = kernel.grant_notification(&other, &driver, "kick", 1 << 7);

    kernel.raise_irq(irq);
    kernel.raise_irq(irq); // masked until acknowledged: latched
    assert_eq!(driver.notify_wait(1 << 3, Timeout::NonBlocking), Ok(1 << 3));
    assert_eq!(
        driver.notify_wait(1 << 3, Timeout::NonBlocking),
        Err(Error::WouldBlock)
    );
    driver.irq_ack(irq_slot).expect("owner");
    assert_eq!(kernel.irq_acks(irq), 1);
    assert_eq!(
        driver.notify_wait(1 << 3, Timeout::NonBlocking),
        Ok(1 << 3),
        "the latched interrupt fires on acknowledgement"
    );

    other.notify_signal(signal).expect("may signal");
    let mut message = Message::empty(0);
    // Notifications end a Recv on no endpoint; unmasked bits stay pending.
    assert_eq!(
        driver.recv(CapSlot::NONE, &mut message, Timeout::NonBlocking, 1 << 7),
        Ok(Received::Notification(1 << 7))
    );
    assert_eq!(other.irq_ack(signal), Err(Error::WrongKind));

    // A blocked waiter is woken from another thread.
    let waiter = kernel.spawn(&driver, |driver| {
        driver.notify_wait(1 << 9, Timeout::from_milliseconds(5000))
    });
    std::thread::sleep(Duration::from_millis(20));
    kernel.notify(&driver, 1 << 9);
    assert_eq!(waiter.join(), Outcome::Returned(Ok(1 << 9)));
}

#[test]
fn capability_derivation_and_info() {
    let kernel = FakeKernel::new();
    let server = kernel.add_task("server");
    let (_, serve) = kernel.create_endpoint(&server, "serve");
    let derived = server
        .cap_derive(serve, Rights::SEND, 42)
        .expect("derivable");
    let info = server.cap_info(derived).expect("installed");
    assert_eq!(info.kind, CapabilityKind::Endpoint);
    assert_eq!(info.rights, Rights::SEND);
    assert_eq!(info.badge, 42);
    assert_eq!(
        server.cap_derive(derived, Rights::SEND, 43),
        Err(Error::InvalidArgument),
        "a badge is set once"
    );
    assert_eq!(
        server.cap_derive(derived, Rights::RECEIVE, 0),
        Err(Error::MissingRight)
    );
    server.cap_drop(derived).expect("held");
    assert_eq!(server.cap_info(derived), Err(Error::InvalidCapability));
    assert_eq!(
        server.cap_info(CapSlot::NONE),
        Err(Error::InvalidCapability)
    );
}

#[test]
fn task_info_lists_named_capabilities() {
    let kernel = FakeKernel::new();
    let server = kernel.add_task("dma");
    let client = kernel.add_task("blk");
    let (endpoint, _) = kernel.create_endpoint(&server, "serve");
    let slot = kernel.grant_endpoint(&client, endpoint, "dma", 5);
    kernel.grant_irq(&client, "irq", 1);
    let info = client.task_info();
    assert_eq!(info.check(), Ok(()));
    assert_eq!(info.name(), b"blk");
    assert_eq!(info.task_id, client.id());
    assert_eq!(
        moat_userlib::caps::expect_in(&info, "dma", CapabilityKind::Endpoint),
        Ok(slot)
    );
    assert!(moat_userlib::caps::find_in(&info, "irq").is_some());
    assert_eq!(client.capability("dma"), Some(slot));
}

#[test]
fn raw_entry_point_decodes_and_rejects_pointers() {
    let kernel = FakeKernel::new();
    let task = kernel.add_task("raw");
    kernel.advance_time(1234);
    // SAFETY: the fake dereferences no pointer.
    let time = unsafe { task.syscall(Syscall::Time, [0; 6]) };
    assert_eq!(time, [0, 1234, 0, 0]);
    // SAFETY: as above.
    let send = unsafe { task.syscall(Syscall::Send, [0, 0x1000, 0, 0, 0, 0]) };
    assert_eq!(send[0], u64::from(Error::BadAddress.to_raw()));
    // SAFETY: as above.
    let bad_slot = unsafe { task.syscall(Syscall::CapInfo, [1 << 40, 0, 0, 0, 0, 0]) };
    assert_eq!(bad_slot[0], u64::from(Error::InvalidCapability.to_raw()));
    // Hammer the raw entry with junk: every call returns an error code or succeeds, none panics.
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..2000 {
        let number = Syscall::ALL[(next() % Syscall::ALL.len() as u64) as usize];
        if matches!(
            number,
            Syscall::Exit | Syscall::NotifyWait | Syscall::TaskKill | Syscall::SystemOff
        ) {
            continue;
        }
        let args = [
            next() % 80,
            next(),
            next() % 8,
            next() % 4,
            next() % 4,
            next(),
        ];
        // SAFETY: as above.
        let _ = unsafe { task.syscall(number, args) };
    }
    assert_eq!(task.state(), TaskState::Runnable);
}

#[test]
fn console_and_records() {
    let kernel = FakeKernel::new();
    let task = kernel.add_task("talker");
    task.console_write(b"hello\n").expect("writes");
    moat_userlib::logger::write_line(&task, "talker", log::Level::Info, format_args!("x={}", 1));
    assert_eq!(task.console_output(), "hello\ntalker: x=1\n");
    assert_eq!(kernel.console(), "hello\ntalker: x=1\n");
    let records = kernel.records();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].task, TaskId::new(0, 0));
    assert_eq!(records[0].syscall, Syscall::ConsoleWrite);
    assert_eq!(records[0].result, Ok(()));
}

#[test]
fn system_off_needs_task_control() {
    let kernel = FakeKernel::new();
    let supervisor = kernel.add_task("supervisor");
    let control = kernel.grant_task_control(&supervisor, "tasks");
    assert_eq!(
        supervisor.system_off(CapSlot(40), 0),
        Error::InvalidCapability
    );
    assert_eq!(
        run_task(|| supervisor.system_off(control, 0)),
        Outcome::Stopped
    );
    assert_eq!(kernel.system_off_status(), Some(0));
}

#[test]
fn forever_waits_report_deadlocks() {
    let kernel = FakeKernel::new();
    kernel.set_stall_limit(Duration::from_millis(20));
    let task = kernel.add_task("stuck");
    let outcome = run_task(|| task.notify_wait(1, Timeout::Forever));
    let Outcome::Panicked(message) = outcome else {
        panic!("expected a deadlock report, got {outcome:?}");
    };
    assert!(message.contains("stuck"), "{message}");
}

#[test]
fn console_input_is_read_with_its_capability() {
    let kernel = FakeKernel::new();
    let shell = kernel.add_task("shell");
    let other = kernel.add_task("other");
    let input = kernel.grant_console_input(&shell, "console-input");
    let mut buffer = [0u8; 4];
    assert_eq!(
        shell.console_read(input, &mut buffer, Timeout::NonBlocking),
        Err(Error::WouldBlock)
    );
    assert_eq!(
        shell.console_read(input, &mut buffer, Timeout::from_milliseconds(5)),
        Err(Error::TimedOut)
    );
    kernel.type_input(b"ps\r\n!");
    assert_eq!(
        shell.console_read(input, &mut buffer, Timeout::Forever),
        Ok(4)
    );
    assert_eq!(&buffer, b"ps\r\n");
    assert_eq!(
        shell.console_read(input, &mut buffer, Timeout::Forever),
        Ok(1)
    );
    assert_eq!(buffer[0], b'!');
    // No capability, or the wrong kind: refused.
    assert_eq!(
        other.console_read(CapSlot(0), &mut buffer, Timeout::NonBlocking),
        Err(Error::InvalidCapability)
    );
    let control = kernel.grant_task_control(&other, "task-control");
    assert_eq!(
        other.console_read(control, &mut buffer, Timeout::NonBlocking),
        Err(Error::WrongKind)
    );
    assert_eq!(
        shell.console_read(input, &mut [], Timeout::NonBlocking),
        Err(Error::BadLength)
    );
    // A waiting reader wakes when input arrives.
    let waiter = {
        let kernel = kernel.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            kernel.type_input(b"x");
        })
    };
    let mut one = [0u8; 1];
    assert_eq!(
        shell.console_read(input, &mut one, Timeout::from_milliseconds(5000)),
        Ok(1)
    );
    assert_eq!(&one, b"x");
    waiter.join().expect("typist");
}
