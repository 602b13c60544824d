//! One libreswan pluto per namespace, from the package the host unpacked
//! (`host::libreswan`), with its own configuration, NSS database, secrets and run folder,
//! driven with whack.
//!
//! pluto runs `/usr/libexec/ipsec/addconn` and whack's default control socket is
//! `/run/pluto/pluto.ctl`; in pluto's private mount namespace (`ip netns exec` makes one) the
//! unpacked `usr/libexec` is bind-mounted over `/usr/libexec` and a fresh tmpfs covers `/run`,
//! so each daemon has its own socket. whack reaches it through `nsenter`; the library through
//! the link `/run/socksec-lab/NS.pluto.ctl` ([`Pluto::ready`]) and whack from the unpacked
//! folder (the guest's `SOCKSEC_WHACK`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cmd::{command, describe, output, run, sh};
use crate::error::{Context, Result, bail};
use crate::lab::charon::wait_and_link;
use crate::lab::netns::Netns;
use crate::results::LIBRESWAN_FILE;

/// Shared secret of the lab's libreswan PSK connections (test-only).
const PSK: &str = "socksec-lab-libreswan-psk-not-a-secret";
/// The control socket inside pluto's mount namespace.
const CTL: &str = "/run/pluto/pluto.ctl";

/// The unpacked libreswan package root, as the host wrote it into the share.
pub fn root() -> Result<PathBuf> {
    let file = Path::new(crate::guest::SHARE).join(LIBRESWAN_FILE);
    let text = fs::read_to_string(&file)
        .with_context(|| format!("reading {} (written by `socksec-lab run`)", file.display()))?;
    Ok(PathBuf::from(text.trim()))
}

/// The link the library reaches `ns`'s pluto through (for moon the guest's
/// `SOCKSEC_PLUTO_CTL`, `guest::MOON_PLUTO_CTL`).
pub fn ctl_link(ns: &str) -> PathBuf {
    PathBuf::from(format!("/run/socksec-lab/{ns}.pluto.ctl"))
}

/// One transport-mode connection `lab` between two namespaces, PSK with their FQDN ids.
#[derive(Debug, Clone)]
pub struct PlutoConnection {
    /// Connection name.
    pub name: String,
    /// `phase2alg`/`esp` proposal, e.g. `aes_gcm128-null`.
    pub esp: String,
    /// `ike` proposal.
    pub ike: String,
    /// `ikev2=insist` (IKEv2) or `ikev2=no` (IKEv1).
    pub ikev2: bool,
    /// Certificates instead of the pre-shared key.
    pub x509: Option<X509Auth>,
    /// An XAuth round after IKEv1's Main Mode, and this end's part in it.
    pub xauth: Option<XAuth>,
}

/// This end's part in an IKEv1 XAuth round; the user and password are the same on both ends.
#[derive(Debug, Clone)]
pub enum XAuth {
    /// Asks the peer for a user and checks it against a passwd file pluto reads from its
    /// `--ipsecdir` (`xauthby=file`).
    Server {
        /// The one user the file holds.
        user: String,
        /// Its password (the file holds its SHA-512 crypt).
        password: String,
    },
    /// Answers the peer's request as `user`, the password from ipsec.secrets.
    Client {
        /// The user it logs in as.
        user: String,
        /// Its password.
        password: String,
    },
}

/// This end's certificate and key and the CA, for pluto's NSS database, and the peer's DN.
#[derive(Debug, Clone)]
pub struct X509Auth {
    /// The CA certificate (PEM), trusted for peers.
    pub ca_pem: Vec<u8>,
    /// This end's certificate (PEM).
    pub cert_pem: Vec<u8>,
    /// Its private key (PEM).
    pub key_pem: Vec<u8>,
    /// The peer's identity: its certificate's subject DN.
    pub peer_dn: String,
}

/// The NSS nickname of this end's certificate.
const NICK: &str = "lab";

impl Default for PlutoConnection {
    fn default() -> Self {
        Self {
            name: "lab".into(),
            esp: "aes_gcm128-null".into(),
            // DH 19 (ECP-256): far cheaper than MODP under TCG.
            ike: "aes_gcm128-sha2_256;dh19".into(),
            ikev2: true,
            x509: None,
            xauth: None,
        }
    }
}

