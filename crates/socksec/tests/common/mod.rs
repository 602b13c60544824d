//! Host-test support: private network namespaces joined by veth, entered per thread.
//!
//! Tests that need root call [`require_root`] first: without root they fail when `CI=true` and
//! print a visible SKIPPED notice otherwise.

#![allow(dead_code)]

use std::fs::File;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{CloneFlags, setns};

/// Whether the test may run; prints the notice or panics in CI.
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() && Command::new("ip").arg("-V").output().is_ok() {
        return true;
    }
    let why = "needs root and iproute2 (network namespaces, XFRM policies)";
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: cannot run in CI: {why}");
    }
    eprintln!("SKIPPED: {test}: {why}");
    false
}

/// Runs `ip` with the arguments, panicking with its stderr when it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces, `a` (10.99.0.1, fd99::1) and `b` (10.99.0.2, fd99::2), joined by veth.
/// Removed on drop.
pub struct Pair {
    /// Name of the first namespace.
    pub a: String,
    /// Name of the second namespace.
    pub b: String,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Pair {
    /// Creates the pair.
    pub fn new() -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("ss{}x{n}", std::process::id());
        let (a, b) = (format!("{tag}a"), format!("{tag}b"));
        ip(&["netns", "add", &a]);
        ip(&["netns", "add", &b]);
        let pair = Self { a, b };
        ip(&[
            "-n", &pair.a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns",
            &pair.b,
        ]);
        for (ns, dev, v4, v6) in [
            (&pair.a, "va", "10.99.0.1/24", "fd99::1/64"),
            (&pair.b, "vb", "10.99.0.2/24", "fd99::2/64"),
        ] {
            ip(&["-n", ns, "addr", "add", v4, "dev", dev]);
            ip(&["-n", ns, "addr", "add", v6, "dev", dev, "nodad"]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }

    /// Runs `f` on a thread inside namespace `ns` and returns its result.
    pub fn run_in<T: Send + 'static>(&self, ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        run_in_netns(ns, f)
    }

    /// Enters namespace `ns` on the current thread (the thread must be one of the test's own).
    pub fn enter(ns: &str) {
        let file = File::open(format!("/run/netns/{ns}")).expect("open netns");
        setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `f` on a new thread inside namespace `ns` and returns its result: sockets it creates
/// belong to that namespace.
pub fn run_in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).expect("open netns");
        setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("namespace thread")
}

/// One private namespace with loopback up (its name is `.0`); removed on drop.
pub struct Netns(pub String);

impl Netns {
    /// Creates the namespace.
    pub fn new() -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("sn{}x{n}", std::process::id());
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        Self(name)
    }

    /// Runs `f` on a thread inside the namespace and returns its result.
    pub fn run_in<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        run_in_netns(&self.0, f)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}
