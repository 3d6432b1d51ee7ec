//! Unit tests: sizes, encoding, the server's handling of well-behaved and hostile sources, and
//! seed mixing.

extern crate std;

use std::vec::Vec;

use moat_abi::MAX_PAYLOAD;

use super::*;

fn encoded_len<T: Serialize>(value: &T) -> usize {
    let mut buffer = [0u8; 1024];
    postcard::to_slice(value, &mut buffer)
        .map(|used| used.len())
        .unwrap_or(usize::MAX)
}

#[test]
fn largest_messages_fit_a_payload() {
    let full = heapless::Vec::from_slice(&[0xff; MAX_FILL]).expect("fits");
    let info = RngInfo {
        max_fill: u16::MAX,
        fills: u64::MAX,
        bytes: u64::MAX,
        short_reads: u64::MAX,
        errors: u64::MAX,
    };
    for response in [
        Response::Bytes(full),
        Response::Info(info),
        Response::Refused(RngError::Starved),
    ] {
        let len = encoded_len(&response);
        assert!(len <= MAX_PAYLOAD, "{response:?}: {len} bytes");
    }
    assert!(encoded_len(&Request::Fill { len: u16::MAX }) <= MAX_PAYLOAD);
}

#[test]
fn round_trips_and_strict_decoding() {
    let message = moat_ipc::encode(Rng::ID, &Request::Fill { len: 17 }).expect("fits");
    assert_eq!(
        moat_ipc::decode::<Request>(message.payload()),
        Some(Request::Fill { len: 17 })
    );
    let mut bytes = Vec::from(message.payload());
    bytes.push(0);
    assert_eq!(moat_ipc::decode::<Request>(&bytes), None);
    for error in RngError::ALL {
        let message = moat_ipc::encode(0, &Response::Refused(error)).expect("fits");
        assert_eq!(
            moat_ipc::decode::<Response>(message.payload()),
            Some(Response::Refused(error))
        );
    }
}

#[test]
fn error_values_are_fixed() {
    for (index, error) in RngError::ALL.iter().enumerate() {
        assert_eq!(usize::from(error.code()), index + 1);
    }
}

/// A source that hands out a counter's bytes, `per_call` at most per call (or claims
/// `claim` bytes whatever it wrote), or fails.
struct Counter {
    next: u8,
    per_call: usize,
    claim: Option<usize>,
    fail: Option<RngError>,
    calls: usize,
}

impl Counter {
    fn new(per_call: usize) -> Counter {
        Counter {
            next: 0,
            per_call,
            claim: None,
            fail: None,
            calls: 0,
        }
    }
}

impl EntropySource for Counter {
    fn fill(&mut self, out: &mut [u8]) -> Result<usize, RngError> {
        self.calls += 1;
        if let Some(error) = self.fail {
            return Err(error);
        }
        let n = out.len().min(self.per_call);
        for byte in &mut out[..n] {
            *byte = self.next;
            self.next = self.next.wrapping_add(1);
        }
        Ok(self.claim.unwrap_or(n))
    }
}

fn bytes(response: Response) -> Vec<u8> {
    match response {
        Response::Bytes(bytes) => bytes.to_vec(),
        other => panic!("expected bytes, got {other:?}"),
    }
}

#[test]
fn fills_exactly_the_length_asked_for() {
    let mut server = RngServer::new(Counter::new(usize::MAX));
    assert_eq!(
        bytes(server.respond(Request::Fill { len: 5 })),
        [0, 1, 2, 3, 4]
    );
    let full = bytes(server.respond(Request::Fill {
        len: MAX_FILL as u16,
    }));
    assert_eq!(full.len(), MAX_FILL);
    assert_eq!(full[0], 5);
    let Response::Info(info) = server.respond(Request::Info) else {
        panic!("info");
    };
    assert_eq!(info.max_fill as usize, MAX_FILL);
    assert_eq!(
        (info.fills, info.bytes, info.errors),
        (2, 5 + MAX_FILL as u64, 0)
    );
}

#[test]
fn bad_lengths_are_refused_without_touching_the_device() {
    let mut server = RngServer::new(Counter::new(usize::MAX));
    for len in [0, MAX_FILL as u16 + 1, u16::MAX] {
        assert_eq!(
            server.respond(Request::Fill { len }),
            Response::Refused(RngError::BadLength)
        );
    }
    assert_eq!(server.source().calls, 0);
    assert_eq!(server.info().errors, 3);
}

#[test]
fn short_reads_are_completed_by_asking_again() {
    let mut server = RngServer::new(Counter::new(7));
    let got = bytes(server.respond(Request::Fill { len: 20 }));
    assert_eq!(got, (0..20).collect::<Vec<u8>>());
    assert_eq!(server.source().calls, 3);
    assert_eq!(server.info().short_reads, 2);
}

#[test]
fn a_starving_or_failing_source_is_an_error_not_a_hang() {
    let mut server = RngServer::new(Counter::new(0));
    assert_eq!(
        server.respond(Request::Fill { len: 8 }),
        Response::Refused(RngError::Starved)
    );
    assert_eq!(server.source().calls, FILL_ATTEMPTS);
    let mut failing = Counter::new(8);
    failing.fail = Some(RngError::DeviceFailed);
    let mut server = RngServer::new(failing);
    assert_eq!(
        server.respond(Request::Fill { len: 8 }),
        Response::Refused(RngError::DeviceFailed)
    );
}

#[test]
fn a_source_claiming_more_than_it_was_given_cannot_overrun() {
    let mut source = Counter::new(4);
    source.claim = Some(usize::MAX);
    let mut server = RngServer::new(source);
    // It claims everything at once: held to the buffer it was given.
    let got = bytes(server.respond(Request::Fill { len: 10 }));
    assert_eq!(got.len(), 10);
    assert_eq!(&got[..4], [0, 1, 2, 3]);
}

#[test]
fn seeds_depend_on_every_input() {
    let kernel = [7u8; 32];
    let alone = mix_seed(&kernel, None);
    let with_device = mix_seed(&kernel, Some(&[1; 32]));
    let other_device = mix_seed(&kernel, Some(&[2; 32]));
    let other_kernel = mix_seed(&[8u8; 32], Some(&[1; 32]));
    let empty_device = mix_seed(&kernel, Some(&[]));
    let all = [alone, with_device, other_device, other_kernel, empty_device];
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            assert_ne!(a, b);
        }
    }
    // Deterministic.
    assert_eq!(mix_seed(&kernel, Some(&[1; 32])), with_device);
    let seed = Seed {
        bytes: with_device,
        from_device: true,
    };
    assert_eq!(seed.as_u64().to_le_bytes(), with_device[..8]);
}
