//! The two-host topology: network namespaces `moon` and `sun` joined by a veth pair, and
//! running code inside a namespace.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::cmd::{command, sh, with_input};
use crate::error::{Context, Result};
use crate::lab::xfrm;

/// One end of the topology: a named network namespace with one veth interface.
#[derive(Debug)]
pub struct Netns {
    /// Namespace name (`/run/netns/NAME`, `/etc/netns/NAME`).
    pub name: String,
    /// Name of its veth interface.
    pub interface: String,
    /// IPv4 address on the veth.
    pub v4: Ipv4Addr,
    /// IPv6 address on the veth.
    pub v6: Ipv6Addr,
    /// IKE identity used by the scenarios.
    pub id: String,
    fd: File,
}

impl Netns {
    /// Runs `ip -n NAME args...` and returns its stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        sh("ip", ["-n", &self.name].iter().chain(args))
    }

    /// The address of the requested family.
    pub fn addr(&self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(self.v6)
        } else {
            IpAddr::V4(self.v4)
        }
    }

    /// Runs `f` on a thread that has entered this namespace and returns its result. Sockets
    /// created inside `f` stay in this namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    crate::sys::enter_netns(&self.fd)
                        .with_context(|| format!("entering netns {}", self.name))?;
                    Ok(f())
                })
                .join()
                .map_err(|_| {
                    crate::error::Error::msg(format!("thread in netns {} panicked", self.name))
                })?
        })
    }

    /// `ip xfrm state` text.
    pub fn xfrm_state_text(&self) -> Result<String> {
        self.ip(&["xfrm", "state"])
    }

    /// The SAs of this namespace.
    pub fn xfrm_states(&self) -> Result<Vec<xfrm::State>> {
        self.xfrm_state_text().map(|t| xfrm::parse_states(&t))
    }

    /// The SAs of this namespace with their statistics (`ip -s xfrm state`).
    pub fn xfrm_states_with_stats(&self) -> Result<Vec<xfrm::State>> {
        self.ip(&["-s", "xfrm", "state"])
            .map(|t| xfrm::parse_states(&t))
    }

    /// `ip xfrm policy` text.
    pub fn xfrm_policy_text(&self) -> Result<String> {
        self.ip(&["xfrm", "policy"])
    }
}

/// `moon` (10.1.0.1, fd00::1) and `sun` (10.1.0.2, fd00::2) on one veth link.
#[derive(Debug)]
pub struct Topology {
    /// The initiator side.
    pub moon: Netns,
    /// The responder side.
    pub sun: Netns,
}

impl Topology {
    /// Creates both namespaces and the link (removing leftovers of an earlier scenario).
    pub fn create() -> Result<Self> {
        Self::destroy_names();
        let batches: [(&[&str], &str); 3] = [
            (
                &[],
                "netns add moon\nnetns add sun\n\
                 link add vmoon netns moon type veth peer name vsun netns sun\n",
            ),
            (
                &["-n", "moon"],
                "link set lo up\naddr add 10.1.0.1/24 dev vmoon\n\
                 addr add fd00::1/64 dev vmoon nodad\nlink set vmoon up\n",
            ),
            (
                &["-n", "sun"],
                "link set lo up\naddr add 10.1.0.2/24 dev vsun\n\
                 addr add fd00::2/64 dev vsun nodad\nlink set vsun up\n",
            ),
        ];
        for (ns, script) in batches {
            let mut cmd = command("ip", ns);
            cmd.args(["-batch", "-"]);
            with_input(&mut cmd, script).context("creating the namespaces")?;
        }
        let open = |name: &str| {
            File::open(format!("/run/netns/{name}"))
                .with_context(|| format!("opening netns {name}"))
        };
        Ok(Self {
            moon: Netns {
                name: "moon".into(),
                interface: "vmoon".into(),
                v4: Ipv4Addr::new(10, 1, 0, 1),
                v6: "fd00::1".parse().expect("literal"),
                id: "moon.example".into(),
                fd: open("moon")?,
            },
            sun: Netns {
                name: "sun".into(),
                interface: "vsun".into(),
                v4: Ipv4Addr::new(10, 1, 0, 2),
                v6: "fd00::2".parse().expect("literal"),
                id: "sun.example".into(),
                fd: open("sun")?,
            },
        })
    }

    fn destroy_names() {
        for ns in ["moon", "sun"] {
            let _ = crate::cmd::output(&mut command("ip", ["netns", "del", ns]));
            let _ = std::fs::remove_dir_all(format!("/etc/netns/{ns}"));
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        Self::destroy_names();
    }
}