impl PlutoConnection {
    /// ipsec.conf of `me` talking to `peer`, logging to `log`: PSK with the FQDN ids, or the
    /// certificate in NSS with its DN and the peer's DN (`rightca=%same`: pluto asks for the
    /// peer's certificate, which charon sends only when asked). No updown script: pluto would
    /// run strongSwan's `/usr/lib/ipsec/_updown` (which fails, and so fails the Child SA),
    /// and transport mode needs no routes.
    pub fn render(&self, me: &Netns, peer: &Netns, log: &Path) -> String {
        format!(
            "# socksec lab: pluto in {me} (generated)\n\
             config setup\n\
             \tlogfile={log}\n\
             \tlogtime=yes\n\
             \tdnssec-enable=no\n\
             \tplutodebug=none\n\
             {ikev1}\
             \n\
             conn {name}\n\
             \tleft={left}\n\
             \tright={right}\n\
             {auth}\
             {xauth}\
             \ttype=transport\n\
             \tikev2={ikev2}\n\
             \tphase2=esp\n\
             \tesp={esp}\n\
             \tike={ike}\n\
             \tauto=add\n\
             \tleftupdown=%disabled\n",
            me = me.name,
            log = log.display(),
            // Debian's pluto 4.10 drops IKEv1 unless told otherwise (`ikev1-policy=drop`).
            ikev1 = if self.ikev2 {
                ""
            } else {
                "\tikev1-policy=accept\n"
            },
            name = self.name,
            left = me.v4,
            right = peer.v4,
            auth = match &self.x509 {
                None => format!(
                    "\tleftid=@{}\n\trightid=@{}\n\tauthby=secret\n",
                    me.id, peer.id
                ),
                Some(x) => format!(
                    "\tleftcert={NICK}\n\tleftid=%fromcert\n\trightid=\"{}\"\n\trightca=%same\n\tauthby=rsasig\n",
                    x.peer_dn
                ),
            },
            xauth = match &self.xauth {
                None => String::new(),
                Some(XAuth::Server { .. }) => {
                    "\tleftxauthserver=yes\n\trightxauthclient=yes\n\txauthby=file\n".into()
                }
                Some(XAuth::Client { user, .. }) => format!(
                    "\tleftxauthclient=yes\n\trightxauthserver=yes\n\tleftusername={user}\n"
                ),
            },
            ikev2 = if self.ikev2 { "insist" } else { "no" },
            esp = self.esp,
            ike = self.ike,
        )
    }

    /// ipsec.secrets for `me` and `peer` (empty with certificates: the key is in NSS), and an
    /// XAuth client's password (pluto looks it up by the user as an FQDN id).
    pub fn secrets(&self, me: &Netns, peer: &Netns) -> String {
        let mut out = match self.x509 {
            None => format!("@{} @{} : PSK \"{PSK}\"\n", me.id, peer.id),
            Some(_) => String::new(),
        };
        if let Some(XAuth::Client { user, password }) = &self.xauth {
            out.push_str(&format!("@{user} : XAUTH \"{password}\"\n"));
        }
        out
    }

    /// The XAuth server's passwd file (`user:crypt:connection`), when this end is one.
    fn passwd(&self) -> Result<Option<String>> {
        let Some(XAuth::Server { user, password }) = &self.xauth else {
            return Ok(None);
        };
        let hash = sh("openssl", ["passwd", "-6", "-salt", "socksecLab", password])
            .context("hashing the XAuth password")?;
        Ok(Some(format!("{user}:{}:{}\n", hash.trim(), self.name)))
    }
}

/// A running pluto inside a namespace; killed on drop.
#[derive(Debug)]
pub struct Pluto {
    ns: String,
    child: Child,
    /// Configuration folder (ipsec.conf, ipsec.secrets, nss/).
    dir: PathBuf,
    root: PathBuf,
    log: PathBuf,
}

