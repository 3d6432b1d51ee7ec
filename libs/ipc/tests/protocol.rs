//! Typed calls between fake tasks, including hostile payloads.

use moat_abi::{CapSlot, CapabilityKind, Error, MAX_PAYLOAD, Message, Rights, Timeout};
use moat_ipc::{
    Client, Handler, IpcError, Protocol, REPLY_ERROR, REPLY_OK, RemoteError, RequestContext,
    Served, Server, decode, encode,
};
use moat_testkit::{EndpointId, FakeKernel, FakeTask, Outcome};
use moat_userlib::Syscalls;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Request {
    Add(u32, u32),
    Echo(heapless::Vec<u8, 64>),
    Huge,
    WhoAmI,
    GiveMemory,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)] // deliberately too big for a message
enum Response {
    Sum(u32),
    Echo(heapless::Vec<u8, 64>),
    Huge(heapless::Vec<u8, 512>),
    You(u64),
    Memory,
    Overflow,
}

struct Calculator;

impl Protocol for Calculator {
    const ID: u32 = 0x100;
    type Request = Request;
    type Response = Response;
}

/// The server's state: how many requests it handled.
struct CalculatorServer {
    handled: usize,
    memory: Option<CapSlot>,
    notified: u64,
    unhandled: usize,
}

impl Handler<Calculator> for CalculatorServer {
    fn handle(&mut self, request: Request, context: &mut RequestContext) -> Response {
        self.handled += 1;
        match request {
            Request::Add(a, b) => a.checked_add(b).map_or(Response::Overflow, Response::Sum),
            Request::Echo(bytes) => Response::Echo(bytes),
            Request::Huge => Response::Huge(heapless::Vec::from_slice(&[7; 512]).expect("fits")),
            Request::WhoAmI => Response::You(context.badge),
            Request::GiveMemory => {
                if let Some(memory) = self.memory {
                    context.attach_capability(memory, Rights::READ);
                }
                Response::Memory
            }
        }
    }

    fn notified(&mut self, bits: u64) {
        self.notified |= bits;
    }

    fn unhandled(&mut self, _message: &Message) {
        self.unhandled += 1;
    }
}

struct System {
    kernel: FakeKernel,
    server: FakeTask,
    client: FakeTask,
    endpoint: EndpointId,
    serve: CapSlot,
    to_server: CapSlot,
}

fn system() -> System {
    let kernel = FakeKernel::new();
    let server = kernel.add_task("calc");
    let client = kernel.add_task("client");
    let (endpoint, serve) = kernel.create_endpoint(&server, "serve");
    let to_server = kernel.grant_endpoint(&client, endpoint, "calc", 0xc1);
    System {
        kernel,
        server,
        client,
        endpoint,
        serve,
        to_server,
    }
}

fn pumped_server(system: &System) -> std::sync::Arc<std::sync::Mutex<CalculatorServer>> {
    let state = std::sync::Arc::new(std::sync::Mutex::new(CalculatorServer {
        handled: 0,
        memory: None,
        notified: 0,
        unhandled: 0,
    }));
    let mut server = Server::<Calculator, _>::new(system.server.clone(), system.serve);
    let shared = state.clone();
    system.kernel.set_pump(system.endpoint, move || {
        let mut handler = shared.lock().expect("not poisoned");
        server
            .serve_one(&mut *handler, Timeout::NonBlocking)
            .expect("a message is queued");
    });
    state
}

#[test]
fn typed_calls_round_trip() {
    let system = system();
    let handler = pumped_server(&system);
    let client = Client::<Calculator, _>::new(system.client.clone(), system.to_server);
    assert_eq!(client.call(&Request::Add(2, 3)), Ok(Response::Sum(5)));
    assert_eq!(
        client.call(&Request::Add(u32::MAX, 1)),
        Ok(Response::Overflow)
    );
    let bytes = heapless::Vec::from_slice(b"bytes").expect("fits");
    assert_eq!(
        client.call(&Request::Echo(bytes.clone())),
        Ok(Response::Echo(bytes))
    );
    assert_eq!(client.call(&Request::WhoAmI), Ok(Response::You(0xc1)));
    assert_eq!(handler.lock().expect("not poisoned").handled, 4);
}

