//! netdemo: a TCP echo service (port 7), a small HTTP status page (port 80), a sink (port 9:
//! reads and discards, then answers with the byte count) and a source (port 19: sends
//! [`source_byte`] until the peer closes) on the Moat network stack. The services are state machines over `smoltcp` sockets, host-tested with two
//! stacks on an in-memory cable; the binary wires them to the virtio-net driver.
#![no_std]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt::Write;

use moat_dma_api::{ClientStats, FailureCounts, StatsSummary};
use moat_net::Link;
use moat_net::Stack;
use moat_net::smoltcp::iface::SocketHandle;
use moat_net::smoltcp::socket::tcp;
use moat_net_api::Counters;

/// The echo service's port.
pub const ECHO_PORT: u16 = 7;
/// The HTTP service's port.
pub const HTTP_PORT: u16 = 80;
/// The sink's port: everything received is counted and dropped; when the peer has finished
/// sending, the sink answers `received <count>\n` and closes.
pub const SINK_PORT: u16 = 9;
/// The source's port: sends [`source_byte`] of the stream offset until the peer closes.
pub const SOURCE_PORT: u16 = 19;
/// Socket buffer size of the sink and the source, each way.
pub const BULK_BUFFER: usize = 64 * 1024;
/// Socket buffer size for each echo connection, each way.
pub const ECHO_BUFFER: usize = 16 * 1024;
/// Socket buffer size for each HTTP connection, each way.
pub const HTTP_BUFFER: usize = 8 * 1024;
/// Bytes of request head an HTTP connection may send before it is refused.
pub const MAX_REQUEST: usize = 2048;

/// What the services have done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceStats {
    /// Echo connections accepted.
    pub echo_connections: u64,
    /// Bytes echoed.
    pub echo_bytes: u64,
    /// HTTP requests answered.
    pub http_requests: u64,
    /// Bytes the sink received.
    pub sink_bytes: u64,
    /// Bytes the source sent.
    pub source_bytes: u64,
    /// Whether a host client has exercised the network: a status page showing echoed bytes
    /// was served and the peer acknowledged all of it (our FIN). netdemo releases the demo's power-off hold then ([`DemoHold`]).
    pub visited: bool,
}

/// Byte `offset` of the source's stream (and of what the host tests send): a pattern with a
/// period (251, a prime) that no power-of-two segment size lines up with.
pub const fn source_byte(offset: u64) -> u8 {
    (offset % 251) as u8
}

/// What `GET /kill?task=<index>` asks for: the task at manifest index `index` killed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KillRequest {
    /// The task's manifest index.
    pub task: u16,
}

/// The task index in a `GET /kill?task=<index> ` request line, if it is one.
pub fn kill_request(line: &[u8]) -> Option<Option<KillRequest>> {
    let rest = line.strip_prefix(b"GET /kill")?;
    let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
    let query = &rest[..end];
    if query.is_empty() {
        return Some(None);
    }
    let digits = query.strip_prefix(b"?task=")?;
    let text = core::str::from_utf8(digits).ok()?;
    Some(text.parse::<u16>().ok().map(|task| KillRequest { task }))
}

struct Bulk {
    handle: SocketHandle,
    /// Sink: bytes received on this connection; source: bytes sent on it.
    count: u64,
    /// Sink: the count has been answered.
    done: bool,
}

struct HttpConnection {
    handle: SocketHandle,
    request: Vec<u8>,
    answered: bool,
    /// This connection was answered with a status page that showed echoed bytes.
    page_after_echo: bool,
}

/// The echo and HTTP services on one stack.
pub struct Services {
    echo: Vec<(SocketHandle, bool)>,
    http: Vec<HttpConnection>,
    sink: Option<Bulk>,
    source: Option<Bulk>,
    stats: ServiceStats,
    kill_allowed: bool,
    kill: Option<KillRequest>,
}

impl core::fmt::Debug for Services {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Services")
            .field("stats", &self.stats)
            .finish()
    }
}

fn tcp_socket(buffer: usize) -> tcp::Socket<'static> {
    tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; buffer]),
        tcp::SocketBuffer::new(vec![0; buffer]),
    )
}

impl Services {
    /// Adds `echo` echo sockets and `http` HTTP sockets (each serves one connection at a time)
    /// to `stack`.
    pub fn new<L: Link>(stack: &mut Stack<L>, echo: usize, http: usize) -> Services {
        let sockets = stack.sockets();
        Services {
            echo: (0..echo)
                .map(|_| (sockets.add(tcp_socket(ECHO_BUFFER)), false))
                .collect(),
            http: (0..http)
                .map(|_| HttpConnection {
                    handle: sockets.add(tcp_socket(HTTP_BUFFER)),
                    request: Vec::new(),
                    answered: false,
                    page_after_echo: false,
                })
                .collect(),
            sink: None,
            source: None,
            stats: ServiceStats::default(),
            kill_allowed: false,
            kill: None,
        }
    }

