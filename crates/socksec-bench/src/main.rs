//! `socksec-bench`: what a socket security query costs, against floors that are not socksec's
//! own code, measured in one run; `make bench` runs it (as root: it works in a private network
//! namespace, with `n` XFRM policies installed for each size).
//!
//! * **C-loop floor**: `getsockname` + `getpeername` + `getsockopt(SO_DOMAIN, SO_TYPE,
//!   SO_PROTOCOL)` on the same socket, in C (`c/loop.c`, compiled with `cc` at bench time
//!   against the shipped header and library): the system calls no query can do without.
//! * **local** (warm): `socksec::query` in this crate's re-executed child (the Rust API) and
//!   `WSAQuerySocketSecurity` with a NULL template from `c/loop.c` (the C ABI), with
//!   `SOCKSEC_MODE=local`: each a fresh process whose cache starts with its first query (not
//!   timed).
//! * **broker**: the same two with `SOCKSEC_MODE=broker`, answered by `socksecd`.
//! * **bare fd round trip**: the broker's own floor: this binary re-executed as an echo server;
//!   a 96-byte request with the descriptor attached (SCM_RIGHTS), a 1 KiB answer.
//!
//! Two flows, on loopback TCP connections: (a) `127.0.0.2 → 127.0.0.2`, which no policy
//! matches, and (b) `127.0.0.1 → 127.0.0.1`, whose policies require ESP (transport, both
//! directions) while no SA exists. Every latency is the best of `--batches` batch means over
//! `--iters` calls, everything pinned to CPU 0 (the placement table also puts the server on
//! CPU 1). Then 8-client throughput (unpinned), and system calls per query counted with
//! `strace -f -c` (the difference between two runs of different lengths, divided by the
//! difference in queries). This is a measurement tool, not a test.

use std::collections::BTreeMap;
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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

/// Request size of the bare echo exchange (about a broker request frame).
const ECHO_REQUEST: usize = 96;
/// Response size of the bare echo exchange (about a broker answer frame).
const ECHO_RESPONSE: usize = 1024;
/// The C side, compiled at bench time.
const LOOP_C: &str = include_str!("../c/loop.c");
/// Flow (a): no policy matches it.
const NO_POLICY: &str = "127.0.0.2";
/// Flow (b): its policies require ESP, and no SA exists.
const ESP_REQUIRED: &str = "127.0.0.1";

/// Measures socksec's query paths against the C-loop floor and the bare fd round trip;
/// prints Markdown tables.
#[derive(Debug, Parser)]
#[command(name = "socksec-bench")]
struct Args {
    /// SPD sizes (policies in the namespace).
    #[arg(long, value_delimiter = ',', default_value = "10,10000,100000")]
    sizes: Vec<usize>,
    /// Calls per batch.
    #[arg(long, default_value_t = 5000)]
    iters: usize,
    /// Batches per cell; a cell is the best batch's mean.
    #[arg(long, default_value_t = 3)]
    batches: usize,
    /// Seconds of each 8-client throughput run.
    #[arg(long, default_value_t = 2)]
    throughput_secs: u64,
    /// A smoke run of a few seconds: 10 policies, short batches, 1 s throughput.
    #[arg(long)]
    quick: bool,
    /// The socksecd binary (default: next to this one).
    #[arg(long)]
    socksecd: Option<PathBuf>,
    /// Internal: serve bare SCM_RIGHTS echo on this socket path.
    #[arg(long, hide = true)]
    echo_server: Option<PathBuf>,
    /// Internal: as a child, time `socksec::query` (`latency`) or count it under 8 threads
    /// (`throughput`) on a connection to this address.
    #[arg(long, hide = true, num_args = 2, value_names = ["WHAT", "ADDR"])]
    child: Vec<String>,
}

fn main() {
    let mut args = Args::parse();
    if args.quick {
        args.sizes = vec![10];
        args.iters = args.iters.min(500);
        args.batches = 2;
        args.throughput_secs = 1;
    }
    if let Some(path) = &args.echo_server {
        echo_server(path);
        return;
    }
    if let [what, addr] = args.child.as_slice() {
        child(what, addr, &args);
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("socksec-bench: needs root (a private network namespace, XFRM policies)");
        std::process::exit(2);
    }
    let ns = Netns::create();
    ns.enter();
    // Everything this starts inherits the CPU; servers are placed explicitly.
    cpus();
    pin_thread(0);
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

/// Replaces the namespace's policies with `n`: an ESP transport pair for flow (b) and `n - 2`
/// host policies for other addresses.
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
            "xfrm policy add src {ESP_REQUIRED}/32 dst {ESP_REQUIRED}/32 proto tcp dir {dir} \
             priority 50 tmpl proto esp mode transport reqid 1\n"
        ));
    }
    let path = std::env::temp_dir().join(format!("ssbench-{}.batch", std::process::id()));
    std::fs::write(&path, batch).expect("write batch");
    run_ip(&["-batch", path.to_str().expect("utf-8 path")]);
    let _ = std::fs::remove_file(&path);
}

