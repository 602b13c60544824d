//! `socksec-bench`: how long a socket security query takes, by way of answering, at several
//! SPD sizes; run by `make bench` (needs root: it works in a private network namespace).
//!
//! Columns, per number of policies:
//! * **floor**: what every way must do — inspect the descriptor and read its flow (socket
//!   options, route and link lookups); no IPsec table is read.
//! * **cold**: in-process, tables dumped for each query (`ColdSources`).
//! * **warm**: in-process through the event-driven cache (`socksec::cache`).
//! * **broker**: through `socksecd` on one connection (descriptor passed by SCM_RIGHTS).
//! * **naive**: `ip xfrm policy` and `ip xfrm state`, what a script would run.
//!
//! Then the broker's own floor: a bare request/response with a descriptor passed by
//! SCM_RIGHTS between two processes (this binary re-executed as an echo server), with both
//! processes pinned to one CPU and to two CPUs, and the throughput of the broker and of the
//! echo server under 8 concurrent clients.
//!
//! Latencies are p50/p99 over as many runs as fit the per-cell budget (the sample count is
//! printed); this is a measurement tool, not a test.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use nix::sched::{CpuSet, sched_setaffinity};
use nix::unistd::Pid;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use socksec::QueryTemplate;
use socksec::cache::{Cache, CacheOptions};
use socksec::engine::ColdSources;

/// Request size of the bare echo exchange (about a broker request frame).
const ECHO_REQUEST: usize = 96;
/// Response size of the bare echo exchange (about a broker answer frame).
const ECHO_RESPONSE: usize = 1024;

/// Measures socksec's query paths; prints a Markdown table.
#[derive(Debug, Parser)]
#[command(name = "socksec-bench")]
struct Args {
    /// SPD sizes (policies in the namespace).
    #[arg(long, value_delimiter = ',', default_value = "10,1000,10000,100000")]
    sizes: Vec<usize>,
    /// Most samples per cell.
    #[arg(long, default_value_t = 2000)]
    samples: usize,
    /// Time budget per cell, in milliseconds (a cell stops at whichever limit comes first,
    /// after at least 5 samples).
    #[arg(long, default_value_t = 1500)]
    budget_ms: u64,
    /// The socksecd binary (default: next to this one).
    #[arg(long)]
    socksecd: Option<PathBuf>,
    /// Seconds of the 8-client throughput runs.
    #[arg(long, default_value_t = 2)]
    throughput_secs: u64,
    /// Internal: serve bare SCM_RIGHTS echo on this socket path.
    #[arg(long, hide = true)]
    echo_server: Option<PathBuf>,
}

fn main() {
    let args = Args::parse();
    if let Some(path) = &args.echo_server {
        echo_server(path);
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("socksec-bench: needs root (a private network namespace, XFRM policies)");
        std::process::exit(2);
    }
    let ns = Netns::create();
    ns.enter();
    let bench = Bench::new(&args);
    bench.run(&args, &ns);
}

