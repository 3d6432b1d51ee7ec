//! The network system (build/system-net.toml) driven from the host: QEMU user networking
//! forwards four free host ports on 127.0.0.1 to netdemo's HTTP (80), echo (7), sink (9) and
//! source (19) services, and plain `std::net` clients check them.
//!
//! `cargo xtask test` runs [`run_tests`] (plain guest at EL1): the status page over HTTP, 16 MiB
//! through the echo service over 4 parallel connections with every byte checked, and the
//! driver killed mid-transfer (`GET /kill?task=<index of "net">`, honoured because netdemo
//! holds `task-control` in this system only) → the supervisor restarts it, netdemo attaches
//! again and new connections work. `cargo xtask bench` runs [`bench`]: 64 MiB guest → host
//! (from the source) and host → guest (into the sink). `cargo xtask run --manifest
//! build/system-net.toml` forwards the same ports ([`Forwards::pick`], printed at boot).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};

use crate::qemu::{self, Mode, Setup};
use crate::system::{self, SystemPaths};
use crate::workspace::Workspace;

/// The network system's manifest, relative to the workspace root.
pub const NET_MANIFEST_PATH: &str = "build/system-net.toml";

/// The line netdemo prints once it has an address (DHCP or the static fallback).
pub const ADDRESS_LINE: &str = "netdemo: address ";

/// The guest ports netdemo serves.
pub const GUEST_HTTP: u16 = 80;
/// Echo.
pub const GUEST_ECHO: u16 = 7;
/// Sink (discard, then `received <count>`).
pub const GUEST_SINK: u16 = 9;
/// Source (a pattern until the peer closes).
pub const GUEST_SOURCE: u16 = 19;

/// Bytes pushed through the echo service by the test, and the connections sharing them.
pub const ECHO_TOTAL: usize = 16 << 20;
/// Parallel echo connections.
pub const ECHO_CONNECTIONS: usize = 4;
/// Bytes each way in the benchmark.
pub const BULK_TOTAL: usize = 64 << 20;

/// Byte `offset` of netdemo's source stream and of what the tests send (netdemo's
/// `source_byte`).
pub fn pattern_byte(offset: u64) -> u8 {
    (offset % 251) as u8
}

/// Host ports on 127.0.0.1 forwarded to the guest's services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwards {
    /// → guest port 80.
    pub http: u16,
    /// → guest port 7.
    pub echo: u16,
    /// → guest port 9.
    pub sink: u16,
    /// → guest port 19.
    pub source: u16,
}

impl Forwards {
    /// Four ports free right now (the OS picks them; QEMU binds them a moment later).
    pub fn pick() -> Result<Forwards> {
        // Held together so the OS gives four different ports.
        let listeners = (0..4)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<std::io::Result<Vec<_>>>()
            .context("finding free host ports")?;
        let port = |i: usize| -> Result<u16> { Ok(listeners[i].local_addr()?.port()) };
        Ok(Forwards {
            http: port(0)?,
            echo: port(1)?,
            sink: port(2)?,
            source: port(3)?,
        })
    }

    /// QEMU's `-netdev` value with these forwards.
    pub fn netdev(&self) -> String {
        format!(
            "user,id=net0,hostfwd=tcp:127.0.0.1:{}-:{GUEST_HTTP},hostfwd=tcp:127.0.0.1:{}-:{GUEST_ECHO},\
             hostfwd=tcp:127.0.0.1:{}-:{GUEST_SINK},hostfwd=tcp:127.0.0.1:{}-:{GUEST_SOURCE}",
            self.http, self.echo, self.sink, self.source
        )
    }

    /// What a user reads at boot.
    pub fn describe(&self) -> String {
        format!(
            "http://127.0.0.1:{}/ (guest :80), echo 127.0.0.1:{} (:7), sink 127.0.0.1:{} (:9), \
             source 127.0.0.1:{} (:19)",
            self.http, self.echo, self.sink, self.source
        )
    }
}

/// `arguments` (from [`qemu::arguments`]) with the user-networking `-netdev` replaced by one
/// forwarding `forwards`.
pub fn with_forwards(mut arguments: Vec<String>, forwards: &Forwards) -> Vec<String> {
    for argument in &mut arguments {
        if argument == "user,id=net0" {
            *argument = forwards.netdev();
        }
    }
    arguments
}