fn us(ns: f64) -> String {
    let us = ns / 1000.0;
    if us >= 10_000.0 {
        format!("{:.0} ms", us / 1000.0)
    } else if us >= 100.0 {
        format!("{us:.0} µs")
    } else {
        format!("{us:.1} µs")
    }
}

/// `value` with its ratio to `base`: "31.2 µs (10.8×)".
fn with_ratio(value: f64, base: f64) -> String {
    format!("{} ({:.1}×)", us(value), value / base)
}

/// The best of `batches` batch means of `iters` calls of `f`, in nanoseconds per call, after
/// one warm-up call.
fn best_mean(iters: usize, batches: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..batches.max(1))
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_nanos() as f64 / iters.max(1) as f64
        })
        .fold(f64::INFINITY, f64::min)
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

/// The CPUs of the machine, counted before this process pinned itself (after, the count
/// `available_parallelism` gives is the pinned set).
fn cpus() -> usize {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn wait_for_socket(path: &Path, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
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

/// A loopback TCP connection `addr:port → addr:port`: the socket queried, and its peer.
fn connection(addr: &str) -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind((addr, 0)).expect("listen");
    let stream = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (peer, _) = listener.accept().expect("accept");
    (stream, peer)
}

/// The re-executed child: `socksec::query` (mode from the environment) on a connection to
/// `addr`; prints nanoseconds per query (`latency`) or queries per second of 8 threads
/// (`throughput`).
fn child(what: &str, addr: &str, args: &Args) {
    let (stream, _peer) = connection(addr);
    let template = QueryTemplate::default();
    let query = |fd: BorrowedFd<'_>| {
        let info = socksec::query(&fd, &template).expect("query");
        assert!(!info.is_secured(), "no SA exists here: {info:?}");
    };
    match what {
        "latency" => println!(
            "{:.0}",
            best_mean(args.iters, args.batches, || query(stream.as_fd()))
        ),
        "throughput" => {
            query(stream.as_fd());
            let qps = throughput(args.throughput_secs, || {
                let stream = &stream;
                Box::new(move || query(stream.as_fd()))
            });
            println!("{qps:.0}");
        }
        other => panic!("unknown child mode {other}"),
    }
}

/// Queries per second with 8 clients (`one` makes each client's call), for `secs`.
fn throughput<'a>(secs: u64, one: impl Fn() -> Box<dyn FnMut() + Send + 'a> + Sync) -> f64 {
    let stop = AtomicBool::new(false);
    let count = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            let mut call = one();
            let (stop, count) = (&stop, &count);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    call();
                    count.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        std::thread::sleep(Duration::from_secs(secs));
        stop.store(true, Ordering::Relaxed);
    });
    count.load(Ordering::Relaxed) as f64 / secs as f64
}

/// Where a query is answered.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    Local,
    Broker,
}

struct Bench {
    iters: usize,
    batches: usize,
    socksecd: PathBuf,
    /// The compiled `c/loop.c`.
    c_loop: PathBuf,
    tmp: PathBuf,
}

