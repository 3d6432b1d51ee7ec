//! The typed client against the real server over the fake kernel: fills of every size, errors,
//! and the seed helper with and without a driver.

use std::sync::{Arc, Mutex};

use moat_abi::{CapSlot, Timeout};
use moat_ipc::Server;
use moat_rng_api::{
    ClientError, EntropySource, MAX_FILL, Rng, RngClient, RngError, RngServer, mix_seed, seed,
};
use moat_testkit::{FakeKernel, FakeTask};

/// Bytes 0, 1, 2, ... (wrapping), or an error.
struct Counter {
    next: u8,
    fail: Option<RngError>,
}

impl EntropySource for Counter {
    fn fill(&mut self, out: &mut [u8]) -> Result<usize, RngError> {
        if let Some(error) = self.fail {
            return Err(error);
        }
        for byte in out.iter_mut() {
            *byte = self.next;
            self.next = self.next.wrapping_add(1);
        }
        Ok(out.len())
    }
}

type Shared = Arc<Mutex<RngServer<Counter>>>;

fn system() -> (FakeKernel, FakeTask, CapSlot, Shared) {
    let kernel = FakeKernel::new();
    let driver = kernel.add_task("rng");
    let client = kernel.add_task("client");
    let (endpoint, serve) = kernel.create_endpoint(&driver, "serve:rng");
    let to_driver = kernel.grant_endpoint(&client, endpoint, "call:rng", 3);
    let state = Arc::new(Mutex::new(RngServer::new(Counter {
        next: 0,
        fail: None,
    })));
    let mut server = Server::<Rng, _>::new(driver, serve);
    let shared = state.clone();
    kernel.set_pump(endpoint, move || {
        let mut handler = shared.lock().expect("not poisoned");
        server
            .serve_one(&mut *handler, Timeout::NonBlocking)
            .expect("a message is queued");
    });
    (kernel, client, to_driver, state)
}

#[test]
fn fills_any_length_in_chunks() {
    let (_kernel, task, endpoint, state) = system();
    let client = RngClient::new(task, endpoint);
    let mut out = vec![0u8; 3 * MAX_FILL + 5];
    client.fill(&mut out).expect("filled");
    let expected: Vec<u8> = (0..out.len()).map(|i| i as u8).collect();
    assert_eq!(out, expected);
    let info = client.info().expect("info");
    assert_eq!((info.fills, info.bytes), (4, out.len() as u64));
    assert_eq!(state.lock().expect("not poisoned").info(), info);
    // Nothing to fill: no request.
    client.fill(&mut []).expect("empty is fine");
    assert_eq!(client.info().expect("info").fills, 4);
}

#[test]
fn driver_errors_reach_the_client_typed() {
    let (_kernel, task, endpoint, state) = system();
    let client = RngClient::new(task, endpoint);
    {
        // Swap in a failing source.
        let mut server = state.lock().expect("not poisoned");
        *server = RngServer::new(Counter {
            next: 0,
            fail: Some(RngError::TimedOut),
        });
    }
    let mut out = [0u8; 4];
    assert_eq!(
        client.fill(&mut out),
        Err(ClientError::Rng(RngError::TimedOut))
    );
}

#[test]
fn seed_mixes_the_driver_in_when_there_is_one() {
    let (_kernel, task, endpoint, _state) = system();
    let client = RngClient::new(task, endpoint);
    let with = seed(Some(&client));
    assert!(with.from_device);
    // No TaskInfo installed in this test process: the kernel part is zeros.
    let device: Vec<u8> = (0..32).collect();
    assert_eq!(with.bytes, mix_seed(&[0; 32], Some(&device)));
    let without = seed::<FakeTask>(None);
    assert!(!without.from_device);
    assert_eq!(without.bytes, mix_seed(&[0; 32], None));
    assert_ne!(with.bytes, without.bytes);
}