/// A running guest whose console is collected in the background; killed when dropped.
pub struct Guest {
    child: Child,
    log: Arc<Mutex<Vec<u8>>>,
    /// Its host ports.
    pub forwards: Forwards,
}

impl Guest {
    /// Boots `image` as the plain guest at EL1 with `disk` and forwarded ports.
    pub fn start(image: &Path, disk: &Path) -> Result<Guest> {
        Self::start_in(image, disk, Mode::Plain { el2: false })
    }

    /// Boots `image` in `mode` with `disk` and forwarded ports.
    pub fn start_in(image: &Path, disk: &Path, mode: Mode) -> Result<Guest> {
        let forwards = Forwards::pick()?;
        let setup = Setup::Full {
            disk: disk.to_path_buf(),
            mode,
            gdb: false,
            kernel_args: vec![],
        };
        let mut command = Command::new(qemu::QEMU);
        command.args(with_forwards(qemu::arguments(image, &setup), &forwards));
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", qemu::QEMU))?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        // Detached: the threads end when QEMU's pipes close.
        drop(qemu::read_output(&mut child, move |chunk| {
            sink.lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(chunk);
            true
        }));
        Ok(Guest {
            child,
            log,
            forwards,
        })
    }

    /// The console so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// Waits until the console has `count` lines containing `text`.
    pub fn wait_for_count(&mut self, text: &str, count: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().matches(text).count() >= count {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("QEMU exited ({status}) before {text:?} appeared");
            }
            if Instant::now() >= deadline {
                bail!("{text:?} did not appear within {} s", timeout.as_secs());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the console shows `text`.
    pub fn wait_for(&mut self, text: &str, timeout: Duration) -> Result<()> {
        self.wait_for_count(text, 1, timeout)
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        // Ignore errors: QEMU may have exited by itself.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn connect(port: u16) -> Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&local(port), Duration::from_secs(10))
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    stream.set_write_timeout(Some(Duration::from_secs(20)))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// `GET path` over HTTP/1.0: (status code, body).
pub fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    let mut stream = connect(port)?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: moat\r\n\r\n")?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .context("reading the HTTP response")?;
    parse_response(&String::from_utf8_lossy(&response))
}

/// (status code, body) of an HTTP response whose body is exactly its Content-Length.
pub fn parse_response(response: &str) -> Result<(u16, String)> {
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no end of head in {response:?}"))?;
    let status = head
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow!("no status line in {response:?}"))?;
    let length: Option<usize> = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    });
    if let Some(length) = length {
        ensure!(
            body.len() == length,
            "body is {} bytes, Content-Length {length}",
            body.len()
        );
    }
    Ok((status, body.to_string()))
}

/// The figures on netdemo's status page, read back by the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageFigures {
    /// `uptime: S.mmm s`, in milliseconds.
    pub uptime_ms: u64,
    /// `net rx: F frames, B bytes`.
    pub rx_frames: u64,
    /// Received bytes.
    pub rx_bytes: u64,
    /// `net tx: F frames, B bytes`.
    pub tx_frames: u64,
    /// Sent bytes.
    pub tx_bytes: u64,
    /// `echo: C connections, B bytes; ...`: echoed bytes.
    pub echo_bytes: u64,
    /// dmastat's slots row: total, used, high-water, quarantined, grants, clients.
    pub dma_slots: [u64; 6],
    /// Rows of dmastat's client table.
    pub dma_client_rows: usize,
}

/// The whole-number words of the line starting with `prefix`, in order.
fn numbers_on_line(body: &str, prefix: &str) -> Option<Vec<u64>> {
    let line = body.lines().find(|line| line.starts_with(prefix))?;
    Some(
        line[prefix.len()..]
            .split(|c: char| !c.is_ascii_digit() && c != '.')
            .filter(|word| !word.is_empty())
            .filter_map(|word| {
                // `61.005` (uptime) as milliseconds; plain integers as they are.
                match word.split_once('.') {
                    Some((whole, fraction)) if fraction.len() == 3 => {
                        Some(whole.parse::<u64>().ok()? * 1000 + fraction.parse::<u64>().ok()?)
                    }
                    Some(_) => None,
                    None => word.parse().ok(),
                }
            })
            .collect(),
    )
}

