//! `hawser-test-server`: what the end-to-end tests run inside pods.
//!
//! `hawser-test-server [--listen ADDR] [--alloc-mb N]` serves HTTP/1.0 on
//! ADDR (default `0.0.0.0:8080`, or `0.0.0.0:$PORT`), one thread per
//! connection:
//!
//! | path | answer |
//! |---|---|
//! | `/` | the pod's name (`$POD_NAME`, else the hostname) and a newline |
//! | `/source` | the client's address as this server sees it |
//! | `/healthz`, `/ready` | 200 or 500/503, as set by `/set` |
//! | `/set?healthy=false&ready=true` | changes either verdict |
//! | `/env/NAME` | the value of environment variable NAME (404 when unset) |
//! | `/file?path=P` | the contents of file P |
//! | `/alloc?mb=N` | allocates and touches N MiB, kept until exit |
//! | `/exit?code=N` | exits with code N after answering |
//! | `/stream?seconds=S` | a line `tick N` every 100 ms for S seconds, on one connection |
//!
//! It also answers UDP on the same address: every datagram gets the pod's
//! name back.
//!
//! `--alloc-mb N` allocates at start, before listening (the OOM test).
//!
//! The clients (only IP addresses, never names: the tests never resolve
//! anything through them):
//! - `fetch URL [--count N]`: prints the body of `GET http://IP:PORT/path`
//!   (N times, each on a new connection, one body per line); exit 1 on a
//!   non-2xx answer, 2 on an error, which goes to stderr with the time it
//!   took (a refused connect fails in microseconds, a dropped one times out).
//! - `loop URL --seconds S`: new connections one after another for S
//!   seconds; prints `ok N failed M` and exits 1 if any failed.
//! - `udp IP:PORT [--count N] [--interval-ms I] [--source-port P]`: sends N
//!   datagrams from one socket (so one conntrack entry) and prints each
//!   answer, or `-` when none came within a second.
//! - `stream URL --seconds S`: reads `/stream?seconds=S` from URL's
//!   server on one connection; prints `ticks N max_gap_ms G` and exits 1
//!   if the stream broke or fell short (an established connection that
//!   must survive whatever the test does meanwhile).
//! - `bench URL --seconds S [--concurrency C]`: the proxy benchmark's load
//!   generator (`cargo xtask bench proxy`). C threads each open a new
//!   connection, `GET` URL and read the answer to its end, one after
//!   another, for S seconds (a closed loop: the rate is what the path
//!   sustains), ending each with a reset once the answer is read, so no
//!   TIME_WAIT is left at the server to meet the next measurement. Prints
//!   one line, `connections N failed M seconds T per_second R p50_us A
//!   p99_us B max_us C`, with the latency of each
//!   successful connection from `connect` to the end of the answer
//!   (nearest-rank percentiles); exits 1 if none succeeded.
//!
//! std only, no dependencies: the Docker runtime's tests copy it statically
//! linked into a `FROM scratch` image.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use std::{env, fs, process, thread};

#[derive(Default)]
struct Flags {
    unhealthy: AtomicBool,
    unready: AtomicBool,
    held: Mutex<Vec<Vec<u8>>>,
}

fn main() {
    let args: Vec<String> = env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("fetch") => return fetch_command(&args[1..]),
        Some("loop") => return loop_command(&args[1..]),
        Some("udp") => return udp_command(&args[1..]),
        Some("bench") => return bench_command(&args[1..]),
        Some("stream") => return stream_command(&args[1..]),
        _ => {}
    }
    let mut listen = env::var("PORT").map(|p| format!("0.0.0.0:{p}")).unwrap_or_else(|_| "0.0.0.0:8080".into());
    let flags = Arc::new(Flags::default());
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--listen" => listen = rest.next().cloned().unwrap_or_else(|| fail("--listen needs ADDR")),
            "--alloc-mb" => {
                let mb = rest.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| fail("--alloc-mb needs a number"));
                flags.held.lock().unwrap().push(allocate(mb));
            }
            other => fail(&format!("unknown argument {other:?}")),
        }
    }
    let listener = TcpListener::bind(&listen).unwrap_or_else(|e| fail(&format!("listening on {listen}: {e}")));
    let udp = UdpSocket::bind(&listen).unwrap_or_else(|e| fail(&format!("listening on {listen}/udp: {e}")));
    thread::spawn(move || serve_udp(udp));
    eprintln!("hawser-test-server: serving on {listen}");
    for stream in listener.incoming().flatten() {
        let flags = flags.clone();
        thread::spawn(move || {
            let peer = stream.peer_addr().ok();
            let _ = serve(stream, peer, &flags);
        });
    }
}