/// A private network namespace with loopback up; deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn create() -> Self {
        let name = format!("ssbench{}", std::process::id());
        run_ip(&["netns", "add", &name]);
        run_ip(&["-n", &name, "link", "set", "lo", "up"]);
        Self { name }
    }

    /// Moves the calling thread (and the threads and processes it starts later) into it.
    fn enter(&self) {
        let file = std::fs::File::open(format!("/run/netns/{}", self.name)).expect("netns");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run_ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Replaces the namespace's policies with `n`: two that match the benchmark connection
/// (an ESP transport pair, so every answer resolves templates) and `n - 2` host policies for
/// other addresses.
fn install_policies(n: usize) {
    run_ip(&["xfrm", "policy", "flush"]);
    let mut batch = String::new();
    for i in 0..n.saturating_sub(2) {
        batch.push_str(&format!(
            "xfrm policy add src 10.{}.{}.{}/32 dst 172.16.{}.{}/32 proto tcp dir out \
             priority 100\n",
            i >> 16,
            (i >> 8) & 255,
            i & 255,
            (i >> 8) & 255,
            i & 255
        ));
    }
    for dir in ["out", "in"] {
        batch.push_str(&format!(
            "xfrm policy add src 127.0.0.1/32 dst 127.0.0.1/32 proto tcp dir {dir} priority 50 \
             tmpl proto esp mode transport reqid 1\n"
        ));
    }
    let path = std::env::temp_dir().join(format!("ssbench-{}.batch", std::process::id()));
    std::fs::write(&path, batch).expect("write batch");
    run_ip(&["-batch", path.to_str().expect("utf-8 path")]);
    let _ = std::fs::remove_file(&path);
}

/// Percentiles of a set of durations.
#[derive(Debug, Clone, Copy)]
struct Stats {
    p50: Duration,
    p99: Duration,
    n: usize,
}

impl Stats {
    fn cell(&self) -> String {
        format!("{} / {} (n={})", us(self.p50), us(self.p99), self.n)
    }
}

fn us(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 10_000.0 {
        format!("{:.0} ms", us / 1000.0)
    } else if us >= 100.0 {
        format!("{us:.0} µs")
    } else {
        format!("{us:.1} µs")
    }
}

/// Runs `f` until `max` samples or the budget, whichever first (at least 5 samples).
fn measure(max: usize, budget: Duration, mut f: impl FnMut()) -> Stats {
    // One warm-up run (page faults, first allocations, lazy starts).
    f();
    let start = Instant::now();
    let mut samples = Vec::with_capacity(max);
    while samples.len() < max && (samples.len() < 5 || start.elapsed() < budget) {
        let t = Instant::now();
        f();
        samples.push(t.elapsed());
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    Stats {
        p50: at(0.50),
        p99: at(0.99),
        n: samples.len(),
    }
}

fn pin_thread(cpu: usize) {
    let mut set = CpuSet::new();
    set.set(cpu).expect("cpu index");
    sched_setaffinity(Pid::from_raw(0), &set).expect("sched_setaffinity");
}

fn unpin_thread() {
    let mut set = CpuSet::new();
    for cpu in 0..cpus() {
        set.set(cpu).expect("cpu index");
    }
    sched_setaffinity(Pid::from_raw(0), &set).expect("sched_setaffinity");
}

/// Pins every thread of process `pid` (present now; later ones inherit it from their creator).
fn pin_process(pid: u32, cpus_allowed: &[usize]) {
    let mut set = CpuSet::new();
    for &c in cpus_allowed {
        set.set(c).expect("cpu index");
    }
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
                let _ = sched_setaffinity(Pid::from_raw(tid), &set);
            }
        }
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn wait_for_socket(path: &Path, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(path).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{} exited early: {status}", path.display());
        }
        assert!(
            Instant::now() < deadline,
            "{} never listened",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A spawned server process, killed on drop.
struct Server {
    child: Child,
    path: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.path);
    }
}

struct Bench {
    /// The connection every query asks about (127.0.0.1 → 127.0.0.1).
    stream: TcpStream,
    _peer: TcpStream,
    template: QueryTemplate,
    samples: usize,
    budget: Duration,
    socksecd: PathBuf,
}

impl Bench {
    fn new(args: &Args) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
        let stream = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (peer, _) = listener.accept().expect("accept");
        let socksecd = args.socksecd.clone().unwrap_or_else(|| {
            std::env::current_exe()
                .expect("own path")
                .with_file_name("socksecd")
        });
        Self {
            stream,
            _peer: peer,
            template: QueryTemplate::default(),
            samples: args.samples,
            budget: Duration::from_millis(args.budget_ms),
            socksecd,
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }

    fn floor(&self) -> Stats {
        measure(self.samples, self.budget, || {
            let prepared = socksec::prepare(self.fd(), &self.template).expect("prepare");
            std::hint::black_box(prepared.flow().expect("flow"));
        })
    }

