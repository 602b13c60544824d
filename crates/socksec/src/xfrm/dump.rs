//! Reading the kernel's XFRM tables over netlink: the I/O half of [`super::codec`].
//!
//! [`snapshot`] dumps the SPD and the SAD and reads the default actions; [`spd_info`] reads the
//! cheap SPD counters. Every XFRM request needs `CAP_NET_ADMIN` in the user namespace that owns
//! the caller's network namespace; without it the kernel answers `EPERM`, reported as
//! [`DumpError::PermissionDenied`]. The connection (and how it wipes the key material of a
//! state dump) is [`crate::netlink`]'s.

use netlink_sys::protocols::NETLINK_XFRM;

use super::codec::{self, SpdInfo, xfrm};

use super::model::{DefaultPolicy, Policy, State, XfrmSnapshot};
use socksec_core::netlink::{CodecError, expect_kind};

pub use crate::netlink::NetlinkError as DumpError;
use crate::netlink::{NlConn, NlError};

/// The one item of a single-message reply.
fn single<T>(request: &'static str, items: Vec<T>) -> Result<T, DumpError> {
    items.into_iter().next().ok_or(DumpError::Malformed {
        request,
        source: CodecError::Malformed {
            what: "reply",
            why: "acknowledged without data",
        },
    })
}

/// An open XFRM netlink socket; keep one to read the tables repeatedly without reopening.
pub struct XfrmDumper {
    conn: NlConn,
}

impl XfrmDumper {
    /// Opens a `NETLINK_XFRM` socket in the caller's network namespace. Opening needs no
    /// privilege; every request does.
    pub fn open() -> Result<Self, DumpError> {
        let conn = NlConn::open(NETLINK_XFRM).map_err(|source| DumpError::Io {
            request: "opening a NETLINK_XFRM socket",
            source,
        })?;
        Ok(Self { conn })
    }

    /// Every policy, socket policies included, in dump order (newest first).
    pub fn policies(&mut self) -> Result<Vec<Policy>, DumpError> {
        self.conn
            .transact(codec::encode_getpolicy_dump, true, |msg| {
                expect_kind(&msg, xfrm::XFRM_MSG_NEWPOLICY)?;
                codec::parse_policy(msg.payload)
            })
            .map_err(|e| e.into_dump_error("the XFRM policy dump (XFRM_MSG_GETPOLICY)"))
    }

    /// Every state in dump order, without key material.
    pub fn states(&mut self) -> Result<Vec<State>, DumpError> {
        self.conn
            .transact(codec::encode_getsa_dump, true, |msg| {
                expect_kind(&msg, xfrm::XFRM_MSG_NEWSA)?;
                codec::parse_state(msg.payload)
            })
            .map_err(|e| e.into_dump_error("the XFRM state dump (XFRM_MSG_GETSA)"))
    }

    /// The per-namespace default actions. Kernels without `XFRM_MSG_GETDEFAULT` (before 5.16)
    /// answer `EINVAL` or `EOPNOTSUPP`; their default is always accept.
    pub fn defaults(&mut self) -> Result<DefaultPolicy, DumpError> {
        const REQUEST: &str = "XFRM_MSG_GETDEFAULT";
        let reply = self.conn.transact(codec::encode_getdefault, false, |msg| {
            expect_kind(&msg, xfrm::XFRM_MSG_GETDEFAULT)?;
            codec::parse_default(msg.payload)
        });
        match reply {
            Ok(defaults) => single(REQUEST, defaults),
            Err(NlError::Kernel(libc::EINVAL | libc::EOPNOTSUPP)) => Ok(DefaultPolicy::default()),
            Err(e) => Err(e.into_dump_error(REQUEST)),
        }
    }

    /// The SPD counters, including the socket-policy counts.
    pub fn spd_info(&mut self) -> Result<SpdInfo, DumpError> {
        const REQUEST: &str = "XFRM_MSG_GETSPDINFO";
        let reply = self.conn.transact(codec::encode_getspdinfo, false, |msg| {
            expect_kind(&msg, xfrm::XFRM_MSG_NEWSPDINFO)?;
            codec::parse_spdinfo(msg.payload)
        });
        single(REQUEST, reply.map_err(|e| e.into_dump_error(REQUEST))?)
    }

    /// The number of states, larval ones included (`XFRM_MSG_GETSADINFO`): the cheap check
    /// that a cached SAD has as many states as the kernel's.
    pub fn sad_count(&mut self) -> Result<u32, DumpError> {
        const REQUEST: &str = "XFRM_MSG_GETSADINFO";
        let reply = self.conn.transact(codec::encode_getsadinfo, false, |msg| {
            expect_kind(&msg, xfrm::XFRM_MSG_NEWSADINFO)?;
            codec::parse_sadinfo(msg.payload)
        });
        single(REQUEST, reply.map_err(|e| e.into_dump_error(REQUEST))?)
    }

