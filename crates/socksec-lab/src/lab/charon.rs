//! One charon (strongSwan's IKE daemon) per namespace, configured through
//! `/etc/netns/NS/{strongswan.conf,swanctl/swanctl.conf}` and driven with swanctl.
//!
//! `ip netns exec` gives the daemon a private mount namespace in which `/etc/netns/NS/*` is
//! bind-mounted over `/etc/*`; a fresh tmpfs on `/run` there gives each daemon its own pid file
//! and VICI socket. swanctl reaches it through `nsenter` into the daemon's namespaces.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cmd::{describe, output};
use crate::error::{Context, Result, bail};
use crate::lab::netns::Netns;
use crate::lab::vici::{self, ChildSa, IkeSa};

const CHARON: &str = "/usr/lib/ipsec/charon";

/// A running charon inside a namespace; killed on drop.
#[derive(Debug)]
pub struct Charon {
    ns: String,
    child: Child,
    log: PathBuf,
}

fn strongswan_conf(log: &Path) -> String {
    format!(
        "# socksec lab: charon with a file log (generated)\n\
         charon {{\n  load_modular = yes\n  plugins {{\n    include strongswan.d/charon/*.conf\n  }}\n\
         \x20 filelog {{\n    lab {{\n      path = {}\n      time_format = %H:%M:%S\n      \
         default = 1\n      ike = 2\n      knl = 2\n      flush_line = yes\n    }}\n  }}\n}}\n\
         include strongswan.d/*.conf\n",
        log.display()
    )
}

impl Charon {
    /// Writes the namespace's configuration and starts charon; call [`Charon::ready`] next.
    pub fn spawn(ns: &Netns, swanctl_conf: &str, log_dir: &Path) -> Result<Self> {
        let etc = PathBuf::from(format!("/etc/netns/{}", ns.name));
        fs::create_dir_all(etc.join("swanctl"))
            .with_context(|| format!("creating {}", etc.display()))?;
        fs::write(etc.join("swanctl/swanctl.conf"), swanctl_conf)?;
        let log = log_dir.join(format!("charon-{}.log", ns.name));
        fs::write(etc.join("strongswan.conf"), strongswan_conf(&log))?;
        fs::write(
            log_dir.join(format!("swanctl-{}.conf", ns.name)),
            swanctl_conf,
        )?;

        let stdio = fs::File::create(log_dir.join(format!("charon-{}.stderr", ns.name)))?;
        let mut cmd = Command::new("ip");
        // Every step execs the next, so the child's pid is charon's.
        cmd.args(["netns", "exec", &ns.name, "sh", "-c"])
            .arg(format!("mount -t tmpfs tmpfs /run && exec {CHARON}"))
            .stdin(Stdio::null())
            .stdout(stdio.try_clone()?)
            .stderr(stdio);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting `{}`", describe(&cmd)))?;
        Ok(Self {
            ns: ns.name.clone(),
            child,
            log,
        })
    }

    /// Waits until the daemon answers on VICI, then loads its configuration.
    pub fn ready(&mut self, timeout: Duration) -> Result<()> {
        let socket = PathBuf::from(format!("/proc/{}/root/run/charon.vici", self.child.id()));
        // A stable path to this daemon's VICI socket for the library
        // (`/run/socksec-lab/NS.vici`, see `guest::MOON_VICI`).
        let link = PathBuf::from(format!("/run/socksec-lab/{}.vici", self.ns));
        let what = format!("charon in {}", self.ns);
        wait_and_link(&mut self.child, &what, &socket, &link, &self.log, timeout)?;
        self.swanctl(&["--load-all", "--noprompt"]).map(drop)
    }

