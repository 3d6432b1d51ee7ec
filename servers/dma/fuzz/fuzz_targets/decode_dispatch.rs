//! Arbitrary bytes as a sequence of request messages (payload, badge, sender, endpoint) through
//! decoding and the DMA server's dispatch, against the fake backing.
//!
//! Input: repeated records `[selector, generation, length, payload[length]]`. The selector's low
//! bits pick the badge (a driver, a second driver, an observer, the supervisor, or raw bytes
//! taken from the input), bit 7 says whether the message came on the supervisor's endpoint.
//! Invariants: no panic; every reply is a well-formed `Reply` with the reply label; a window
//! capability goes only with a successful `Register`; the model's counters stay consistent and
//! the fake backing sees no page-state violation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moat_abi::{MAX_PAYLOAD, Message, TaskId};
use moat_dma_api::protocol::{
    LABEL_REPLY, LABEL_REQUEST, Reply, Response, Role, badge, decode_payload,
};
use moat_dma_server::fake::FakeBacking;
use moat_dma_server::{ClientIdentity, Dispatcher, DmaServer, ServerConfig};

fuzz_target!(|data: &[u8]| {
    let server = DmaServer::new(
        ServerConfig {
            slot_size: 2048,
            budget_bytes: 96 * 1024,
        },
        FakeBacking::new(64),
    );
    let mut dispatcher = Dispatcher::new(
        server,
        [
            (ClientIdentity(1), 32 * 1024),
            (ClientIdentity(2), 48 * 1024),
            (ClientIdentity(3), 64 * 1024),
        ],
    );
    let mut input = data;
    while let [selector, generation, length, rest @ ..] = input {
        let length = usize::from(*length).min(rest.len()).min(MAX_PAYLOAD);
        let (payload, tail) = rest.split_at(length);
        input = tail;
        let badge = match selector & 0x7 {
            0 | 1 => badge::encode(ClientIdentity(1), Role::Client),
            2 => badge::encode(ClientIdentity(2), Role::Client),
            3 => badge::encode(ClientIdentity(3), Role::Client),
            4 => badge::encode(ClientIdentity(9), Role::Observer),
            5 => badge::encode(ClientIdentity(10), Role::Supervisor),
            _ => {
                // Raw badge bytes from the input.
                let mut raw = [0u8; 8];
                let take = input.len().min(8);
                raw[..take].copy_from_slice(&input[..take]);
                input = &input[take..];
                u64::from_le_bytes(raw)
            }
        };
        let on_supervisor_endpoint = selector & 0x80 != 0;
        let label = if selector & 0x40 != 0 {
            u32::from(*generation)
        } else {
            LABEL_REQUEST
        };
        let Ok(mut message) = Message::new(label, payload) else {
            return;
        };
        message.stamp(
            badge,
            TaskId::new(1 + u16::from(selector & 0x7), u16::from(generation & 0x3)),
        );
        let mut reply = Message::empty(0);
        let window = dispatcher.handle_message(&message, on_supervisor_endpoint, &mut reply);
        assert_eq!(reply.label(), LABEL_REPLY);
        let decoded: Reply = decode_payload(reply.payload()).expect("every reply decodes");
        assert_eq!(window.is_some(), matches!(decoded, Ok(Response::Window(_))));
    }
    assert!(dispatcher.server().check_consistency());
    assert!(
        dispatcher.server().backing().violations.is_empty(),
        "{:?}",
        dispatcher.server().backing().violations
    );
});
