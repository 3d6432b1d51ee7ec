//! The services against a client stack over an in-memory cable.

use std::string::String;
use std::vec::Vec;

use moat_net::link::MemoryLink;
use moat_net::smoltcp::iface::SocketHandle;
use moat_net::smoltcp::socket::tcp;
use moat_net::smoltcp::wire::{IpAddress, Ipv4Address, Ipv4Cidr};
use moat_net::{Addressing, Stack, StackConfig};

use super::*;

const SERVER: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);
const CLIENT: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);

fn stack(link: MemoryLink, mac: u8, address: Ipv4Address, seed: u64) -> Stack<MemoryLink> {
    Stack::new(
        link,
        StackConfig {
            mac: [0x02, 0, 0, 0, 0, mac],
            mtu: 1500,
            seed,
            addressing: Addressing::Static(Ipv4Cidr::new(address, 24), None),
        },
        0,
    )
}

struct World {
    server: Stack<MemoryLink>,
    client: Stack<MemoryLink>,
    services: Services,
    now: u64,
}

impl World {
    fn new() -> World {
        let (a, b) = MemoryLink::pair();
        let mut server = stack(a, 1, SERVER, 1);
        let client = stack(b, 2, CLIENT, 2);
        let services = Services::new(&mut server, 2, 2);
        World {
            server,
            client,
            services,
            now: 0,
        }
    }

    fn step(&mut self) {
        self.now += 1;
        self.server.poll(self.now);
        self.services.serve(&mut self.server, |stats, out| {
            status_page(out, 1234, "10.0.2.15/24", None, None, stats)
        });
        self.client.poll(self.now);
    }

    fn connect(&mut self, port: u16, local: u16, buffer: usize) -> SocketHandle {
        let socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; buffer]),
            tcp::SocketBuffer::new(vec![0; buffer]),
        );
        let handle = self.client.sockets().add(socket);
        // Let the server's listeners open first.
        self.step();
        let (sockets, context) = self.client.sockets_and_context();
        sockets
            .get_mut::<tcp::Socket<'_>>(handle)
            .connect(context, (IpAddress::Ipv4(SERVER), port), local)
            .expect("connect");
        handle
    }
}

#[test]
fn echo_returns_every_byte_over_parallel_connections() {
    let mut world = World::new();
    let handles: Vec<_> = (0..2)
        .map(|i| world.connect(ECHO_PORT, 40000 + i, 8192))
        .collect();
    let total = 200_000usize;
    let data: Vec<Vec<u8>> = (0..2)
        .map(|i| (0..total).map(|n| (n * 7 + i * 13) as u8).collect())
        .collect();
    let mut sent = [0usize; 2];
    let mut received: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..200_000 {
        world.step();
        for (i, handle) in handles.iter().enumerate() {
            let socket = world.client.sockets().get_mut::<tcp::Socket<'_>>(*handle);
            if socket.can_send() && sent[i] < total {
                sent[i] += socket.send_slice(&data[i][sent[i]..]).expect("send");
            }
            while socket.can_recv() {
                let mut chunk = [0u8; 4096];
                let n = socket.recv_slice(&mut chunk).expect("recv");
                if n == 0 {
                    break;
                }
                received[i].extend_from_slice(&chunk[..n]);
            }
        }
        if received.iter().all(|r| r.len() == total) {
            break;
        }
    }
    for i in 0..2 {
        assert_eq!(received[i].len(), total, "connection {i}");
        assert!(received[i] == data[i], "connection {i} corrupted");
    }
    let stats = world.services.stats();
    assert_eq!(stats.echo_connections, 2);
    assert_eq!(stats.echo_bytes, 2 * total as u64);
}

fn fetch(world: &mut World, request: &[u8], local: u16) -> String {
    let handle = world.connect(HTTP_PORT, local, 8192);
    let mut sent = false;
    let mut response = Vec::new();
    for _ in 0..10_000 {
        world.step();
        let socket = world.client.sockets().get_mut::<tcp::Socket<'_>>(handle);
        if !sent && socket.can_send() {
            socket.send_slice(request).expect("send");
            sent = true;
        }
        while socket.can_recv() {
            let mut chunk = [0u8; 4096];
            let n = socket.recv_slice(&mut chunk).expect("recv");
            response.extend_from_slice(&chunk[..n]);
        }
        if sent && !socket.may_recv() && !response.is_empty() {
            socket.close();
            break;
        }
    }
    for _ in 0..10 {
        world.step();
    }
    String::from_utf8(response).expect("utf-8")
}