    /// Runs `swanctl args...` against this daemon and returns its stdout.
    pub fn swanctl(&self, args: &[&str]) -> Result<String> {
        let pid = self.child.id().to_string();
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &pid, "-m", "-n", "swanctl"]).args(args);
        let out = output(&mut cmd)?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "`swanctl {}` in {} failed ({}): {}\n{}",
                args.join(" "),
                self.ns,
                out.status,
                stdout.trim(),
                // Skip swanctl's noise about plugins Debian does not ship.
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .filter(|l| !l.starts_with("plugin '"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        Ok(stdout)
    }

    /// Initiates a CHILD_SA (and its IKE_SA) and waits for the outcome.
    pub fn initiate(&self, child: &str, timeout: Duration) -> Result<String> {
        let secs = timeout.as_secs().max(1).to_string();
        self.swanctl(&["--initiate", "--child", child, "--timeout", &secs])
            .with_context(|| format!("initiating CHILD_SA {child} from {}", self.ns))
    }

    /// `swanctl --list-sas --pretty` text and its parsed form.
    pub fn list_sas(&self) -> Result<(String, Vec<IkeSa>)> {
        let text = self.swanctl(&["--list-sas", "--pretty"])?;
        let sas = vici::ike_sas(&text);
        Ok((text, sas))
    }

    /// Polls until a CHILD_SA named `child` is INSTALLED and returns it.
    pub fn wait_child(&self, child: &str, timeout: Duration) -> Result<(IkeSa, ChildSa)> {
        let deadline = Instant::now() + timeout;
        loop {
            let (text, sas) = self.list_sas()?;
            for ike in &sas {
                if let Some(c) = ike
                    .children
                    .iter()
                    .find(|c| c.name == child && c.state == "INSTALLED")
                {
                    return Ok((ike.clone(), c.clone()));
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "no INSTALLED CHILD_SA {child} in {} after {timeout:?}:\n{text}",
                    self.ns
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The daemon's log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the daemon with SIGKILL (no clean-up: its kernel SAs and policies stay) and
    /// waits for it; the VICI link [`Charon::ready`] made then dangles.
    pub fn kill_hard(&mut self) -> Result<()> {
        self.child
            .kill()
            .with_context(|| format!("killing charon in {}", self.ns))?;
        self.child.wait()?;
        Ok(())
    }

    /// Polls `swanctl --list-sas` until `found` picks something out of it, and returns that
    /// with the text it came from.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        found: impl Fn(&[IkeSa]) -> Option<T>,
    ) -> Result<(T, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            let (text, sas) = self.list_sas()?;
            if let Some(t) = found(&sas) {
                return Ok((t, text));
            }
            if Instant::now() > deadline {
                bail!(
                    "{what}: not seen in {} within {timeout:?}:\n{text}",
                    self.ns
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Writes a credential file for `ns`'s charon under `/etc/netns/NS/swanctl/` (`rel` is e.g.
/// `x509ca/ca.crt`, `x509/moon.crt`, `private/moon.key`), where `swanctl --load-all` finds it.
pub fn install_credential(ns: &Netns, rel: &str, data: &[u8]) -> Result<()> {
    let path = PathBuf::from(format!("/etc/netns/{}/swanctl/{rel}", ns.name));
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::write(&path, data).with_context(|| format!("writing {}", path.display()))
}

/// A certificate authority made with strongSwan's `pki` at scenario time, in a scratch folder.
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
    /// The CA's subject DN.
    pub ca_dn: String,
}

/// RSA keys: Debian's strongSwan without `libstrongswan-standard-plugins` has no ECDSA. 1024
/// bits: prime generation under TCG took 12-17 s for three 2048-bit keys on a loaded host, and
/// these throw-away lab keys protect nothing.
const KEY_BITS: &str = "1024";

impl Pki {
    fn pki(args: &[&str], input: Option<&[u8]>) -> Result<Vec<u8>> {
        use std::io::Write;
        let mut cmd = Command::new("pki");
        cmd.args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot run `{}`", describe(&cmd)))?;
        if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin.write_all(data)?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "`{}` failed ({}): {}",
                describe(&cmd),
                out.status,
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .filter(|l| !l.starts_with("plugin '"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        Ok(out.stdout)
    }

    fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn gen_key(&self, name: &str, bits: &str) -> Result<()> {
        let key = Self::pki(
            &["--gen", "--type", "rsa", "--size", bits, "--outform", "pem"],
            None,
        )?;
        fs::write(self.dir.join(name), key)?;
        Ok(())
    }

    /// A new self-signed CA `ca_dn` (key and certificate in `dir`).
    pub fn new_ca(dir: &Path, ca_dn: &str) -> Result<Self> {
        fs::create_dir_all(dir)?;
        let pki = Self {
            dir: dir.to_owned(),
            ca_dn: ca_dn.to_owned(),
        };
        pki.gen_key("ca.key", KEY_BITS)?;
        let ca_key = pki.file("ca.key");
        let cert = Self::pki(
            &[
                "--self",
                "--ca",
                "--lifetime",
                "30",
                "--in",
                &ca_key,
                "--type",
                "rsa",
                "--dn",
                ca_dn,
                "--outform",
                "pem",
            ],
            None,
        )?;
        fs::write(dir.join("ca.crt"), cert)?;
        Ok(pki)
    }

    /// The CA certificate (PEM).
    pub fn ca_cert(&self) -> Result<Vec<u8>> {
        Ok(fs::read(self.dir.join("ca.crt"))?)
    }

    /// Issues a host certificate for `dn` with `san` as subject alternative name; returns
    /// (private key PEM, certificate PEM) and keeps both in the folder as `NAME.key`/`NAME.crt`.
    pub fn issue(&self, name: &str, dn: &str, san: &str) -> Result<(Vec<u8>, Vec<u8>)> {
        self.issue_with_bits(name, dn, san, KEY_BITS)
    }

    /// [`Pki::issue`] with an RSA key of `bits` bits (pluto signs with RSA-PSS and SHA-512,
    /// which a 1024-bit key is too short for).
    pub fn issue_with_bits(
        &self,
        name: &str,
        dn: &str,
        san: &str,
        bits: &str,
    ) -> Result<(Vec<u8>, Vec<u8>)> {
        let key_file = format!("{name}.key");
        self.gen_key(&key_file, bits)?;
        let public = Self::pki(
            &["--pub", "--in", &self.file(&key_file), "--type", "rsa"],
            None,
        )?;
        let cert = Self::pki(
            &[
                "--issue",
                "--lifetime",
                "30",
                "--cacert",
                &self.file("ca.crt"),
                "--cakey",
                &self.file("ca.key"),
                "--type",
                "pub",
                "--dn",
                dn,
                "--san",
                san,
                "--outform",
                "pem",
            ],
            Some(&public),
        )?;
        fs::write(self.dir.join(format!("{name}.crt")), &cert)?;
        Ok((fs::read(self.dir.join(&key_file))?, cert))
    }

    /// `pki --print` of the certificate `NAME.crt` in the folder (strongSwan's own reading).
    pub fn print(&self, name: &str) -> Result<String> {
        let text = Self::pki(
            &["--print", "--in", &self.file(&format!("{name}.crt"))],
            None,
        )?;
        Ok(String::from_utf8_lossy(&text).into_owned())
    }
}

/// Waits until a daemon started as `child` (`what`, logging to `log`) has made `socket`, then
/// links it at `link` (replacing what was there) for the library.
pub fn wait_and_link(
    child: &mut Child,
    what: &str,
    socket: &Path,
    link: &Path,
    log: &Path,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !socket.exists() {
        if let Some(status) = child.try_wait()? {
            bail!(
                "{what} exited ({status}) while starting; see {}",
                log.display()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "{what} did not open {} within {timeout:?}",
                socket.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if let Some(dir) = link.parent() {
        fs::create_dir_all(dir)?;
    }
    let _ = fs::remove_file(link);
    std::os::unix::fs::symlink(socket, link).with_context(|| format!("linking {}", link.display()))
}

impl Drop for Charon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