#[test]
fn oversized_messages_are_refused_both_ways() {
    let system = system();
    let handler = pumped_server(&system);
    let client = Client::<Calculator, _>::new(system.client.clone(), system.to_server);
    // The response cannot fit in 224 bytes: the server says so and keeps serving.
    assert_eq!(
        client.call(&Request::Huge),
        Err(IpcError::Remote(RemoteError::ResponseTooLarge))
    );
    assert_eq!(client.call(&Request::Add(1, 1)), Ok(Response::Sum(2)));
    assert_eq!(handler.lock().expect("not poisoned").handled, 2);
    // A request too big to encode never leaves the client.
    #[derive(Serialize, Deserialize)]
    struct Big(heapless::Vec<u8, 512>);
    assert!(encode(1, &Big(heapless::Vec::from_slice(&[0; 300]).expect("fits"))).is_none());
    let most = heapless::Vec::<u8, 512>::from_slice(&[0; MAX_PAYLOAD - 8]).expect("fits");
    assert!(encode(1, &Big(most)).is_some());
}

#[test]
fn malformed_requests_get_error_replies_and_serving_goes_on() {
    let system = system();
    let handler = pumped_server(&system);
    let raw_call = |label: u32, payload: &[u8]| {
        let mut message = Message::new(label, payload).expect("fits");
        system
            .client
            .call(system.to_server, &mut message, Timeout::Forever)
            .expect("answered");
        message
    };
    let refused = |message: Message| -> RemoteError {
        assert_eq!(message.label(), REPLY_ERROR);
        decode(message.payload()).expect("a RemoteError")
    };
    // An enum tag no variant has.
    assert_eq!(
        refused(raw_call(Calculator::ID, &[0xff, 0x01])),
        RemoteError::MalformedRequest
    );
    // Truncated: Add needs two varints.
    assert_eq!(
        refused(raw_call(Calculator::ID, &[0x00, 0x05])),
        RemoteError::MalformedRequest
    );
    // A valid request followed by trailing garbage.
    let mut valid = encode(Calculator::ID, &Request::Add(1, 2)).expect("fits");
    let length = valid.payload().len();
    valid.payload[length] = 0x42;
    valid.set_length(length + 1).expect("fits");
    assert_eq!(
        refused(raw_call(Calculator::ID, valid.payload())),
        RemoteError::MalformedRequest
    );
    // A length prefix larger than the payload.
    assert_eq!(
        refused(raw_call(Calculator::ID, &[0x01, 0xff, 0xff, 0x03, 1, 2])),
        RemoteError::MalformedRequest
    );
    // Empty payload and another protocol's label.
    assert_eq!(
        refused(raw_call(Calculator::ID, &[])),
        RemoteError::MalformedRequest
    );
    assert_eq!(
        refused(raw_call(0x200, &[0x03])),
        RemoteError::UnknownProtocol
    );
    // Random payloads never take the server down.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..300 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let length = (seed % 40) as usize;
        let payload: Vec<u8> = (0..length)
            .map(|index| (seed >> (index % 8 * 8)) as u8 ^ round as u8)
            .collect();
        let reply = raw_call(Calculator::ID, &payload);
        assert!(matches!(reply.label(), REPLY_OK | REPLY_ERROR));
    }
    let client = Client::<Calculator, _>::new(system.client.clone(), system.to_server);
    assert_eq!(client.call(&Request::Add(20, 22)), Ok(Response::Sum(42)));
    assert!(handler.lock().expect("not poisoned").handled >= 1);
}

#[test]
fn hostile_replies_are_reported() {
    let system = system();
    let server = system.server.clone();
    let serve = system.serve;
    let answers: std::sync::Arc<std::sync::Mutex<Vec<Message>>> = Default::default();
    let queue = answers.clone();
    system.kernel.set_pump(system.endpoint, move || {
        let mut message = Message::empty(0);
        server
            .recv(serve, &mut message, Timeout::NonBlocking, 0)
            .expect("queued");
        let answer = queue.lock().expect("not poisoned").remove(0);
        server
            .reply(message.reply_capability().expect("a call"), &answer)
            .expect("caller waits");
    });
    let client = Client::<Calculator, _>::new(system.client.clone(), system.to_server);
    answers.lock().expect("not poisoned").extend([
        Message::new(REPLY_OK, &[0xee]).expect("fits"),
        Message::new(77, &[]).expect("fits"),
        Message::new(REPLY_ERROR, &[0x09]).expect("fits"),
    ]);
    for _ in 0..3 {
        assert_eq!(
            client.call(&Request::Add(1, 1)),
            Err(IpcError::MalformedReply)
        );
    }
}