/// Reads the status page's figures; an error names what is missing or malformed.
pub fn parse_status_page(body: &str) -> Result<PageFigures> {
    ensure!(body.starts_with("moat netdemo\n"), "not netdemo's page");
    ensure!(
        body.contains("\naddress: 10.0.2.15/"),
        "the page shows no address 10.0.2.15"
    );
    let pair = |prefix: &str| -> Result<(u64, u64)> {
        match numbers_on_line(body, prefix).as_deref() {
            Some([a, b, ..]) => Ok((*a, *b)),
            _ => bail!("no `{prefix}<n> ... <n>` line"),
        }
    };
    let uptime_ms = match numbers_on_line(body, "uptime: ").as_deref() {
        Some([ms]) => *ms,
        _ => bail!("no `uptime: S.mmm s` line"),
    };
    let (rx_frames, rx_bytes) = pair("net rx: ")?;
    let (tx_frames, tx_bytes) = pair("net tx: ")?;
    let (_, echo_bytes) = pair("echo: ")?;
    ensure!(
        body.contains("\ndmastat:\nDMA pool: "),
        "no dmastat figures (`dmastat:` and `DMA pool:` lines)"
    );
    let mut lines = body.lines().skip_while(|line| !line.contains("high-water"));
    lines.next();
    let slots: Vec<u64> = lines
        .next()
        .map(|row| {
            row.split_whitespace()
                .filter_map(|word| word.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let dma_slots: [u64; 6] = slots
        .try_into()
        .map_err(|row| anyhow!("dmastat's slots row is not six numbers: {row:?}"))?;
    let dma_client_rows = body
        .lines()
        .skip_while(|line| !line.trim_start().starts_with("client "))
        .skip(1)
        .take_while(|line| {
            line.split_whitespace()
                .next()
                .is_some_and(|word| word.parse::<u64>().is_ok())
        })
        .count();
    Ok(PageFigures {
        uptime_ms,
        rx_frames,
        rx_bytes,
        tx_frames,
        tx_bytes,
        echo_bytes,
        dma_slots,
        dma_client_rows,
    })
}

/// What the status page must show — uptime, the net counters and dmastat's figures, all
/// plausible — with at least `echoed` bytes echoed: problems, empty if none.
pub fn check_status_page(body: &str, echoed: u64) -> Vec<String> {
    let figures = match parse_status_page(body) {
        Ok(figures) => figures,
        Err(error) => return vec![format!("the status page: {error:#}")],
    };
    let mut problems = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            problems.push(format!("the status page: {what}"));
        }
    };
    check(figures.uptime_ms > 0, "uptime is 0".into());
    // Every frame is at least an Ethernet header; the request we sent arrived, the page left.
    for (name, frames, bytes) in [
        ("rx", figures.rx_frames, figures.rx_bytes),
        ("tx", figures.tx_frames, figures.tx_bytes),
    ] {
        check(
            frames > 0 && bytes >= frames * 14 && bytes <= frames * 1514,
            format!("net {name}: {frames} frames, {bytes} bytes is not plausible"),
        );
    }
    check(
        figures.rx_bytes >= echoed && figures.tx_bytes >= echoed,
        format!(
            "{echoed} bytes were echoed, but the counters show rx {} / tx {} bytes",
            figures.rx_bytes, figures.tx_bytes
        ),
    );
    check(
        figures.echo_bytes >= echoed,
        format!(
            "echo shows {} bytes, at least {echoed} were echoed",
            figures.echo_bytes
        ),
    );
    let [total, used, high_water, quarantined, _grants, clients] = figures.dma_slots;
    check(
        total > 0 && used <= high_water && high_water <= total && quarantined <= total,
        format!("dmastat slots {:?} are not plausible", figures.dma_slots),
    );
    // The network driver at least; the default system also has the block driver.
    check(
        clients >= 1 && figures.dma_client_rows as u64 == clients,
        format!(
            "dmastat counts {clients} clients but lists {} rows",
            figures.dma_client_rows
        ),
    );
    problems
}

/// What a host client saw of netdemo ([`visit`]).
#[derive(Debug, Clone)]
pub struct Visit {
    /// Bytes echoed.
    pub echoed: usize,
    /// How long the echo took.
    pub echo_time: Duration,
    /// The status page's body, fetched after the echo.
    pub page: String,
    /// Its figures.
    pub figures: PageFigures,
}

impl Visit {
    /// One line for logs.
    pub fn summary(&self, http: u16) -> String {
        format!(
            "echoed {} KiB in {:.2} s; GET http://127.0.0.1:{http}/ -> 200, {} bytes: uptime {:.3} s, net rx {} frames / tx {} frames, DMA {} of {} slots used by {} clients",
            self.echoed / 1024,
            self.echo_time.as_secs_f64(),
            self.page.len(),
            self.figures.uptime_ms as f64 / 1000.0,
            self.figures.rx_frames,
            self.figures.tx_frames,
            self.figures.dma_slots[1],
            self.figures.dma_slots[0],
            self.figures.dma_slots[5],
        )
    }
}

/// Bytes a [`visit`] echoes.
pub const VISIT_ECHO: usize = 1 << 20;

/// What `cargo xtask run` and the default system's boot tests do once netdemo has its address:
/// `echoed` pattern bytes through the echo service (every byte checked), then one `GET /`
/// whose page must show uptime, the net counters, dmastat's figures and the echo (netdemo
/// then releases the demo's power-off, so there is no second chance).
pub fn visit(forwards: &Forwards, echoed: usize) -> Result<Visit> {
    // The listeners open with the first poll after the address; retry a refused connection.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(10);
    loop {
        match echo_one(forwards.echo, 0, echoed, None) {
            Ok(()) => break,
            Err(error) if Instant::now() >= deadline => return Err(error.context("echo")),
            Err(_) => thread::sleep(Duration::from_millis(200)),
        }
    }
    let echo_time = started.elapsed();
    let (status, page) = http_get(forwards.http, "/")?;
    ensure!(status == 200, "GET / answered {status}: {page:?}");
    let problems = check_status_page(&page, echoed as u64);
    ensure!(problems.is_empty(), "{}\n{page}", problems.join("; "));
    let figures = parse_status_page(&page)?;
    Ok(Visit {
        echoed,
        echo_time,
        page,
        figures,
    })
}

/// Sends `length` pattern bytes starting at stream offset `start` through the echo service
/// on one connection and checks every byte that comes back. With `progress`, counts echoed
/// bytes as they arrive.
fn echo_one(
    port: u16,
    start: u64,
    length: usize,
    progress: Option<Arc<Mutex<usize>>>,
) -> Result<()> {
    let stream = connect(port)?;
    let mut writer = stream.try_clone()?;
    let sender = thread::spawn(move || -> std::io::Result<()> {
        let mut offset = 0;
        let mut chunk = vec![0u8; 32 * 1024];
        while offset < length {
            let take = chunk.len().min(length - offset);
            for (i, byte) in chunk[..take].iter_mut().enumerate() {
                *byte = pattern_byte(start + (offset + i) as u64);
            }
            writer.write_all(&chunk[..take])?;
            offset += take;
        }
        Ok(())
    });
    let mut reader = stream;
    let mut received = 0;
    let mut buffer = vec![0u8; 64 * 1024];
    while received < length {
        let count = reader
            .read(&mut buffer)
            .with_context(|| format!("echo: reading after {received} of {length} bytes"))?;
        ensure!(count > 0, "echo: closed after {received} of {length} bytes");
        for (i, &byte) in buffer[..count].iter().enumerate() {
            let offset = received + i;
            let expected = pattern_byte(start + offset as u64);
            ensure!(
                byte == expected,
                "echo: byte {offset} is {byte:#04x}, sent {expected:#04x}"
            );
        }
        received += count;
        if let Some(progress) = &progress {
            *progress.lock().unwrap_or_else(|e| e.into_inner()) = received;
        }
    }
    sender
        .join()
        .map_err(|_| anyhow!("echo sender panicked"))?
        .context("echo: sending")?;
    let _ = reader.shutdown(Shutdown::Both);
    Ok(())
}

/// `total` bytes through the echo service over `connections` parallel connections.
pub fn echo_parallel(port: u16, total: usize, connections: usize) -> Result<Duration> {
    let each = total / connections;
    let started = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|i| thread::spawn(move || echo_one(port, (i * each) as u64, each, None)))
        .collect();
    for (i, worker) in workers.into_iter().enumerate() {
        worker
            .join()
            .map_err(|_| anyhow!("echo connection {i} panicked"))?
            .with_context(|| format!("echo connection {i}"))?;
    }
    Ok(started.elapsed())
}