fn fail(message: &str) -> ! {
    eprintln!("hawser-test-server: {message}");
    process::exit(2)
}

fn pod_name() -> String {
    env::var("POD_NAME").ok().or_else(|| fs::read_to_string("/etc/hostname").ok()).map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Allocates `mb` MiB and writes every page, so it is really resident.
fn allocate(mb: usize) -> Vec<u8> {
    let mut block = vec![0u8; mb << 20];
    for page in block.chunks_mut(4096) {
        page[0] = 1;
    }
    block
}

fn query<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == key).map(|(_, v)| v)
}

fn serve(stream: TcpStream, peer: Option<SocketAddr>, flags: &Flags) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(&stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Headers are read and ignored: every request is a bodiless GET.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("/");
    let (path, q) = target.split_once('?').unwrap_or((target, ""));
    if path == "/stream" {
        let seconds: u64 = query(q, "seconds").and_then(|v| v.parse().ok()).unwrap_or(10);
        let mut out = &stream;
        write!(out, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n")?;
        for tick in 0..seconds * 10 {
            writeln!(out, "tick {tick}")?;
            out.flush()?;
            thread::sleep(Duration::from_millis(100));
        }
        return Ok(());
    }
    let (status, body, exit) = answer(path, q, peer, flags);
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Bad Request",
    };
    let mut out = &stream;
    write!(
        out,
        "HTTP/1.0 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    out.flush()?;
    if let Some(code) = exit {
        process::exit(code);
    }
    Ok(())
}

fn answer(path: &str, q: &str, peer: Option<SocketAddr>, flags: &Flags) -> (u16, String, Option<i32>) {
    let verdict =
        |bad: &AtomicBool, code: u16| if bad.load(Ordering::SeqCst) { (code, "no\n".into(), None) } else { (200, "ok\n".into(), None) };
    match path {
        "/" => (200, format!("{}\n", pod_name()), None),
        "/source" => (200, format!("{}\n", peer.map(|p| p.to_string()).unwrap_or_default()), None),
        "/healthz" => verdict(&flags.unhealthy, 500),
        "/ready" => verdict(&flags.unready, 503),
        "/set" => {
            if let Some(v) = query(q, "healthy") {
                flags.unhealthy.store(v == "false", Ordering::SeqCst);
            }
            if let Some(v) = query(q, "ready") {
                flags.unready.store(v == "false", Ordering::SeqCst);
            }
            (200, "set\n".into(), None)
        }
        "/alloc" => match query(q, "mb").and_then(|v| v.parse().ok()) {
            Some(mb) => {
                flags.held.lock().unwrap().push(allocate(mb));
                (200, format!("allocated {mb} MiB\n"), None)
            }
            None => (400, "mb=N needed\n".into(), None),
        },
        "/exit" => {
            let code = query(q, "code").and_then(|v| v.parse().ok()).unwrap_or(0);
            (200, format!("exiting with {code}\n"), Some(code))
        }
        "/file" => match query(q, "path").map(fs::read_to_string) {
            Some(Ok(text)) => (200, text, None),
            Some(Err(e)) => (404, format!("{e}\n"), None),
            None => (400, "path=P needed\n".into(), None),
        },
        _ => match path.strip_prefix("/env/").map(env::var) {
            Some(Ok(value)) => (200, format!("{value}\n"), None),
            Some(Err(_)) => (404, "unset\n".into(), None),
            None => (404, "not found\n".into(), None),
        },
    }
}

fn serve_udp(socket: UdpSocket) {
    let mut buf = [0u8; 1500];
    while let Ok((_, peer)) = socket.recv_from(&mut buf) {
        let _ = socket.send_to(pod_name().as_bytes(), peer);
    }
}

/// `--name VALUE` from `args`, parsed, else `default`.
fn option<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    match args.iter().position(|a| a == name) {
        Some(i) => args.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or_else(|| fail(&format!("{name} needs a value"))),
        None => default,
    }
}