#[test]
fn http_serves_the_status_page() {
    let mut world = World::new();
    let page = fetch(&mut world, b"GET / HTTP/1.0\r\nHost: moat\r\n\r\n", 41000);
    assert!(page.starts_with("HTTP/1.0 200 OK\r\n"), "{page}");
    assert!(page.contains("uptime: 1.234 s"), "{page}");
    assert!(page.contains("address: 10.0.2.15/24"), "{page}");
    let body = page.split("\r\n\r\n").nth(1).expect("body");
    let length: usize = page
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("length")
        .parse()
        .expect("number");
    assert_eq!(body.len(), length);
    // The listener re-opens: a second request works, and other paths and methods are refused.
    let missing = fetch(&mut world, b"GET /nope HTTP/1.0\r\n\r\n", 41001);
    assert!(missing.starts_with("HTTP/1.0 404"), "{missing}");
    let post = fetch(&mut world, b"POST / HTTP/1.0\r\n\r\n", 41002);
    assert!(post.starts_with("HTTP/1.0 405"), "{post}");
    assert_eq!(world.services.stats().http_requests, 3);
}

#[test]
fn oversized_requests_are_refused() {
    let stats = ServiceStats::default();
    let page = |_: &ServiceStats, _: &mut String| {};
    let response = respond(&[b'a'; 3000], false, &stats, &page);
    assert!(response.starts_with("HTTP/1.0 431"));
    let response = respond(b"", true, &stats, &page);
    assert!(response.starts_with("HTTP/1.0 405"));
}

#[test]
fn status_page_lists_counters() {
    let mut out = String::new();
    let counters = Counters {
        rx_frames: 5,
        tx_bytes: 77,
        ..Counters::default()
    };
    status_page(
        &mut out,
        61_005,
        "10.0.2.15/24",
        Some(&counters),
        None,
        &ServiceStats::default(),
    );
    assert!(out.contains("uptime: 61.005 s"));
    assert!(out.contains("net rx: 5 frames"));
    assert!(out.contains("net tx: 0 frames, 77 bytes"));
    assert!(out.contains("dmastat: unavailable"), "{out}");
}

#[test]
fn status_page_shows_the_dma_figures() {
    use moat_dma_api::{ClientIdentity, ClientStats, StatsSummary};
    let dma = DmaFigures {
        stats: StatsSummary {
            total_slots: 512,
            used_slots: 40,
            high_water_slots: 64,
            clients: 2,
            ..StatsSummary::default()
        },
        clients: vec![ClientStats {
            identity: ClientIdentity(4),
            instance: None,
            window_bytes: 1 << 20,
            grants: 3,
            granted_bytes: 4096,
            used_slots: 2,
            quarantined_slots: 0,
            reset_pending: false,
            bytes_to_device: 10,
            bytes_from_device: 20,
            failures: 0,
        }],
        ..DmaFigures::default()
    };
    let mut out = String::new();
    status_page(
        &mut out,
        1,
        "none",
        None,
        Some(&dma),
        &ServiceStats::default(),
    );
    assert!(out.contains("\ndmastat:\nDMA pool: "), "{out}");
    let row = out
        .lines()
        .skip_while(|line| !line.contains("high-water"))
        .nth(1)
        .expect("the slots row");
    let numbers: Vec<u64> = row
        .split_whitespace()
        .map(|n| n.parse().expect("a number"))
        .collect();
    assert_eq!(numbers, [512, 40, 64, 0, 0, 2]);
    assert!(out.contains("1.0 MiB"), "{out}");
}

#[test]
fn a_status_page_after_an_echo_counts_as_a_visit_once_delivered() {
    let mut world = World::new();
    // A page before any echo is not a visit.
    let page = fetch(&mut world, b"GET / HTTP/1.0\r\n\r\n", 44000);
    assert!(page.starts_with("HTTP/1.0 200"), "{page}");
    assert!(!world.services.stats().visited);
    // Echo a little, close, then fetch the page again.
    let echo = world.connect(ECHO_PORT, 44001, 4096);
    let mut echoed = 0;
    let mut sent = false;
    for _ in 0..10_000 {
        world.step();
        let socket = world.client.sockets().get_mut::<tcp::Socket<'_>>(echo);
        if !sent && socket.can_send() {
            socket.send_slice(b"hello").expect("send");
            sent = true;
        }
        while socket.can_recv() {
            let mut chunk = [0u8; 64];
            echoed += socket.recv_slice(&mut chunk).expect("recv");
        }
        if echoed == 5 {
            socket.close();
            break;
        }
    }
    for _ in 0..50 {
        world.step();
    }
    assert_eq!(world.services.stats().echo_bytes, 5);
    assert!(!world.services.stats().visited);
    // A 404 is not the page.
    let missing = fetch(&mut world, b"GET /nope HTTP/1.0\r\n\r\n", 44002);
    assert!(missing.starts_with("HTTP/1.0 404"), "{missing}");
    assert!(!world.services.stats().visited);
    let page = fetch(&mut world, b"GET / HTTP/1.0\r\n\r\n", 44003);
    assert!(page.contains("echo: 1 connections, 5 bytes"), "{page}");
    assert!(world.services.stats().visited);
}