    /// Adds the sink (port [`SINK_PORT`]) and the source (port [`SOURCE_PORT`]), one
    /// connection at a time each.
    pub fn with_bulk<L: Link>(mut self, stack: &mut Stack<L>) -> Services {
        let sockets = stack.sockets();
        let mut bulk = || Bulk {
            handle: sockets.add(tcp_socket(BULK_BUFFER)),
            count: 0,
            done: false,
        };
        self.sink = Some(bulk());
        self.source = Some(bulk());
        self
    }

    /// Lets `GET /kill?task=<index>` request a kill (taken with [`Services::take_kill`]); the
    /// task must hold TaskControl. Refused with 403 otherwise.
    pub fn allow_kill(&mut self, allowed: bool) {
        self.kill_allowed = allowed;
    }

    /// A kill requested over HTTP and answered (202), to be carried out by the caller.
    pub fn take_kill(&mut self) -> Option<KillRequest> {
        self.kill.take()
    }

    /// Whether an HTTP connection has request bytes that the next [`Services::serve`] may
    /// answer with the status page: refresh the page's figures first, so it shows the traffic
    /// up to this request.
    pub fn page_pending<L: Link>(&self, stack: &mut Stack<L>) -> bool {
        let sockets = stack.sockets();
        self.http.iter().any(|connection| {
            let socket = sockets.get::<tcp::Socket<'_>>(connection.handle);
            !connection.answered && (socket.can_recv() || !connection.request.is_empty())
        })
    }

    /// What the services have done.
    pub fn stats(&self) -> ServiceStats {
        self.stats
    }

    /// Runs both services once (after a stack poll); `page` writes the status page's body.
    /// Returns whether any socket made progress.
    pub fn serve<L: Link>(
        &mut self,
        stack: &mut Stack<L>,
        page: impl Fn(&ServiceStats, &mut String),
    ) -> bool {
        let mut progress = false;
        let sockets = stack.sockets();
        for (handle, connected) in &mut self.echo {
            let socket = sockets.get_mut::<tcp::Socket<'_>>(*handle);
            if !socket.is_open() {
                *connected = false;
                let _ = socket.listen(ECHO_PORT);
            }
            if socket.is_active() && !*connected {
                *connected = true;
                self.stats.echo_connections += 1;
            }
            // Echo as much as fits in the send buffer; the rest waits in the receive buffer.
            while socket.can_recv() && socket.can_send() {
                let room = socket.send_capacity() - socket.send_queue();
                let mut chunk = [0u8; 2048];
                let take = room.min(chunk.len());
                let Ok(read) = socket.recv_slice(&mut chunk[..take]) else {
                    break;
                };
                if read == 0 {
                    break;
                }
                let _ = socket.send_slice(&chunk[..read]);
                self.stats.echo_bytes += read as u64;
                progress = true;
            }
            if socket.state() == tcp::State::CloseWait && socket.send_queue() == 0 {
                socket.close();
            }
        }
        if let Some(sink) = &mut self.sink {
            let socket = sockets.get_mut::<tcp::Socket<'_>>(sink.handle);
            if !socket.is_open() {
                sink.count = 0;
                sink.done = false;
                let _ = socket.listen(SINK_PORT);
            }
            while socket.can_recv() {
                match socket.recv(|data| (data.len(), data.len())) {
                    Ok(0) | Err(_) => break,
                    Ok(read) => {
                        sink.count += read as u64;
                        self.stats.sink_bytes += read as u64;
                        progress = true;
                    }
                }
            }
            if socket.state() == tcp::State::CloseWait && !sink.done {
                let mut answer = String::new();
                let _ = writeln!(answer, "received {}", sink.count);
                let _ = socket.send_slice(answer.as_bytes());
                socket.close();
                sink.done = true;
                progress = true;
            }
        }
        if let Some(source) = &mut self.source {
            let socket = sockets.get_mut::<tcp::Socket<'_>>(source.handle);
            if !socket.is_open() {
                source.count = 0;
                let _ = socket.listen(SOURCE_PORT);
            }
            if socket.state() == tcp::State::CloseWait {
                socket.close();
            }
            while socket.can_send() && socket.may_send() {
                let start = source.count;
                let sent = socket.send(|buffer| {
                    // The pattern without a division per byte.
                    let mut value = source_byte(start);
                    for byte in buffer.iter_mut() {
                        *byte = value;
                        value = if value == 250 { 0 } else { value + 1 };
                    }
                    (buffer.len(), buffer.len())
                });
                match sent {
                    Ok(0) | Err(_) => break,
                    Ok(sent) => {
                        source.count += sent as u64;
                        self.stats.source_bytes += sent as u64;
                        progress = true;
                    }
                }
            }
        }
        for connection in &mut self.http {
            let socket = sockets.get_mut::<tcp::Socket<'_>>(connection.handle);
            if connection.page_after_echo && delivered(socket.state()) {
                // The peer acknowledged our FIN, so it has the whole page.
                connection.page_after_echo = false;
                self.stats.visited = true;
            }
            if !socket.is_open() {
                connection.request.clear();
                connection.answered = false;
                connection.page_after_echo = false;
                let _ = socket.listen(HTTP_PORT);
                continue;
            }
            if connection.answered {
                continue;
            }
            while socket.can_recv() {
                let mut chunk = [0u8; 512];
                match socket.recv_slice(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(read) => connection.request.extend_from_slice(&chunk[..read]),
                }
                progress = true;
            }
            let complete = connection.request.windows(4).any(|w| w == b"\r\n\r\n");
            if !complete && connection.request.len() <= MAX_REQUEST {
                if socket.state() == tcp::State::CloseWait {
                    socket.close();
                }
                continue;
            }
            let line = connection
                .request
                .split(|&b| b == b'\r')
                .next()
                .unwrap_or(&[]);
            let response = match kill_request(line) {
                Some(request) if complete => {
                    kill_response(request, self.kill_allowed, &mut self.kill)
                }
                _ => {
                    connection.page_after_echo =
                        complete && is_status_request(line) && self.stats.echo_bytes > 0;
                    respond(&connection.request, complete, &self.stats, &page)
                }
            };
            let _ = socket.send_slice(response.as_bytes());
            socket.close();
            connection.answered = true;
            self.stats.http_requests += 1;
            progress = true;
        }
        progress
    }
}