#[test]
fn capabilities_travel_with_requests_and_replies() {
    let system = system();
    let memory = system.server.mem_alloc(1, 0).expect("quota");
    let handler = pumped_server(&system);
    handler.lock().expect("not poisoned").memory = Some(memory);
    let client = Client::<Calculator, _>::new(system.client.clone(), system.to_server);
    let reply = client
        .call_with_capability(&Request::GiveMemory, None)
        .expect("answered");
    assert_eq!(reply.response, Response::Memory);
    let (slot, rights) = reply.capability.expect("a capability");
    assert_eq!(rights, Rights::READ);
    assert_eq!(
        system.client.cap_info(slot).expect("installed").kind,
        CapabilityKind::Memory
    );
}

#[test]
fn calls_to_a_dead_server_fail_with_dead() {
    let system = system();
    let client = Client::<Calculator, _>::new(system.client.clone(), system.to_server)
        .with_timeout(Timeout::from_milliseconds(50));
    assert_eq!(
        client.call(&Request::Add(1, 1)),
        Err(IpcError::Kernel(Error::TimedOut)),
        "nobody serves"
    );
    system
        .kernel
        .fault(&system.server, moat_abi::FaultReason::Undefined, 0, 0);
    assert_eq!(
        client.call(&Request::Add(1, 1)),
        Err(IpcError::Kernel(Error::Dead))
    );
}

#[test]
fn one_way_sends_notifications_and_kernel_messages() {
    let system = system();
    let mut handler = CalculatorServer {
        handled: 0,
        memory: None,
        notified: 0,
        unhandled: 0,
    };
    let mut server =
        Server::<Calculator, _>::new(system.server.clone(), system.serve).with_notifications(0b10);
    let client = Client::<Calculator, _>::new(system.client.clone(), system.to_server);
    client.send(&Request::Add(1, 2)).expect("queued");
    assert_eq!(
        server.serve_one(&mut handler, Timeout::NonBlocking),
        Ok(Served::Handled)
    );
    system
        .client
        .send(
            system.to_server,
            &Message::new(Calculator::ID, &[0xff]).expect("fits"),
        )
        .expect("queued");
    assert_eq!(
        server.serve_one(&mut handler, Timeout::NonBlocking),
        Ok(Served::Refused(RemoteError::MalformedRequest))
    );
    system
        .client
        .send(system.to_server, &Message::empty(0x999))
        .expect("queued");
    assert_eq!(
        server.serve_one(&mut handler, Timeout::NonBlocking),
        Ok(Served::Unhandled)
    );
    system.kernel.notify(&system.server, 0b110);
    assert_eq!(
        server.serve_one(&mut handler, Timeout::NonBlocking),
        Ok(Served::Notified(0b10))
    );
    assert_eq!(
        server.serve_one(&mut handler, Timeout::NonBlocking),
        Err(Error::WouldBlock)
    );
    assert_eq!(handler.handled, 1);
    assert_eq!(handler.notified, 0b10);
    assert_eq!(handler.unhandled, 1);
}

#[test]
fn a_closure_serves_on_a_thread() {
    let system = system();
    let thread = system.kernel.spawn(&system.server, {
        let serve = system.serve;
        move |task| {
            let mut server = Server::<Calculator, _>::new(task, serve);
            let mut handler = |request: Request, _: &mut RequestContext| match request {
                Request::Add(a, b) => Response::Sum(a.wrapping_add(b)),
                _ => Response::Overflow,
            };
            server.run(&mut handler, |_| true)
        }
    });
    let client = Client::<Calculator, _>::new(system.client.clone(), system.to_server);
    for value in 0..20 {
        assert_eq!(
            client.call(&Request::Add(value, 1)),
            Ok(Response::Sum(value + 1))
        );
    }
    assert_eq!(client.call(&Request::WhoAmI), Ok(Response::Overflow));
    assert!(matches!(thread.stop(), Outcome::Stopped));
}
