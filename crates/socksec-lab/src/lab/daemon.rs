//! `socksecd` run by a scenario in one of the guest's namespaces, as root, on a socket of its
//! own; killed when dropped.

use std::fs::File;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Context, Result, bail, ensure};
use crate::lab::netns::Netns;

/// How long the daemon may take to listen.
const LISTEN_WITHIN: Duration = Duration::from_secs(20);

/// A running `socksecd`.
pub struct Socksecd {
    child: Child,
    /// The socket it listens on.
    pub socket: PathBuf,
}

impl Socksecd {
    /// Starts the daemon `bin` in `ns`, its standard error in `log`, and waits until it listens.
    pub fn start(ns: &Netns, bin: &Path, log: &Path) -> Result<Self> {
        Self::spawn(ns, bin, log, &[], &[])
    }

    /// [`Socksecd::start`] with more arguments (e.g. `--metrics ADDR`).
    pub fn start_with(ns: &Netns, bin: &Path, log: &Path, args: &[&str]) -> Result<Self> {
        Self::spawn(ns, bin, log, args, &[])
    }

    /// [`Socksecd::start`] with these environment variables set for the daemon.
    pub fn start_env(ns: &Netns, bin: &Path, log: &Path, env: &[(&str, &Path)]) -> Result<Self> {
        Self::spawn(ns, bin, log, &[], env)
    }

    fn spawn(
        ns: &Netns,
        bin: &Path,
        log: &Path,
        args: &[&str],
        env: &[(&str, &Path)],
    ) -> Result<Self> {
        let dir = PathBuf::from("/run/socksecd-lab");
        std::fs::create_dir_all(&dir)?;
        let socket = dir.join(format!("socksecd-{}.sock", ns.name));
        let _ = std::fs::remove_file(&socket);
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(bin)
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(log)?)
            .spawn()
            .with_context(|| format!("starting socksecd in {}", ns.name))?;
        let daemon = Self { child, socket };
        daemon.wait_listening(log)
    }

    fn wait_listening(mut self, log: &Path) -> Result<Self> {
        let t = Instant::now();
        while UnixStream::connect(&self.socket).is_err() {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "socksecd exited ({status}): {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            ensure!(
                t.elapsed() < LISTEN_WITHIN,
                "socksecd did not listen within {LISTEN_WITHIN:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(self)
    }

    /// Whether the daemon is still running (it must survive everything a scenario does).
    pub fn running(&mut self) -> Result<bool> {
        Ok(self.child.try_wait()?.is_none())
    }
}

impl Drop for Socksecd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