#[test]
fn the_demo_hold_is_released_once() {
    let visited = ServiceStats {
        visited: true,
        ..ServiceStats::default()
    };
    let idle = ServiceStats::default();
    let mut hold = DemoHold::new(1_000);
    assert_eq!(hold.poll(2_000, false, &idle), None);
    assert_eq!(hold.poll(3_000, true, &idle), None);
    assert_eq!(hold.poll(4_000, true, &visited), Some(Release::Visited));
    assert_eq!(hold.poll(5_000, true, &visited), None);
    // Nobody comes: released a window after the address.
    let mut hold = DemoHold::new(0);
    assert_eq!(hold.poll(10, true, &idle), None);
    assert_eq!(
        hold.poll(10 + DemoHold::VISIT_WINDOW_MS - 1, true, &idle),
        None
    );
    assert_eq!(
        hold.poll(10 + DemoHold::VISIT_WINDOW_MS, true, &idle),
        Some(Release::NoVisitor)
    );
    // No address at all.
    let mut hold = DemoHold::new(0);
    assert_eq!(
        hold.poll(DemoHold::ADDRESS_WINDOW_MS - 1, false, &idle),
        None
    );
    assert_eq!(
        hold.poll(DemoHold::ADDRESS_WINDOW_MS, false, &idle),
        Some(Release::NoAddress)
    );
}

#[test]
fn kill_is_refused_without_task_control_and_recorded_with_it() {
    let mut world = World::new();
    let refused = fetch(&mut world, b"GET /kill?task=2 HTTP/1.0\r\n\r\n", 42000);
    assert!(refused.starts_with("HTTP/1.0 403"), "{refused}");
    assert_eq!(world.services.take_kill(), None);
    world.services.allow_kill(true);
    let bad = fetch(&mut world, b"GET /kill?task=x HTTP/1.0\r\n\r\n", 42001);
    assert!(bad.starts_with("HTTP/1.0 400"), "{bad}");
    let accepted = fetch(&mut world, b"GET /kill?task=2 HTTP/1.0\r\n\r\n", 42002);
    assert!(accepted.starts_with("HTTP/1.0 202"), "{accepted}");
    assert_eq!(world.services.take_kill(), Some(KillRequest { task: 2 }));
    assert_eq!(world.services.take_kill(), None);
    assert_eq!(kill_request(b"GET /killer HTTP/1.0"), None);
    assert_eq!(kill_request(b"GET / HTTP/1.0"), None);
}

#[test]
fn sink_counts_and_source_sends_the_pattern() {
    let (a, b) = MemoryLink::pair();
    let mut server = stack(a, 1, SERVER, 1);
    let client = stack(b, 2, CLIENT, 2);
    let services = Services::new(&mut server, 1, 1).with_bulk(&mut server);
    let mut world = World {
        server,
        client,
        services,
        now: 0,
    };
    // Sink: 100,000 bytes, then the answer after our FIN.
    let sink = world.connect(SINK_PORT, 43000, 16384);
    let total = 100_000usize;
    let mut sent = 0;
    let mut answer = Vec::new();
    for _ in 0..100_000 {
        world.step();
        let socket = world.client.sockets().get_mut::<tcp::Socket<'_>>(sink);
        if sent < total && socket.can_send() {
            sent += socket
                .send_slice(&[7u8; 4096][..4096.min(total - sent)])
                .expect("send");
            if sent == total {
                socket.close();
            }
        }
        while socket.can_recv() {
            let mut chunk = [0u8; 64];
            let n = socket.recv_slice(&mut chunk).expect("recv");
            answer.extend_from_slice(&chunk[..n]);
        }
        if !socket.may_recv() && !answer.is_empty() {
            break;
        }
    }
    assert_eq!(
        String::from_utf8(answer).expect("utf-8"),
        "received 100000\n"
    );
    // Source: the first 50,000 bytes are the pattern.
    let source = world.connect(SOURCE_PORT, 43001, 16384);
    let mut received = Vec::new();
    for _ in 0..100_000 {
        world.step();
        let socket = world.client.sockets().get_mut::<tcp::Socket<'_>>(source);
        while socket.can_recv() {
            let mut chunk = [0u8; 4096];
            let n = socket.recv_slice(&mut chunk).expect("recv");
            received.extend_from_slice(&chunk[..n]);
        }
        if received.len() >= 50_000 {
            socket.close();
            break;
        }
    }
    assert!(received.len() >= 50_000);
    for (offset, &byte) in received.iter().enumerate() {
        assert_eq!(byte, source_byte(offset as u64), "byte {offset}");
    }
    let stats = world.services.stats();
    assert_eq!(stats.sink_bytes, total as u64);
    assert!(stats.source_bytes >= 50_000);
}