fn fetch_command(args: &[String]) {
    let Some(url) = args.first() else { fail("usage: hawser-test-server fetch http://IP:PORT/PATH [--count N]") };
    let count: usize = option(args, "--count", 1);
    // 2 if any request failed, else 1 if any answer was not 2xx.
    let mut exit = 0;
    for _ in 0..count {
        let started = Instant::now();
        match fetch(url) {
            Ok((status, body)) => {
                print!("{body}");
                if !(200..300).contains(&status) {
                    exit = exit.max(1);
                }
            }
            Err(e) => {
                eprintln!("hawser-test-server: fetch {url}: {e} (after {} ms)", started.elapsed().as_millis());
                exit = 2;
            }
        }
    }
    if exit != 0 {
        process::exit(exit)
    }
}

fn loop_command(args: &[String]) {
    let Some(url) = args.first() else { fail("usage: hawser-test-server loop http://IP:PORT/PATH --seconds S") };
    let seconds: u64 = option(args, "--seconds", 10);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (mut ok, mut failed) = (0u64, 0u64);
    while Instant::now() < deadline {
        match fetch(url) {
            Ok((200..=299, _)) => ok += 1,
            Ok((status, _)) => {
                eprintln!("{} status {status}", unix_time());
                failed += 1;
            }
            Err(e) => {
                eprintln!("{} {e}", unix_time());
                failed += 1;
            }
        }
    }
    println!("ok {ok} failed {failed}");
    if failed > 0 {
        process::exit(1)
    }
}

fn stream_command(args: &[String]) {
    let Some(url) = args.first() else { fail("usage: hawser-test-server stream http://IP:PORT --seconds S") };
    let seconds: u64 = option(args, "--seconds", 10);
    let authority = url.strip_prefix("http://").unwrap_or(url).trim_end_matches('/');
    let addr: SocketAddr = authority.parse().unwrap_or_else(|e| fail(&format!("{authority}: {e} (an IP:PORT is needed)")));
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap_or_else(|e| fail(&format!("connecting to {addr}: {e}")));
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap_or_else(|e| fail(&e.to_string()));
    let mut out = &stream;
    write!(out, "GET /stream?seconds={seconds} HTTP/1.0\r\nHost: {authority}\r\n\r\n").unwrap_or_else(|e| fail(&e.to_string()));
    let (mut ticks, mut max_gap, mut last) = (0u64, Duration::ZERO, Instant::now());
    let mut error = None;
    for line in BufReader::new(&stream).lines() {
        match line {
            Ok(line) if line.starts_with("tick ") => {
                ticks += 1;
                max_gap = max_gap.max(last.elapsed());
                last = Instant::now();
            }
            Ok(_) => {}
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    println!("ticks {ticks} max_gap_ms {}", max_gap.as_millis());
    if let Some(e) = error {
        fail(&format!("the stream from {addr} broke after {ticks} ticks: {e}"));
    }
    if ticks < seconds * 10 {
        fail(&format!("the stream from {addr} ended after {ticks} of {} ticks", seconds * 10));
    }
}

fn bench_command(args: &[String]) {
    let Some(url) = args.first().cloned() else {
        fail("usage: hawser-test-server bench http://IP:PORT/PATH --seconds S [--concurrency C]")
    };
    let seconds: f64 = option(args, "--seconds", 5.0);
    let concurrency: usize = option(args, "--concurrency", 4);
    if concurrency == 0 || seconds <= 0.0 {
        fail("--seconds and --concurrency must be positive");
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let url = url.clone();
            thread::spawn(move || {
                // Microseconds per successful connection; failures counted.
                let (mut latencies, mut failed, mut first_error) = (Vec::<u64>::new(), 0u64, None::<String>);
                while Instant::now() < deadline {
                    let began = Instant::now();
                    match fetch_with(&url, true) {
                        Ok((200..=299, _)) => latencies.push(began.elapsed().as_micros() as u64),
                        Ok((status, _)) => {
                            failed += 1;
                            first_error.get_or_insert(format!("status {status}"));
                        }
                        Err(e) => {
                            failed += 1;
                            first_error.get_or_insert(e);
                        }
                    }
                }
                (latencies, failed, first_error)
            })
        })
        .collect();
    let (mut latencies, mut failed, mut first_error) = (Vec::new(), 0u64, None);
    for worker in workers {
        let (l, f, e) = worker.join().unwrap_or_else(|_| fail("a load thread panicked"));
        latencies.extend(l);
        failed += f;
        first_error = first_error.or(e);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let rank = |p: f64| -> u64 {
        if latencies.is_empty() {
            return 0;
        }
        let r = ((p / 100.0) * latencies.len() as f64).ceil() as usize;
        latencies[r.clamp(1, latencies.len()) - 1]
    };
    println!(
        "connections {} failed {failed} seconds {elapsed:.3} per_second {:.1} p50_us {} p99_us {} max_us {}",
        latencies.len(),
        latencies.len() as f64 / elapsed,
        rank(50.0),
        rank(99.0),
        latencies.last().copied().unwrap_or(0)
    );
    if let Some(e) = first_error {
        eprintln!("hawser-test-server: bench {url}: {failed} failed, first: {e}");
    }
    if latencies.is_empty() {
        process::exit(1)
    }
}

/// Seconds since the epoch, to line failures up with other logs.
fn unix_time() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:06}", now.as_secs(), now.subsec_micros())
}

