//! netdemo: a TCP echo service (port 7) and a small HTTP status page (port 80) on the Moat
//! network stack. The services are state machines over `smoltcp` sockets, host-tested with two
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

use moat_net::Link;
use moat_net::Stack;
use moat_net::smoltcp::iface::SocketHandle;
use moat_net::smoltcp::socket::tcp;
use moat_net_api::Counters;

/// The echo service's port.
pub const ECHO_PORT: u16 = 7;
/// The HTTP service's port.
pub const HTTP_PORT: u16 = 80;
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
}

struct HttpConnection {
    handle: SocketHandle,
    request: Vec<u8>,
    answered: bool,
}

/// The echo and HTTP services on one stack.
pub struct Services {
    echo: Vec<(SocketHandle, bool)>,
    http: Vec<HttpConnection>,
    stats: ServiceStats,
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
                })
                .collect(),
            stats: ServiceStats::default(),
        }
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
        for connection in &mut self.http {
            let socket = sockets.get_mut::<tcp::Socket<'_>>(connection.handle);
            if !socket.is_open() {
                connection.request.clear();
                connection.answered = false;
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
            let response = respond(&connection.request, complete, &self.stats, &page);
            let _ = socket.send_slice(response.as_bytes());
            socket.close();
            connection.answered = true;
            self.stats.http_requests += 1;
            progress = true;
        }
        progress
    }
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
    } else if line.starts_with(b"GET / ") || line.starts_with(b"GET /status ") {
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

/// The status page body: uptime, address, the driver's counters and the services' figures.
pub fn status_page(
    out: &mut String,
    uptime_ms: u64,
    address: &str,
    counters: Option<&Counters>,
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
}

#[cfg(test)]
mod tests;