/// Waits (up to 10 s) until a small echo round trip works: listeners closed by earlier
/// connections are open again.
fn ready_for_echo(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match echo_one(port, 0, 1024, None) {
            Ok(()) => return Ok(()),
            Err(error) if Instant::now() >= deadline => return Err(error),
            Err(_) => thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// `GET /` until the page shows the driver's counters (netdemo refreshes them every second),
/// at most 10 s: (status, body) of the last answer.
fn status_page(port: u16) -> Result<(u16, String)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = http_get(port, "/")?;
        if (status == 200 && check_status_page(&body, 0).is_empty()) || Instant::now() >= deadline {
            return Ok((status, body));
        }
        thread::sleep(Duration::from_millis(500));
    }
}

/// The manifest index of the task named `name` in the network system.
fn task_index(workspace: &Workspace, name: &str) -> Result<usize> {
    let paths = SystemPaths::other_system(workspace, &workspace.root.join(NET_MANIFEST_PATH));
    system::load_manifest(&paths)?
        .tasks
        .iter()
        .position(|task| task.name == name)
        .ok_or_else(|| anyhow!("{NET_MANIFEST_PATH} has no task {name:?}"))
}

/// Kills the driver while an echo transfer runs, then checks it was restarted and that new
/// connections work. Returns a note on how the interrupted transfer ended.
fn kill_driver_test(guest: &mut Guest, driver: usize) -> Result<String> {
    let echo = guest.forwards.echo;
    // The echo listeners re-open once the previous test's connections have closed.
    ready_for_echo(echo)?;
    let progress = Arc::new(Mutex::new(0usize));
    let transfer = {
        let progress = Arc::clone(&progress);
        thread::spawn(move || echo_one(echo, 0, 8 << 20, Some(progress)))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while *progress.lock().unwrap_or_else(|e| e.into_inner()) < (1 << 20) {
        ensure!(
            Instant::now() < deadline,
            "the transfer did not reach 1 MiB"
        );
        if transfer.is_finished() {
            let outcome = transfer
                .join()
                .map_err(|_| anyhow!("the transfer panicked"))?;
            bail!("the transfer ended before 1 MiB: {outcome:?}");
        }
        thread::sleep(Duration::from_millis(5));
    }
    let at = *progress.lock().unwrap_or_else(|e| e.into_inner());
    let (status, body) = http_get(guest.forwards.http, &format!("/kill?task={driver}"))?;
    ensure!(status == 202, "/kill answered {status}: {body:?}");
    guest.wait_for(
        &format!("restarted task {driver} as"),
        Duration::from_secs(20),
    )?;
    guest.wait_for(
        "driver restarted: frame region attached again",
        Duration::from_secs(20),
    )?;
    let interrupted = match transfer.join() {
        Ok(Ok(())) => {
            format!("the transfer running at the kill ({at} bytes echoed) completed intact")
        }
        Ok(Err(error)) => {
            format!("the transfer running at the kill ({at} bytes echoed) failed: {error:#}")
        }
        Err(_) => "the transfer running at the kill panicked".into(),
    };
    let (status, body) = status_page(guest.forwards.http)?;
    ensure!(status == 200, "after the restart: status {status}");
    let problems = check_status_page(&body, 0);
    ensure!(problems.is_empty(), "after the restart: {problems:?}");
    ready_for_echo(echo).context("echo after the restart")?;
    echo_parallel(echo, 2 << 20, 2).context("echo after the restart")?;
    Ok(interrupted)
}

/// Boots the network system and runs the host-side checks; returns (name, passed) per check
/// for the summary. The console log is saved to `<log_dir>/net.log`.
pub fn run_tests(
    workspace: &Workspace,
    image: &Path,
    log_dir: &Path,
) -> Result<Vec<(String, bool)>> {
    std::fs::create_dir_all(log_dir)?;
    let disk = log_dir.join("disk-net.img");
    crate::workspace::ensure_disk(&disk)?;
    let driver = task_index(workspace, "net")?;
    let mut guest = Guest::start(image, &disk)?;
    println!("net test: forwarding {}", guest.forwards.describe());
    let mut results = Vec::new();
    let mut record = |name: &str, outcome: Result<String>| {
        match &outcome {
            Ok(note) => println!(
                "net test {name}: PASS{}",
                if note.is_empty() {
                    String::new()
                } else {
                    format!(" ({note})")
                }
            ),
            Err(error) => println!("net test {name}: FAIL: {error:#}"),
        }
        results.push((format!("net test {name}"), outcome.is_ok()));
        outcome.is_ok()
    };
    let up = guest.wait_for(ADDRESS_LINE, Duration::from_secs(60));
    let up = up.map(|()| {
        guest
            .log()
            .lines()
            .find(|line| line.contains(ADDRESS_LINE))
            .unwrap_or_default()
            .trim()
            .to_string()
    });
    if record("address", up) {
        let http = guest.forwards.http;
        record(
            "http-status-page",
            status_page(http).and_then(|(status, body)| {
                ensure!(status == 200, "status {status}: {body:?}");
                let problems = check_status_page(&body, 0);
                ensure!(problems.is_empty(), "{problems:?}\n{body}");
                Ok(format!("{} bytes", body.len()))
            }),
        );
        record(
            "echo-16MiB-4-connections",
            echo_parallel(guest.forwards.echo, ECHO_TOTAL, ECHO_CONNECTIONS).map(|elapsed| {
                format!(
                    "{:.1} s, {:.2} MB/s each way",
                    elapsed.as_secs_f64(),
                    ECHO_TOTAL as f64 / elapsed.as_secs_f64() / 1e6
                )
            }),
        );
        record(
            "kill-driver-mid-transfer",
            kill_driver_test(&mut guest, driver),
        );
    }
    let log_path = log_dir.join("net.log");
    std::fs::write(&log_path, guest.log())
        .with_context(|| format!("writing {}", log_path.display()))?;
    if results.iter().any(|(_, passed)| !passed) {
        println!("net test console log: {}", log_path.display());
    }
    Ok(results)
}

/// 64 MiB host → guest into the sink: MB/s (10^6 bytes per second).
fn bulk_rx(port: u16, total: usize) -> Result<f64> {
    let mut stream = connect(port)?;
    let chunk: Vec<u8> = (0..64 * 1024).map(|i| pattern_byte(i as u64)).collect();
    let started = Instant::now();
    let mut sent = 0;
    while sent < total {
        let take = chunk.len().min(total - sent);
        stream.write_all(&chunk[..take])?;
        sent += take;
    }
    stream.shutdown(Shutdown::Write)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let elapsed = started.elapsed();
    ensure!(
        answer.trim() == format!("received {total}"),
        "the sink answered {answer:?}"
    );
    Ok(total as f64 / elapsed.as_secs_f64() / 1e6)
}

/// 64 MiB guest → host from the source, every byte checked: MB/s.
fn bulk_tx(port: u16, total: usize) -> Result<f64> {
    let mut stream = connect(port)?;
    let mut buffer = vec![0u8; 256 * 1024];
    let mut received = 0;
    let started = Instant::now();
    while received < total {
        let take = buffer.len().min(total - received);
        let count = stream.read(&mut buffer[..take])?;
        ensure!(count > 0, "the source closed after {received} bytes");
        for (i, &byte) in buffer[..count].iter().enumerate() {
            ensure!(
                byte == pattern_byte((received + i) as u64),
                "source byte {} wrong",
                received + i
            );
        }
        received += count;
    }
    let elapsed = started.elapsed();
    let _ = stream.shutdown(Shutdown::Both);
    Ok(total as f64 / elapsed.as_secs_f64() / 1e6)
}

/// `<prefix>net_tcp_tx_MBps` (guest → host) and `<prefix>net_tcp_rx_MBps` (host → guest),
/// 64 MiB each, with the guest booted in `mode` (`prefix` is `realm_` for a Realm).
pub fn bench(image: &Path, disk: &Path, mode: Mode, prefix: &str) -> Result<Vec<(String, f64)>> {
    let mut guest = Guest::start_in(image, disk, mode)?;
    guest.wait_for(ADDRESS_LINE, Duration::from_secs(90))?;
    let tx = bulk_tx(guest.forwards.source, BULK_TOTAL).context("guest -> host")?;
    let rx = bulk_rx(guest.forwards.sink, BULK_TOTAL).context("host -> guest")?;
    Ok(vec![
        (format!("{prefix}net_tcp_tx_MBps"), tx),
        (format!("{prefix}net_tcp_rx_MBps"), rx),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_replace_the_plain_user_netdev() {
        let forwards = Forwards {
            http: 1000,
            echo: 1001,
            sink: 1002,
            source: 1003,
        };
        let setup = Setup::Full {
            disk: "/d".into(),
            mode: Mode::Plain { el2: false },
            gdb: false,
            kernel_args: vec![],
        };
        let arguments = with_forwards(qemu::arguments(Path::new("I"), &setup), &forwards);
        let netdev = arguments
            .iter()
            .position(|a| a == "-netdev")
            .map(|i| arguments[i + 1].clone())
            .expect("a -netdev");
        assert_eq!(
            netdev,
            "user,id=net0,hostfwd=tcp:127.0.0.1:1000-:80,hostfwd=tcp:127.0.0.1:1001-:7,\
             hostfwd=tcp:127.0.0.1:1002-:9,hostfwd=tcp:127.0.0.1:1003-:19"
        );
        assert!(!arguments.contains(&"user,id=net0".to_string()));
    }

    #[test]
    fn picked_ports_differ() {
        let f = Forwards::pick().expect("ports");
        let mut ports = [f.http, f.echo, f.sink, f.source];
        ports.sort_unstable();
        assert!(ports.windows(2).all(|w| w[0] != w[1]), "{ports:?}");
    }

    /// A page as netdemo serves it in the default system (after a 5000-byte echo).
    const PAGE: &str = "moat netdemo
uptime: 7.786 s
address: 10.0.2.15/24
net rx: 8 frames, 6597 bytes
net tx: 6 frames, 6945 bytes
net rx drops: truncated 0 too_long 0 bad_header 0 not_for_us 0 overrun 0
net tx drops: bad_length 0 no_buffer 0
net device: bad_used_entries 0 ring_faults 0 resets 0
echo: 1 connections, 5000 bytes; http: 1 requests
sink: 0 bytes; source: 0 bytes

dmastat:
DMA pool: 7.0 MiB shared of 7.0 MiB budget, 3584 slots of 2.0 KiB, max mapping 256.0 KiB, bookkeeping 5.2 KiB
     slots       used  high-water quarantine   grants  clients
      3584        471         471          0       77        2
      maps     unmaps    coherent  to device from dev   events
        74          0           3  477.7 KiB 391.7 KiB       77
failures: 0
client   instance     window grants    granted  used  quar reset  to device   from dev  fail
     4        0x3    6.0 MiB     42  826.7 KiB   436     0     -  476.2 KiB  344.0 KiB     0
     6        0x5    1.0 MiB     35   50.8 KiB    35     0     -    1.5 KiB   47.7 KiB     0
";

    #[test]
    fn parses_responses_and_checks_the_page() {
        let response = format!(
            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{PAGE}",
            PAGE.len()
        );
        let (status, body) = parse_response(&response).expect("parses");
        assert_eq!(status, 200);
        let figures = parse_status_page(&body).expect("figures");
        assert_eq!(
            figures,
            PageFigures {
                uptime_ms: 7786,
                rx_frames: 8,
                rx_bytes: 6597,
                tx_frames: 6,
                tx_bytes: 6945,
                echo_bytes: 5000,
                dma_slots: [3584, 471, 471, 0, 77, 2],
                dma_client_rows: 2,
            }
        );
        assert_eq!(check_status_page(&body, 5000), Vec::<String>::new());
        assert!(parse_response("HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\nshort").is_err());
        assert!(parse_response("garbage").is_err());
    }

    #[test]
    fn implausible_or_missing_figures_fail_the_page() {
        // Less echoed than we sent.
        assert_eq!(check_status_page(PAGE, 6000).len(), 1);
        // Each part missing or wrong.
        for (from, to) in [
            ("uptime: 7.786 s", "uptime: soon"),
            ("uptime: 7.786 s", "uptime: 0.000 s"),
            ("net rx: 8 frames, 6597 bytes", "net rx: 0 frames, 0 bytes"),
            (
                "net tx: 6 frames, 6945 bytes",
                "net tx: 6 frames, 99999 bytes",
            ),
            ("\ndmastat:\n", "\n"),
            (
                "        471          0       77        2",
                "        471          0       77",
            ),
            (
                "      3584        471         471",
                "      3584        471         400",
            ),
            ("     6        0x5", "     x        0x5"),
            ("address: 10.0.2.15/24", "address: none"),
        ] {
            assert!(PAGE.contains(from), "{from}");
            let page = PAGE.replace(from, to);
            assert!(
                !check_status_page(&page, 0).is_empty(),
                "{from} -> {to} passed"
            );
        }
        assert!(check_status_page(PAGE, 0).is_empty());
        assert!(!check_status_page("moat netdemo\n", 0).is_empty());
    }

    #[test]
    fn the_pattern_matches_netdemo() {
        assert_eq!(pattern_byte(0), 0);
        assert_eq!(pattern_byte(250), 250);
        assert_eq!(pattern_byte(251), 0);
    }
}