impl Pluto {
    /// Writes the namespace's configuration and NSS database and starts pluto; call
    /// [`Pluto::ready`] next.
    pub fn spawn(ns: &Netns, peer: &Netns, conn: &PlutoConnection, log_dir: &Path) -> Result<Self> {
        let root = root()?;
        let dir = PathBuf::from(format!("/tmp/socksec-lab-pluto/{}", ns.name));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("nss"))
            .with_context(|| format!("creating {}", dir.display()))?;
        let log = log_dir.join(format!("pluto-{}.log", ns.name));
        let conf = conn.render(ns, peer, &log);
        fs::write(dir.join("ipsec.conf"), &conf)?;
        fs::write(log_dir.join(format!("ipsec-{}.conf", ns.name)), &conf)?;
        fs::write(dir.join("ipsec.secrets"), conn.secrets(ns, peer))?;
        if let Some(passwd) = conn.passwd()? {
            fs::write(dir.join("passwd"), &passwd)?;
            fs::write(log_dir.join(format!("passwd-{}", ns.name)), &passwd)?;
        }
        let nss = format!("sql:{}", dir.join("nss").display());
        run(&mut command(
            "certutil",
            ["-N", "-d", &nss, "--empty-password"],
        ))
        .context("creating pluto's NSS database")?;
        if let Some(x) = &conn.x509 {
            import_credentials(&dir, &nss, x)?;
        }
        let child = start(&ns.name, &dir, &root, log_dir)?;
        Ok(Self {
            ns: ns.name.clone(),
            child,
            dir,
            root,
            log,
        })
    }

    /// Waits until pluto's control socket exists and links it for the library.
    pub fn ready(&mut self, timeout: Duration) -> Result<()> {
        let socket = PathBuf::from(format!("/proc/{}/root{CTL}", self.child.id()));
        let what = format!("pluto in {}", self.ns);
        let link = ctl_link(&self.ns);
        wait_and_link(&mut self.child, &what, &socket, &link, &self.log, timeout)?;
        // pluto loads the `auto=add` connections itself, right after opening the socket.
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.whack(&["--status"])?;
            if status.contains("added IKEv") || status.contains("\"lab\":") {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("pluto in {} has no connection loaded:\n{status}", self.ns);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs `whack args...` against this daemon and returns its stdout.
    pub fn whack(&self, args: &[&str]) -> Result<String> {
        let pid = self.child.id().to_string();
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &pid, "-m", "-n", "/usr/libexec/ipsec/whack"])
            .args(args);
        let out = output(&mut cmd)?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "`whack {}` in {} failed ({}): {}\n{}",
                args.join(" "),
                self.ns,
                out.status,
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(stdout)
    }

    /// `whack --name NAME --initiate`: returns its output once pluto is done with it.
    pub fn initiate(&self, name: &str) -> Result<String> {
        self.whack(&["--name", name, "--initiate"])
            .with_context(|| format!("initiating {name} from {}", self.ns))
    }

    /// Polls `whack --trafficstatus` until `found` picks something out of it; returns that
    /// with the text it came from.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        found: impl Fn(&str) -> Option<T>,
    ) -> Result<(T, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.whack(&["--trafficstatus"])?;
            if let Some(t) = found(&text) {
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

    /// The daemon's log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Kills pluto with SIGKILL (its kernel SAs and policies stay) and waits for it.
    pub fn kill_hard(&mut self) -> Result<()> {
        self.child
            .kill()
            .with_context(|| format!("killing pluto in {}", self.ns))?;
        self.child.wait()?;
        Ok(())
    }

    /// Starts pluto again with the same configuration (after [`Pluto::kill_hard`]).
    pub fn restart(&mut self, log_dir: &Path, timeout: Duration) -> Result<()> {
        self.child = start(&self.ns, &self.dir, &self.root, log_dir)?;
        self.ready(timeout)
    }
}

/// Puts the CA (trusted for peers) and this end's certificate with its key (as PKCS#12,
/// nickname [`NICK`]) into the NSS database `nss`; `dir` holds the files on the way.
fn import_credentials(dir: &Path, nss: &str, x: &X509Auth) -> Result<()> {
    let file = |name: &str, data: &[u8]| -> Result<String> {
        let path = dir.join(name);
        fs::write(&path, data)?;
        Ok(path.display().to_string())
    };
    let ca = file("ca.crt", &x.ca_pem)?;
    let cert = file("host.crt", &x.cert_pem)?;
    let key = file("host.key", &x.key_pem)?;
    let p12 = dir.join("host.p12").display().to_string();
    run(&mut command(
        "certutil",
        [
            "-A", "-d", nss, "-n", "lab-ca", "-t", "CT,,", "-a", "-i", &ca,
        ],
    ))
    .context("adding the CA to pluto's NSS database")?;
    run(&mut command(
        "openssl",
        [
            "pkcs12", "-export", "-inkey", &key, "-in", &cert, "-name", NICK, "-passout", "pass:",
            "-out", &p12,
        ],
    ))
    .context("packing the host certificate as PKCS#12")?;
    run(&mut command("pk12util", ["-i", &p12, "-d", nss, "-W", ""]))
        .context("adding the host certificate to pluto's NSS database")
}

/// Starts pluto in `ns` on the configuration in `dir`, from the package unpacked at `root`.
fn start(ns: &str, dir: &Path, root: &Path, log_dir: &Path) -> Result<Child> {
    let stdio = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_dir.join(format!("pluto-{ns}.stderr")))?;
    let d = dir.display();
    let script = format!(
        "mount -t tmpfs tmpfs /run && mkdir -p /run/pluto && \
         mount --bind {libexec} /usr/libexec && \
         exec /usr/libexec/ipsec/pluto --nofork --config {d}/ipsec.conf --rundir /run/pluto \
         --nssdir {d}/nss --secretsfile {d}/ipsec.secrets --ipsecdir {d}",
        libexec = root.join("usr/libexec").display(),
    );
    let mut cmd = Command::new("ip");
    // Every step execs the next, so the child's pid is pluto's.
    cmd.args(["netns", "exec", ns, "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(stdio.try_clone()?)
        .stderr(stdio);
    cmd.spawn()
        .with_context(|| format!("starting `{}`", describe(&cmd)))
}

impl Drop for Pluto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