fn udp_command(args: &[String]) {
    let Some(target) = args.first() else { fail("usage: hawser-test-server udp IP:PORT [--count N] [--interval-ms I] [--source-port P]") };
    let target: SocketAddr = target.parse().unwrap_or_else(|e| fail(&format!("{target}: {e}")));
    let count: usize = option(args, "--count", 1);
    let interval = Duration::from_millis(option(args, "--interval-ms", 100));
    let source_port: u16 = option(args, "--source-port", 0);
    let socket = UdpSocket::bind(("0.0.0.0", source_port)).unwrap_or_else(|e| fail(&format!("binding port {source_port}: {e}")));
    socket.set_read_timeout(Some(Duration::from_secs(1))).unwrap_or_else(|e| fail(&e.to_string()));
    let mut buf = [0u8; 1500];
    for i in 0..count {
        if i > 0 {
            thread::sleep(interval);
        }
        let _ = socket.send_to(b"ping", target);
        match socket.recv(&mut buf) {
            Ok(n) => println!("{}", String::from_utf8_lossy(&buf[..n])),
            Err(_) => println!("-"),
        }
    }
}

/// `GET url` with HTTP/1.0; (status, body).
fn fetch(url: &str) -> Result<(u16, String), String> {
    fetch_with(url, false)
}

/// [`fetch`], ending the connection with a reset once the whole answer is
/// read when `reset` (the load generator): the server then keeps no
/// TIME_WAIT entry for the client's address and port. Otherwise a later
/// measurement that reuses the client's ports toward the same pod under
/// another destination address (a NodePort DNAT keeps the client's
/// address) meets those entries with sequence numbers and timestamps
/// chosen for the other destination, and some connects stall.
fn fetch_with(url: &str, reset: bool) -> Result<(u16, String), String> {
    let rest = url.strip_prefix("http://").ok_or("only http://IP:PORT/PATH")?;
    let (authority, path) = rest.split_once('/').map(|(a, p)| (a, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let addr: SocketAddr = authority.parse().map_err(|e| format!("{authority}: {e} (an IP:PORT is needed)"))?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(|e| e.to_string())?;
    if reset {
        linger_zero(&stream);
    }
    let (head, body) = response.split_once("\r\n\r\n").ok_or("no header end in the answer")?;
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or("no status in the answer")?;
    Ok((status, body.to_string()))
}

/// `SO_LINGER` with a zero timeout: closing sends a reset (std has no
/// stable `set_linger`; this crate uses no libc crate, the symbol is the C
/// library's that std links anyway).
fn linger_zero(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    #[repr(C)]
    struct Linger {
        onoff: i32,
        linger: i32,
    }
    unsafe extern "C" {
        fn setsockopt(fd: i32, level: i32, name: i32, value: *const Linger, len: u32) -> i32;
    }
    const SOL_SOCKET: i32 = 1;
    const SO_LINGER: i32 = 13;
    let linger = Linger { onoff: 1, linger: 0 };
    // SAFETY: setsockopt(2) on an open socket with a value of the size given.
    unsafe { setsockopt(stream.as_raw_fd(), SOL_SOCKET, SO_LINGER, &linger, std::mem::size_of::<Linger>() as u32) };
}