/// Whether a connection in `state` has had everything it sent, FIN included, acknowledged.
fn delivered(state: tcp::State) -> bool {
    matches!(
        state,
        tcp::State::FinWait2 | tcp::State::TimeWait | tcp::State::Closed | tcp::State::Listen
    )
}

/// Whether a request line asks for the status page.
fn is_status_request(line: &[u8]) -> bool {
    line.starts_with(b"GET / ") || line.starts_with(b"GET /status ")
}

/// The answer to `GET /kill[?task=<index>]`: 202 and the request recorded in `pending` when
/// kills are `allowed`, otherwise 403; 400 without a valid index.
fn kill_response(
    request: Option<KillRequest>,
    allowed: bool,
    pending: &mut Option<KillRequest>,
) -> String {
    let (status, body) = match (request, allowed) {
        (_, false) => (
            "403 Forbidden",
            String::from("this netdemo holds no task-control\n"),
        ),
        (None, true) => ("400 Bad Request", String::from("want /kill?task=<index>\n")),
        (Some(request), true) => {
            *pending = Some(request);
            let mut body = String::new();
            let _ = writeln!(body, "killing task {}", request.task);
            ("202 Accepted", body)
        }
    };
    http_response(status, &body)
}

fn http_response(status: &str, body: &str) -> String {
    let mut response = String::new();
    let _ = write!(
        response,
        "HTTP/1.0 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    response
}

/// The HTTP/1.0 response to `request` (`complete`: its head ended with a blank line).
pub fn respond(
    request: &[u8],
    complete: bool,
    stats: &ServiceStats,
    page: &impl Fn(&ServiceStats, &mut String),
) -> String {
    let line = request.split(|&b| b == b'\r').next().unwrap_or(&[]);
    let (status, body) = if !complete {
        (
            "431 Request Header Fields Too Large",
            String::from("request too large\n"),
        )
    } else if is_status_request(line) {
        let mut body = String::new();
        page(stats, &mut body);
        ("200 OK", body)
    } else if line.starts_with(b"GET ") {
        ("404 Not Found", String::from("not found\n"))
    } else {
        ("405 Method Not Allowed", String::from("only GET\n"))
    };
    let mut response = String::new();
    let _ = write!(
        response,
        "HTTP/1.0 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    response
}

/// The DMA server's figures as an observer sees them (what `dmastat` prints).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DmaFigures {
    /// The server-wide summary.
    pub stats: StatsSummary,
    /// Failures by reason.
    pub failures: FailureCounts,
    /// Every client's figures.
    pub clients: Vec<ClientStats>,
}

/// The status page body: uptime (`uptime_ms`, the kernel's clock since boot), address, the driver's counters, the services' figures and
/// the DMA server's figures (`dmastat`'s tables) when netdemo is an observer of it.
pub fn status_page(
    out: &mut String,
    uptime_ms: u64,
    address: &str,
    counters: Option<&Counters>,
    dma: Option<&DmaFigures>,
    stats: &ServiceStats,
) {
    let _ = writeln!(out, "moat netdemo");
    let _ = writeln!(
        out,
        "uptime: {}.{:03} s",
        uptime_ms / 1000,
        uptime_ms % 1000
    );
    let _ = writeln!(out, "address: {address}");
    match counters {
        Some(c) => {
            let _ = writeln!(out, "net rx: {} frames, {} bytes", c.rx_frames, c.rx_bytes);
            let _ = writeln!(out, "net tx: {} frames, {} bytes", c.tx_frames, c.tx_bytes);
            let d = &c.rx_drops;
            let _ = writeln!(
                out,
                "net rx drops: truncated {} too_long {} bad_header {} not_for_us {} overrun {}",
                d.truncated, d.too_long, d.bad_header, d.not_for_us, d.overrun
            );
            let _ = writeln!(
                out,
                "net tx drops: bad_length {} no_buffer {}",
                c.tx_drops.bad_length, c.tx_drops.no_buffer
            );
            let _ = writeln!(
                out,
                "net device: bad_used_entries {} ring_faults {} resets {}",
                c.bad_used_entries, c.ring_faults, c.resets
            );
        }
        None => {
            let _ = writeln!(out, "net counters: unavailable");
        }
    }
    let _ = writeln!(
        out,
        "echo: {} connections, {} bytes; http: {} requests",
        stats.echo_connections, stats.echo_bytes, stats.http_requests
    );
    let _ = writeln!(
        out,
        "sink: {} bytes; source: {} bytes",
        stats.sink_bytes, stats.source_bytes
    );
    match dma {
        Some(dma) => {
            let _ = writeln!(out, "\ndmastat:");
            let _ = dmastat::write_summary(out, &dma.stats, &dma.failures);
            let _ = dmastat::write_clients_header(out);
            for client in &dma.clients {
                let _ = dmastat::write_client_row(out, client);
            }
        }
        None => {
            let _ = writeln!(out, "\ndmastat: unavailable (no observer call:dma)");
        }
    }
}

/// Why netdemo released the demo's power-off hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    /// A host client exercised echo and HTTP ([`ServiceStats::visited`]).
    Visited,
    /// Nobody came within [`DemoHold::VISIT_WINDOW_MS`] of getting an address.
    NoVisitor,
    /// No address within [`DemoHold::ADDRESS_WINDOW_MS`] of starting.
    NoAddress,
}