impl Bench {
    fn new(args: &Args) -> Self {
        let exe = std::env::current_exe().expect("own path");
        let socksecd = args
            .socksecd
            .clone()
            .unwrap_or_else(|| exe.with_file_name("socksecd"));
        assert!(
            socksecd.exists(),
            "{} is missing: cargo build --release -p socksecd",
            socksecd.display()
        );
        let tmp = std::env::temp_dir().join(format!("ssbench-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).expect("temp dir");
        let c_loop = compile_c_loop(&exe, &tmp);
        Self {
            iters: args.iters,
            batches: args.batches,
            socksecd,
            c_loop,
            tmp,
        }
    }

    fn broker_path(&self) -> PathBuf {
        self.tmp.join("socksecd.sock")
    }

    fn start_broker(&self) -> Server {
        let path = self.broker_path();
        let _ = std::fs::remove_file(&path);
        let mut child = Command::new(&self.socksecd)
            .arg("--socket")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start socksecd");
        wait_for_socket(&path, &mut child);
        Server { child, path }
    }

    fn start_echo(&self) -> Server {
        let path = self.tmp.join("echo.sock");
        let _ = std::fs::remove_file(&path);
        let mut child = Command::new(std::env::current_exe().expect("own path"))
            .arg("--echo-server")
            .arg(&path)
            .spawn()
            .expect("start echo server");
        wait_for_socket(&path, &mut child);
        Server { child, path }
    }

    /// The environment that picks the mode for a child.
    fn mode_env(&self, cmd: &mut Command, via: Via) {
        match via {
            Via::Local => cmd.env("SOCKSEC_MODE", "local"),
            Via::Broker => cmd
                .env("SOCKSEC_MODE", "broker")
                .env("SOCKSEC_BROKER", self.broker_path()),
        };
    }

    /// The C loop (`floor`, or `wsa` through `via`) on a connection to `addr`: ns per call.
    fn c(&self, what: &str, addr: &str, via: Via) -> f64 {
        let mut cmd = Command::new(&self.c_loop);
        cmd.args([
            what,
            addr,
            &self.iters.to_string(),
            &self.batches.to_string(),
        ]);
        self.mode_env(&mut cmd, via);
        number(&mut cmd)
    }

    /// `socksec::query` in a child through `via` on a connection to `addr`: ns per query.
    fn rust(&self, addr: &str, via: Via) -> f64 {
        let mut cmd = self.child_cmd("latency", addr);
        self.mode_env(&mut cmd, via);
        number(&mut cmd)
    }

    fn child_cmd(&self, what: &str, addr: &str) -> Command {
        let mut cmd = Command::new(std::env::current_exe().expect("own path"));
        cmd.args(["--child", what, addr])
            .args(["--iters", &self.iters.to_string()])
            .args(["--batches", &self.batches.to_string()]);
        cmd
    }

    fn echo_latency(&self, echo: &Server) -> f64 {
        let (stream, _peer) = connection(ESP_REQUIRED);
        let mut conn = UnixStream::connect(&echo.path).expect("connect echo");
        best_mean(self.iters, self.batches, || {
            echo_once(&mut conn, stream.as_fd())
        })
    }

    fn run(&self, args: &Args, ns: &Netns) {
        println!(
            "socksec-bench: namespace {}, {} CPUs, load average {} at the start; each cell the \
             best of {} batch means of {} calls, client and server pinned to CPU 0\n",
            ns.name,
            cpus(),
            load_average(),
            self.batches,
            self.iters,
        );
        let echo = self.start_echo();
        pin_process(echo.child.id(), &[0]);
        println!(
            "| policies | flow | C-loop floor | bare fd round trip | local, Rust API (× floor) | \
             local, C ABI (× floor) | broker, Rust API (× round trip) | broker, C ABI (× round \
             trip) | naive: ip xfrm policy + state |"
        );
        println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|");
        let mut local_at: Vec<(usize, f64)> = Vec::new();
        let mut verdicts = Vec::new();
        for &n in &args.sizes {
            install_policies(n);
            let broker = self.start_broker();
            pin_process(broker.child.id(), &[0]);
            let naive = naive();
            for (flow, addr) in [
                ("(a) no policy", NO_POLICY),
                ("(b) ESP, no SA", ESP_REQUIRED),
            ] {
                let floor = self.c("floor", addr, Via::Local);
                let round_trip = self.echo_latency(&echo);
                let rust_local = self.rust(addr, Via::Local);
                let c_local = self.c("wsa", addr, Via::Local);
                let rust_broker = self.rust(addr, Via::Broker);
                let c_broker = self.c("wsa", addr, Via::Broker);
                println!(
                    "| {n} | {flow} | {} | {} | {} | {} | {} | {} | {} |",
                    us(floor),
                    us(round_trip),
                    with_ratio(rust_local, floor),
                    with_ratio(c_local, floor),
                    with_ratio(rust_broker, round_trip),
                    with_ratio(c_broker, round_trip),
                    us(naive),
                );
                if addr == ESP_REQUIRED {
                    local_at.push((n, c_local));
                }
                verdicts.push(format!(
                    "{n} policies, {flow}: local (C ABI) / floor {:.2}× (target ≤ 3×), broker \
                     (C ABI) / round trip {:.2}× (target ≤ 3×)",
                    c_local / floor,
                    c_broker / round_trip
                ));
            }
        }
        println!();
        self.placements(&echo);
        println!();
        self.throughputs(args, &echo);
        println!();
        self.syscalls();
        println!();
        for v in verdicts {
            println!("{v}");
        }
        if let (Some((n0, first)), Some((n1, last))) = (local_at.first(), local_at.last()) {
            println!(
                "local at {n1} / local at {n0} (flow b, C ABI): {:.2}× (target ≤ 1.5×)",
                last / first
            );
        }
        println!(
            "\n(load average {} at the end: other work shares these CPUs)",
            load_average()
        );
    }

    /// The broker against the bare fd-passing echo, server on the client's CPU and on the
    /// other one.
    fn placements(&self, echo: &Server) {
        install_policies(10);
        let broker = self.start_broker();
        let mut placements = vec![("one CPU (client and server on CPU 0)", 0usize)];
        if cpus() > 1 {
            placements.push(("two CPUs (client on CPU 0, server on CPU 1)", 1));
        }
        println!(
            "| placement (10 policies, flow b) | bare fd round trip | broker, Rust API | broker, \
             C ABI | broker / round trip (C ABI) |"
        );
        println!("|---|---:|---:|---:|---:|");
        for (name, server_cpu) in placements {
            pin_process(echo.child.id(), &[server_cpu]);
            pin_process(broker.child.id(), &[server_cpu]);
            let e = self.echo_latency(echo);
            let rust = self.rust(ESP_REQUIRED, Via::Broker);
            let c = self.c("wsa", ESP_REQUIRED, Via::Broker);
            println!(
                "| {name} | {} | {} | {} | {:.2}× |",
                us(e),
                us(rust),
                us(c),
                c / e
            );
        }
        pin_process(echo.child.id(), &[0]);
    }

    /// 8 clients, unpinned: the bare echo, the broker, local.
    fn throughputs(&self, args: &Args, echo: &Server) {
        let broker = self.start_broker();
        unpin_thread();
        let all: Vec<usize> = (0..cpus()).collect();
        pin_process(echo.child.id(), &all);
        pin_process(broker.child.id(), &all);
        println!(
            "| 8 clients, {} s, unpinned, 10 policies, flow b | queries/s |",
            args.throughput_secs
        );
        println!("|---|---:|");
        let (stream, _peer) = connection(ESP_REQUIRED);
        let echo_qps = throughput(args.throughput_secs, || {
            let mut conn = UnixStream::connect(&echo.path).expect("connect echo");
            let stream = &stream;
            Box::new(move || echo_once(&mut conn, stream.as_fd()))
        });
        println!("| bare SCM_RIGHTS echo | {echo_qps:.0} |");
        let qps = |via| {
            let mut cmd = self.child_cmd("throughput", ESP_REQUIRED);
            cmd.args(["--throughput-secs", &args.throughput_secs.to_string()]);
            self.mode_env(&mut cmd, via);
            number(&mut cmd)
        };
        let broker_qps = qps(Via::Broker);
        println!("| broker (Rust API, one kept connection per thread) | {broker_qps:.0} |");
        let local_qps = qps(Via::Local);
        println!("| local (Rust API, 8 threads, one process cache) | {local_qps:.0} |");
        println!(
            "\nbroker / echo throughput: {:.2}× (target ≥ 0.5×)",
            broker_qps / echo_qps
        );
        pin_thread(0);
    }

    /// System calls per query, counted with `strace -f -c` on the C loop (local and broker
    /// client) and on `socksecd` (broker server): the difference between a short and a long
    /// run, per query of the difference.
    fn syscalls(&self) {
        if Command::new("strace").arg("-V").output().is_err() {
            println!("system calls per query: not counted (strace is not installed)");
            return;
        }
        let (short, long) = (100usize, 100 + self.iters.max(500));
        let per_query = |counts: &dyn Fn(usize) -> BTreeMap<String, u64>| {
            let (a, b) = (counts(short), counts(long));
            let mut diff: Vec<(String, f64)> = b
                .iter()
                .map(|(name, &calls)| {
                    let before = a.get(name).copied().unwrap_or(0);
                    (
                        name.clone(),
                        (calls as f64 - before as f64) / (long - short) as f64,
                    )
                })
                .filter(|(_, d)| *d >= 0.05)
                .collect();
            diff.sort_by(|x, y| y.1.total_cmp(&x.1));
            diff
        };
        let c_loop = |what: &'static str, via: Via| {
            move |queries: usize| {
                let mut cmd = Command::new("strace");
                cmd.args(["-f", "-c", "-o"])
                    .arg(self.tmp.join("strace.out"));
                cmd.arg(&self.c_loop)
                    .args([what, ESP_REQUIRED, &queries.to_string(), "1"]);
                self.mode_env(&mut cmd, via);
                let _ = number(&mut cmd);
                strace_counts(&self.tmp.join("strace.out"))
            }
        };
        let server = |queries: usize| {
            let out = self.tmp.join("strace-socksecd.out");
            let path = self.broker_path();
            let _ = std::fs::remove_file(&path);
            let mut strace = Command::new("strace")
                .args(["-f", "-c", "-o"])
                .arg(&out)
                .arg(&self.socksecd)
                .arg("--socket")
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("strace socksecd");
            wait_for_socket(&path, &mut strace);
            let mut cmd = Command::new(&self.c_loop);
            cmd.args(["wsa", ESP_REQUIRED, &queries.to_string(), "1"]);
            self.mode_env(&mut cmd, Via::Broker);
            let _ = number(&mut cmd);
            // socksecd exits on SIGTERM; strace then writes its summary.
            let children =
                std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", strace.id()))
                    .unwrap_or_default();
            for pid in children.split_whitespace() {
                let _ = Command::new("kill").args(["-TERM", pid]).status();
            }
            let _ = strace.wait();
            let _ = std::fs::remove_file(&path);
            strace_counts(&out)
        };
        install_policies(10);
        let floor = per_query(&c_loop("floor", Via::Local));
        let local = per_query(&c_loop("wsa", Via::Local));
        let broker = self.start_broker();
        let client = per_query(&c_loop("wsa", Via::Broker));
        drop(broker);
        let rows = [
            ("C-loop floor", floor),
            ("local (C ABI, flow b)", local),
            ("broker client (C ABI, flow b)", client),
            ("broker server (socksecd)", per_query(&server)),
        ];
        println!(
            "| system calls per query (strace -f -c, runs of {short} and {long} queries) | total \
             | by call |"
        );
        println!("|---|---:|---|");
        for (name, calls) in rows {
            let total: f64 = calls.iter().map(|(_, n)| n).sum();
            let by_call = calls
                .iter()
                .map(|(c, n)| format!("{c} {n:.1}"))
                .collect::<Vec<_>>()
                .join(", ");
            println!("| {name} | {total:.1} | {by_call} |");
        }
    }
}

/// Runs `cmd` and reads the number it prints.
fn number(cmd: &mut Command) -> f64 {
    let out = cmd.stderr(Stdio::inherit()).output().expect("run");
    assert!(out.status.success(), "{cmd:?} failed: {}", out.status);
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{cmd:?} printed {:?}", out.stdout))
}

/// Calls per system call from a `strace -c` summary.
fn strace_counts(path: &Path) -> BTreeMap<String, u64> {
    let text = std::fs::read_to_string(path).expect("strace summary");
    text.lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let name = *cols.last()?;
            let calls = cols.get(3)?.parse().ok()?;
            (cols.len() >= 5 && name != "total").then(|| (name.to_string(), calls))
        })
        .collect()
}