    fn with_sources(&self, sources: &dyn socksec::engine::Sources, max: usize) -> Stats {
        measure(max, self.budget, || {
            let info = socksec::prepare(self.fd(), &self.template)
                .expect("prepare")
                .run_with(sources)
                .expect("query");
            assert!(!info.is_secured(), "no SA exists here: {info:?}");
        })
    }

    fn naive(&self) -> Stats {
        measure(self.samples.min(200), self.budget, || {
            for what in ["policy", "state"] {
                let out = Command::new("ip")
                    .args(["xfrm", what])
                    .stderr(Stdio::null())
                    .output()
                    .expect("ip xfrm");
                std::hint::black_box(out.stdout.len());
            }
        })
    }

    fn start_broker(&self) -> Option<Server> {
        if !self.socksecd.exists() {
            return None;
        }
        let path = std::env::temp_dir().join(format!("ssbench-{}-broker.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut child = Command::new(&self.socksecd)
            .arg("--socket")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start socksecd");
        wait_for_socket(&path, &mut child);
        Some(Server { child, path })
    }

    fn start_echo(&self) -> Server {
        let path = std::env::temp_dir().join(format!("ssbench-{}-echo.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut child = Command::new(std::env::current_exe().expect("own path"))
            .arg("--echo-server")
            .arg(&path)
            .spawn()
            .expect("start echo server");
        wait_for_socket(&path, &mut child);
        Server { child, path }
    }

    fn broker_latency(&self, broker: &Server) -> Stats {
        let mut conn =
            socksec::broker::client::Connection::connect(&broker.path, Duration::from_secs(10))
                .expect("connect to socksecd");
        measure(self.samples, self.budget, || {
            let info = conn.query(self.fd(), &self.template).expect("broker query");
            std::hint::black_box(info);
        })
    }

    /// The library's own broker path: a fresh connection per query (`client::query`, what
    /// `socksec::query` did before connections were kept) or the thread's kept connection
    /// (`client::query_kept`, what it does now).
    fn broker_connection_latency(&self, broker: &Server, kept: bool) -> Stats {
        use socksec::broker::client;
        measure(self.samples, self.budget, || {
            let info = if kept {
                client::query_kept(&broker.path, self.fd(), &self.template, |e| e)
            } else {
                client::query(&broker.path, self.fd(), &self.template)
            };
            std::hint::black_box(info.expect("broker query"));
        })
    }

    fn echo_latency(&self, echo: &Server) -> Stats {
        let mut conn = UnixStream::connect(&echo.path).expect("connect echo");
        measure(self.samples, self.budget, || {
            echo_once(&mut conn, self.fd())
        })
    }

    /// Queries per second with 8 clients, each on its own connection, for `secs`.
    fn throughput(&self, secs: u64, one: impl Fn() -> Box<dyn FnMut() + Send> + Sync) -> f64 {
        let stop = AtomicBool::new(false);
        let count = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                let mut query = one();
                let (stop, count) = (&stop, &count);
                s.spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        query();
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            std::thread::sleep(Duration::from_secs(secs));
            stop.store(true, Ordering::Relaxed);
        });
        count.load(Ordering::Relaxed) as f64 / secs as f64
    }

    fn run(&self, args: &Args, ns: &Netns) {
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!(
            "socksec-bench: namespace {}, {} CPUs, load average {} at the start; p50 / p99 per \
             query (n = samples)\n",
            ns.name,
            cpus(),
            load.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        );
        println!(
            "| policies | floor (flow from fd) | in-process cold | in-process warm (cache) | \
             broker (socksecd) | naive (ip xfrm policy + state) | cache start |"
        );
        println!("|---:|---|---|---|---|---|---:|");
        let mut warm_by_size = Vec::new();
        let mut floors = Vec::new();
        for &n in &args.sizes {
            install_policies(n);
            let floor = self.floor();
            let cold = self.with_sources(&ColdSources, self.samples);
            let started = Instant::now();
            let cache = Cache::start_with(CacheOptions {
                vici: false,
                ..CacheOptions::default()
            });
            let start_cost = started.elapsed();
            assert!(
                cache.snapshot().is_some(),
                "cache is cold: {:?}",
                cache.status()
            );
            let warm = self.with_sources(&cache, self.samples);
            drop(cache);
            let broker = match self.start_broker() {
                Some(b) => self.broker_latency(&b).cell(),
                None => "n/a (no socksecd binary)".to_string(),
            };
            let naive = self.naive();
            println!(
                "| {n} | {} | {} | {} | {broker} | {} | {} |",
                floor.cell(),
                cold.cell(),
                warm.cell(),
                naive.cell(),
                us(start_cost)
            );
            warm_by_size.push((n, warm));
            floors.push((n, floor));
        }
        println!();
        self.placements(args);
        println!();
        for ((n, warm), (_, floor)) in warm_by_size.iter().zip(&floors) {
            println!(
                "warm/floor at {n}: {:.2}× (target ≤ 2×)",
                warm.p50.as_secs_f64() / floor.p50.as_secs_f64()
            );
        }
        if let (Some((n0, first)), Some((n1, last))) = (warm_by_size.first(), warm_by_size.last()) {
            println!(
                "warm at {n1} / warm at {n0}: {:.2}× (target ≤ 1.5×)",
                last.p50.as_secs_f64() / first.p50.as_secs_f64()
            );
        }
    }

    /// The broker against the bare fd-passing echo, same placement; then 8-client throughput.
    fn placements(&self, args: &Args) {
        install_policies(10);
        let echo = self.start_echo();
        let broker = self.start_broker();
        let mut placements = vec![("one CPU (client and server on CPU 0)", 0usize)];
        if cpus() > 1 {
            placements.push(("two CPUs (client on CPU 0, server on CPU 1)", 1));
        }
        println!(
            "| placement (10 policies) | bare SCM_RIGHTS echo | broker (socksecd) | broker / echo |"
        );
        println!("|---|---|---|---:|");
        for (name, server_cpu) in placements {
            pin_thread(0);
            pin_process(echo.child.id(), &[server_cpu]);
            let e = self.echo_latency(&echo);
            let b = broker.as_ref().map(|b| {
                pin_process(b.child.id(), &[server_cpu]);
                self.broker_latency(b)
            });
            let (bcell, ratio) = match b {
                Some(b) => (
                    b.cell(),
                    format!("{:.2}×", b.p50.as_secs_f64() / e.p50.as_secs_f64()),
                ),
                None => ("n/a (no socksecd binary)".into(), "n/a".into()),
            };
            println!("| {name} | {} | {bcell} | {ratio} |", e.cell());
        }
        if let Some(b) = &broker {
            pin_thread(0);
            pin_process(b.child.id(), &[0]);
            let fresh = self.broker_connection_latency(b, false);
            let kept = self.broker_connection_latency(b, true);
            println!();
            println!(
                "| `socksec::query` in broker mode (one CPU) | new connection per query | kept per thread | new / kept |"
            );
            println!("|---|---|---|---:|");
            println!(
                "| 10 policies | {} | {} | {:.2}× |",
                fresh.cell(),
                kept.cell(),
                fresh.p50.as_secs_f64() / kept.p50.as_secs_f64()
            );
        }
        unpin_thread();
        let all: Vec<usize> = (0..cpus()).collect();
        pin_process(echo.child.id(), &all);
        println!();
        println!(
            "| 8 clients, {} s, unpinned | queries/s |",
            args.throughput_secs
        );
        println!("|---|---:|");
        let fd = self.stream.as_fd().try_clone_to_owned().expect("dup");
        let fd = Arc::new(fd);
        let echo_qps = self.throughput(args.throughput_secs, || {
            let mut conn = UnixStream::connect(&echo.path).expect("connect echo");
            let fd = fd.clone();
            Box::new(move || echo_once(&mut conn, fd.as_fd()))
        });
        println!("| bare SCM_RIGHTS echo | {echo_qps:.0} |");
        let cache = Arc::new(Cache::start_with(CacheOptions {
            vici: false,
            ..CacheOptions::default()
        }));
        let template = self.template.clone();
        let warm_qps = self.throughput(args.throughput_secs, || {
            let (fd, cache, template) = (fd.clone(), cache.clone(), template.clone());
            Box::new(move || {
                let info = socksec::prepare(fd.as_fd(), &template)
                    .expect("prepare")
                    .run_with(&*cache)
                    .expect("query");
                std::hint::black_box(info);
            })
        });
        println!("| in-process warm (8 threads, one cache) | {warm_qps:.0} |");
        let template = self.template.clone();
        let floor_qps = self.throughput(args.throughput_secs, || {
            let (fd, template) = (fd.clone(), template.clone());
            Box::new(move || {
                let prepared = socksec::prepare(fd.as_fd(), &template).expect("prepare");
                std::hint::black_box(prepared.flow().expect("flow"));
            })
        });
        println!("| floor (8 threads, flow from fd only) | {floor_qps:.0} |");
        match &broker {
            Some(b) => {
                pin_process(b.child.id(), &all);
                let template = self.template.clone();
                let broker_qps = self.throughput(args.throughput_secs, || {
                    let mut conn = socksec::broker::client::Connection::connect(
                        &b.path,
                        Duration::from_secs(10),
                    )
                    .expect("connect to socksecd");
                    let fd = fd.clone();
                    let template = template.clone();
                    Box::new(move || {
                        std::hint::black_box(conn.query(fd.as_fd(), &template).expect("query"));
                    })
                });
                println!("| broker (socksecd) | {broker_qps:.0} |");
                println!(
                    "\nbroker / echo throughput: {:.2}× (target ≥ 0.7×)",
                    broker_qps / echo_qps
                );
            }
            None => println!("| broker (socksecd) | n/a (no socksecd binary) |"),
        }
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!(
            "\n(load average {} after the throughput runs: other work shares these CPUs)",
            load.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
}

/// One bare exchange: a request with `fd` attached, a fixed-size answer.
fn echo_once(conn: &mut UnixStream, fd: BorrowedFd<'_>) {
    let request = [7u8; ECHO_REQUEST];
    let fds = [fd];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
    let sent = rustix::net::sendmsg(
        &*conn,
        &[IoSlice::new(&request)],
        &mut control,
        SendFlags::NOSIGNAL,
    )
    .expect("sendmsg");
    conn.write_all(&request[sent..]).expect("write");
    let mut answer = [0u8; ECHO_RESPONSE];
    conn.read_exact(&mut answer).expect("echo answer");
}

/// The echo server: for each connection a thread that takes a request and its descriptor,
/// closes the descriptor, and answers with a fixed-size reply.
fn echo_server(path: &Path) {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).expect("bind echo socket");
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        std::thread::spawn(move || {
            let reply = [9u8; ECHO_RESPONSE];
            loop {
                let mut request = [0u8; ECHO_REQUEST];
                let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
                let mut control = RecvAncillaryBuffer::new(&mut space);
                let got = match rustix::net::recvmsg(
                    &conn,
                    &mut [IoSliceMut::new(&mut request)],
                    &mut control,
                    RecvFlags::CMSG_CLOEXEC,
                ) {
                    Ok(r) if r.bytes > 0 => r.bytes,
                    _ => return,
                };
                let mut fds: Vec<OwnedFd> = Vec::new();
                for msg in control.drain() {
                    if let RecvAncillaryMessage::ScmRights(rights) = msg {
                        fds.extend(rights);
                    }
                }
                if got < ECHO_REQUEST && conn.read_exact(&mut request[got..]).is_err() {
                    return;
                }
                drop(fds);
                if conn.write_all(&reply).is_err() {
                    return;
                }
            }
        });
    }
}