/// When netdemo lets the demo power off: after a host client has exercised the network, or
/// after a window in which nobody came (so a boot without a host client still ends).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DemoHold {
    started_ms: u64,
    address_ms: Option<u64>,
    released: bool,
}

impl DemoHold {
    /// How long after getting an address netdemo waits for a visitor.
    pub const VISIT_WINDOW_MS: u64 = 30_000;
    /// How long netdemo waits for an address.
    pub const ADDRESS_WINDOW_MS: u64 = 60_000;

    /// A hold taken at `now_ms`.
    pub fn new(now_ms: u64) -> DemoHold {
        DemoHold {
            started_ms: now_ms,
            address_ms: None,
            released: false,
        }
    }

    /// Called every poll; returns the reason once, when the hold should be released.
    pub fn poll(
        &mut self,
        now_ms: u64,
        has_address: bool,
        stats: &ServiceStats,
    ) -> Option<Release> {
        if self.released {
            return None;
        }
        if has_address && self.address_ms.is_none() {
            self.address_ms = Some(now_ms);
        }
        let reason = match self.address_ms {
            _ if stats.visited => Some(Release::Visited),
            Some(at) if now_ms.saturating_sub(at) >= Self::VISIT_WINDOW_MS => {
                Some(Release::NoVisitor)
            }
            None if now_ms.saturating_sub(self.started_ms) >= Self::ADDRESS_WINDOW_MS => {
                Some(Release::NoAddress)
            }
            _ => None,
        };
        self.released = reason.is_some();
        reason
    }
}

#[cfg(test)]
mod tests;