/// `ip xfrm policy` + `ip xfrm state`, what a script would run (and still have to match by
/// hand): mean ns over as many runs as fit a second (at least one, at most 20).
fn naive() -> f64 {
    let once = || {
        for what in ["policy", "state"] {
            let out = Command::new("ip")
                .args(["xfrm", what])
                .stderr(Stdio::null())
                .output()
                .expect("ip xfrm");
            std::hint::black_box(out.stdout.len());
        }
    };
    let start = Instant::now();
    let mut runs = 0u32;
    while runs == 0 || (runs < 20 && start.elapsed() < Duration::from_secs(1)) {
        once();
        runs += 1;
    }
    start.elapsed().as_nanos() as f64 / f64::from(runs)
}

/// Compiles `c/loop.c` with `cc` against the shipped header and the library next to this
/// binary (`cargo build --release -p socksec-winsock`).
fn compile_c_loop(exe: &Path, tmp: &Path) -> PathBuf {
    let lib_dir = exe.parent().expect("binary directory");
    assert!(
        lib_dir.join("libsocksec_winsock.so").exists(),
        "{} has no libsocksec_winsock.so: cargo build --release -p socksec-winsock",
        lib_dir.display()
    );
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("../socksec-winsock/include");
    let source = tmp.join("loop.c");
    std::fs::write(&source, LOOP_C).expect("write loop.c");
    let program = tmp.join("loop");
    let status = Command::new("cc")
        .args(["-std=c11", "-O2", "-Wall", "-Werror", "-I"])
        .arg(&include)
        .arg(&source)
        .arg("-o")
        .arg(&program)
        .arg("-L")
        .arg(lib_dir)
        .arg("-lsocksec_winsock")
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .status()
        .expect("run cc");
    assert!(status.success(), "cc failed on {}", source.display());
    program
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

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}