    /// Policies, states and default actions, read one after the other (the kernel offers no
    /// atomic snapshot; a concurrent change can fall between the dumps).
    pub fn snapshot(&mut self) -> Result<XfrmSnapshot, DumpError> {
        Ok(XfrmSnapshot {
            policies: self.policies()?,
            states: self.states()?,
            defaults: self.defaults()?,
            index: Default::default(),
        })
    }
}

/// Reads the SPD, the SAD and the default actions of the caller's network namespace.
pub fn snapshot() -> Result<XfrmSnapshot, DumpError> {
    XfrmDumper::open()?.snapshot()
}

#[cfg(test)]
/// Reads the SPD counters of the caller's network namespace.
pub fn spd_info() -> Result<SpdInfo, DumpError> {
    XfrmDumper::open()?.spd_info()
}

/// Test helpers shared by the host tests of this module and of [`crate::route`].
#[cfg(test)]
pub(crate) mod testenv {
    use std::process::Command;

    /// Runs `body` on a thread of its own inside a fresh, empty network namespace.
    ///
    /// Without the privilege to create one (not root), the test is skipped with a notice, or
    /// fails when `CI=true`.
    pub(crate) fn in_private_netns(test: &str, body: impl FnOnce() + Send + 'static) {
        let test = test.to_owned();
        let thread = std::thread::spawn(move || {
            // CLONE_NEWNET moves only the calling thread, which this test owns.
            if let Err(err) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
                let why = format!("needs root for a private network namespace ({err})");
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "{test}: cannot run in CI: {why}"
                );
                eprintln!("SKIPPED: {test}: {why}");
                return;
            }
            body();
        });
        if let Err(panic) = thread.join() {
            std::panic::resume_unwind(panic);
        }
    }

    /// Runs `ip` with whitespace-separated `args` in the calling thread's namespace; panics
    /// with its stderr when it fails. Returns its stdout.
    pub(crate) fn ip(args: &str) -> String {
        let out = Command::new("ip")
            .args(args.split_whitespace())
            .output()
            .unwrap_or_else(|e| panic!("cannot run `ip {args}`: {e}"));
        assert!(
            out.status.success(),
            "`ip {args}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The fixtures' expectations, shared with the codec's tests in socksec-core.
#[cfg(test)]
#[path = "../../../socksec-core/src/xfrm/fixtures.rs"]
mod fixtures;

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use netlink_sys::{Socket, SocketAddr};

    use socksec_core::netlink::{Messages, Step, nl, reply_step};

    use super::fixtures;
    use super::testenv::{in_private_netns, ip};
    use super::*;
    use crate::netlink::RECV_BUF_LEN;

    /// A `struct xfrm_userpolicy_info` for `setsockopt(IP_XFRM_POLICY)`: IPv4, zero selector,
    /// infinite lifetimes, allow, direction `dir` (0 in, 1 out), no templates.
    fn socket_policy_info(dir: u8) -> Vec<u8> {
        let mut info = vec![0u8; codec::USERPOLICY_INFO_LEN];
        info[40..42].copy_from_slice(&2u16.to_ne_bytes());
        for lft in 0..8 {
            info[56 + 8 * lft..64 + 8 * lft].copy_from_slice(&u64::MAX.to_ne_bytes());
        }
        info[160] = dir;
        info
    }

    /// Sends `request` on a fresh socket and returns every reply datagram laid end to end: the
    /// raw bytes the fixtures hold.
    fn raw_reply(request: &[u8], dump: bool) -> Vec<u8> {
        let mut sock = Socket::new(NETLINK_XFRM).unwrap();
        sock.bind_auto().unwrap();
        sock.connect(&SocketAddr::new(0, 0)).unwrap();
        sock.send(request, 0).unwrap();
        let seq = u32::from_ne_bytes(request[8..12].try_into().unwrap());
        let mut all = Vec::new();
        loop {
            let mut buf = Vec::with_capacity(RECV_BUF_LEN);
            sock.recv(&mut buf, 0).unwrap();
            all.extend_from_slice(&buf);
            if reply_step(&buf, seq, dump, |_| Ok(())).unwrap() == Step::Done {
                return all;
            }
        }
    }

    fn write_fixture(name: &str, bytes: &[u8]) {
        if std::env::var_os("SOCKSEC_WRITE_FIXTURES").is_some() {
            let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
            std::fs::write(&path, bytes).unwrap();
            eprintln!("wrote {path}");
        }
    }

    /// A UDP socket holding socket policies in both directions (zero selector, allow, no
    /// templates: what IKE daemons put on their own sockets).
    fn socket_with_policies() -> std::net::UdpSocket {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for dir in [0u8, 1] {
            let info = socket_policy_info(dir);
            // SAFETY: `info` is a live buffer of the length passed; the kernel only reads it.
            let rc = unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::IPPROTO_IP,
                    libc::IP_XFRM_POLICY,
                    info.as_ptr().cast(),
                    info.len() as libc::socklen_t,
                )
            };
            assert_eq!(rc, 0, "IP_XFRM_POLICY: {}", std::io::Error::last_os_error());
        }
        sock
    }

    /// `(dir word, index, priority)` of each policy `ip -s xfrm policy` prints, in its order.
    fn ip_policy_summary() -> Vec<(String, u32, u32)> {
        let text = ip("-s xfrm policy");
        let mut out = Vec::new();
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let Some(first) = words.first() else { continue };
            if *first != "dir" && *first != "socket" {
                continue;
            }
            let after = |key: &str| {
                let at = words.iter().position(|w| *w == key).unwrap();
                words[at + 1].parse::<u32>().unwrap()
            };
            let dir = format!("{first} {}", words[1]);
            out.push((dir, after("index"), after("priority")));
        }
        out
    }

    fn dir_words(dir: crate::xfrm::model::PolicyDir) -> &'static str {
        use crate::xfrm::model::PolicyDir::*;
        match dir {
            In => "dir in",
            Out => "dir out",
            Fwd => "dir fwd",
            SocketIn => "socket in",
            SocketOut => "socket out",
        }
    }

    #[test]
    fn host_dump_matches_what_was_installed_and_ip_xfrm() {
        in_private_netns("host_dump_matches_what_was_installed_and_ip_xfrm", || {
            for cmd in fixtures::POLICY_COMMANDS
                .iter()
                .chain(fixtures::STATE_COMMANDS)
            {
                ip(cmd);
            }
            ip("xfrm policy setdefault in block fwd accept out accept");
            let _sock = socket_with_policies();

            let mut dumper = XfrmDumper::open().unwrap();
            let snap = dumper.snapshot().unwrap();
            assert_eq!(snap.policies, fixtures::expected_policies());
            let summary: Vec<_> = snap
                .policies
                .iter()
                .map(|p| (dir_words(p.dir).to_owned(), p.index, p.priority))
                .collect();
            assert_eq!(summary, ip_policy_summary());

            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            assert_eq!(snap.states.len(), 2);
            for (got, mut want) in snap.states.iter().zip(fixtures::expected_states()) {
                assert!(
                    got.add_time.abs_diff(now) < 600,
                    "add_time {}",
                    got.add_time
                );
                want.add_time = got.add_time;
                assert_eq!(*got, want);
                assert!(got.is_larval());
            }
            let ip_states = ip("xfrm state");
            assert!(ip_states.contains("proto esp spi 0x00001000 reqid 7 mode tunnel"));
            assert!(ip_states.contains("proto ah spi 0x00002000 reqid 3 mode transport"));

            assert_eq!(
                snap.defaults,
                DefaultPolicy {
                    block_in: true,
                    block_out: false
                }
            );
            let info = dumper.spd_info().unwrap();
            assert_eq!(
                (info.in_count, info.out_count, info.fwd_count),
                (1, 3, 1),
                "{info:?}"
            );
            assert_eq!((info.in_socket_count, info.out_socket_count), (1, 1));
            assert!(info.has_socket_policies());
            let count = ip("-s xfrm policy count");
            assert!(
                count.contains("SPD IN  1 OUT 3 FWD 1 (Sock: IN 1 OUT 1 FWD 0)"),
                "{count}"
            );

            // The same bytes, raw, for the pure fixture tests.
            let policies = raw_reply(&codec::encode_getpolicy_dump(1), true);
            let states = raw_reply(&codec::encode_getsa_dump(1), true);
            let defaults = raw_reply(&codec::encode_getdefault(1), false);
            let spd = raw_reply(&codec::encode_getspdinfo(1), false);
            let parsed: Vec<_> = Messages::new(&policies)
                .map(Result::unwrap)
                .filter(|m| m.kind == xfrm::XFRM_MSG_NEWPOLICY)
                .map(|m| codec::parse_policy(m.payload).unwrap())
                .collect();
            assert_eq!(parsed, snap.policies);
            write_fixture("policy_dump.bin", &policies);
            write_fixture("state_dump_larval.bin", &states);
            write_fixture("getdefault.bin", &defaults);
            write_fixture("spdinfo.bin", &spd);
        });
    }

    #[test]
    fn host_datagram_larger_than_the_buffer_is_retried_with_a_bigger_one() {
        in_private_netns(
            "host_datagram_larger_than_the_buffer_is_retried_with_a_bigger_one",
            || {
                for cmd in fixtures::POLICY_COMMANDS {
                    ip(cmd);
                }
                let mut dumper = XfrmDumper::open().unwrap();
                dumper.conn.buf = Vec::with_capacity(256);
                let policies = dumper.policies().unwrap();
                // The socket policies of the fixture are not installed here.
                assert_eq!(policies, fixtures::expected_policies()[2..]);
                assert!(dumper.conn.buf.capacity() > 256);
                // The first (truncated) attempt used sequence 1.
                assert_eq!(dumper.conn.seq, 2);
            },
        );
    }

    #[test]
    fn host_large_dump_spans_many_datagrams() {
        in_private_netns("host_large_dump_spans_many_datagrams", || {
            const N: u32 = 3000;
            let batch: String = (0..N)
                .map(|i| {
                    format!(
                        "xfrm policy add src 10.{}.{}.0/24 dst 172.16.0.0/16 dir out \
                         priority {i} tmpl proto esp mode transport\n",
                        i / 256,
                        i % 256
                    )
                })
                .collect();
            let path = std::env::temp_dir().join(format!("socksec-batch-{}", std::process::id()));
            std::fs::write(&path, batch).unwrap();
            let result = std::process::Command::new("ip")
                .arg("-batch")
                .arg(&path)
                .output()
                .unwrap();
            std::fs::remove_file(&path).unwrap();
            assert!(
                result.status.success(),
                "{}",
                String::from_utf8_lossy(&result.stderr)
            );

            let raw = raw_reply(&codec::encode_getpolicy_dump(1), true);
            assert!(raw.len() > 2 * RECV_BUF_LEN, "only {} bytes", raw.len());
            let policies = XfrmDumper::open().unwrap().policies().unwrap();
            assert_eq!(policies.len(), N as usize);
            // Newest first.
            let priorities: Vec<u32> = policies.iter().map(|p| p.priority).collect();
            assert_eq!(priorities, (0..N).rev().collect::<Vec<_>>());
            assert_eq!(spd_info().unwrap().out_count, N);
        });
    }

    #[test]
    fn host_defaults_accept_and_empty_tables_in_a_fresh_namespace() {
        in_private_netns(
            "host_defaults_accept_and_empty_tables_in_a_fresh_namespace",
            || {
                let snap = snapshot().unwrap();
                assert_eq!(snap, XfrmSnapshot::default());
                let info = spd_info().unwrap();
                assert_eq!(info.in_count + info.out_count + info.fwd_count, 0);
                assert!(!info.has_socket_policies());
            },
        );
    }

    /// Drops CAP_NET_ADMIN from the calling thread's effective set (capabilities are per
    /// thread), so that the kernel answers EPERM.
    fn drop_net_admin() {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy, Default)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
        let mut header = Header {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let mut data = [Data::default(); 2];
        // SAFETY: header and a two-element data array, as version 3 of capget requires.
        let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
        assert_eq!(rc, 0, "capget: {}", std::io::Error::last_os_error());
        const CAP_NET_ADMIN: u32 = 12;
        data[0].effective &= !(1 << CAP_NET_ADMIN);
        // SAFETY: as above; capset only reads the two structures.
        let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
        assert_eq!(rc, 0, "capset: {}", std::io::Error::last_os_error());
    }

    #[test]
    fn host_eperm_surfaces_as_permission_denied() {
        in_private_netns("host_eperm_surfaces_as_permission_denied", || {
            drop_net_admin();
            let err = snapshot().unwrap_err();
            assert!(matches!(err, DumpError::PermissionDenied { .. }), "{err:?}");
            assert!(err.to_string().contains("CAP_NET_ADMIN"), "{err}");
            assert!(matches!(
                spd_info().unwrap_err(),
                DumpError::PermissionDenied { .. }
            ));
        });
    }

    #[test]
    fn buffer_is_wiped_after_each_datagram() {
        in_private_netns("buffer_is_wiped_after_each_datagram", || {
            let mut conn = NlConn::open(NETLINK_XFRM).unwrap();
            let policies = conn
                .transact(codec::encode_getpolicy_dump, true, |m| Ok(m.payload.len()))
                .unwrap();
            assert!(policies.is_empty());
            // The buffer still holds the length of the last datagram (NLMSG_DONE), zeroed.
            assert_eq!(conn.buf.len(), nl::HDR_LEN + 4);
            assert!(conn.buf.iter().all(|&b| b == 0));
            assert!(conn.buf.capacity() >= RECV_BUF_LEN);
        });
    }
}
