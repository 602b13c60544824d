//! The kernel's XFRM change notifications: a typed stream of events from the netlink
//! multicast groups `XFRMNLGRP_SA`, `POLICY`, `EXPIRE` and `ACQUIRE`.
//!
//! (A private module: the example shows its use inside the crate; outside it, [`crate::events`].)
//!
//! ```ignore
//! use std::time::Duration;
//! use socksec::xfrm::events::{XfrmEvent, XfrmEvents};
//! let mut events = XfrmEvents::subscribe()?;
//! while let Some(event) = events.next_event(Some(Duration::from_secs(1)))? {
//!     if let XfrmEvent::Overrun = event {
//!         // Events were lost: read the tables afresh.
//!     }
//!     println!("{}", event.summary());
//! }
//! # Ok::<(), socksec::xfrm::dump::DumpError>(())
//! ```
//!
//! Joining the groups needs `CAP_NET_ADMIN` (the kernel answers `EPERM` otherwise, reported as
//! [`DumpError::PermissionDenied`]). When the socket's receive queue overflows the kernel drops
//! notifications and the next receive fails with `ENOBUFS`: that becomes
//! [`XfrmEvent::Overrun`], after which a consumer that mirrors the tables must re-read them.
//!
//! Some changes send no notification at all: a socket's own policy (`IP_XFRM_POLICY`), the SPI
//! allocation of a larval state, and the default actions. Consumers that must see them poll the
//! counters ([`super::dump::XfrmDumper::spd_info`], [`super::dump::XfrmDumper::sad_count`]).
//!
//! State notifications carry the keys; as in [`super::dump`], the receive buffer is wiped as
//! soon as the codec has taken names and numbers out of it.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use netlink_sys::{Socket, protocols::NETLINK_XFRM};
use zeroize::Zeroize;

use super::codec::xfrm;

use super::dump::DumpError;
use socksec_core::netlink::Messages;
pub use socksec_core::xfrm::events::{XfrmEvent, decode};

/// Receive buffer: one notification per datagram, far below this.
const RECV_BUF_LEN: usize = 64 * 1024;

/// A `NETLINK_XFRM` socket that has joined the notification groups.
pub struct XfrmEvents {
    sock: Socket,
    buf: Vec<u8>,
    pending: VecDeque<XfrmEvent>,
    timeout: Option<Option<Duration>>,
}

impl std::fmt::Debug for XfrmEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XfrmEvents")
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl XfrmEvents {
    /// Joins the SA, policy, expire and acquire groups of the caller's network namespace.
    pub fn subscribe() -> Result<Self, DumpError> {
        Self::subscribe_groups(&[
            xfrm::XFRMNLGRP_SA,
            xfrm::XFRMNLGRP_POLICY,
            xfrm::XFRMNLGRP_EXPIRE,
            xfrm::XFRMNLGRP_ACQUIRE,
        ])
    }

    /// Joins the given `XFRMNLGRP_*` groups.
    pub fn subscribe_groups(groups: &[u32]) -> Result<Self, DumpError> {
        const REQUEST: &str = "joining the XFRM notification groups";
        let io_err = |source: io::Error| DumpError::Io {
            request: REQUEST,
            source,
        };
        let mut sock = Socket::new(NETLINK_XFRM).map_err(io_err)?;
        sock.bind_auto().map_err(io_err)?;
        for &group in groups {
            if let Err(e) = sock.add_membership(group) {
                return Err(match e.raw_os_error() {
                    Some(libc::EPERM) => DumpError::PermissionDenied { request: REQUEST },
                    _ => io_err(e),
                });
            }
        }
        Ok(Self {
            sock,
            buf: Vec::with_capacity(RECV_BUF_LEN),
            pending: VecDeque::new(),
            timeout: None,
        })
    }

    /// Whether events already received and decoded wait to be returned by
    /// [`XfrmEvents::next_event`] (they are no longer in the socket's queue).
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Sets the socket's receive buffer (`SO_RCVBUF`); a small one makes overruns likely.
    pub fn set_receive_buffer(&self, bytes: usize) -> io::Result<()> {
        socket2::SockRef::from(&self.sock).set_recv_buffer_size(bytes)
    }

    /// Waits until a notification is queued, without taking it, or `timeout` passes (`None`:
    /// forever); `Ok(true)` when one is. A loss (`ENOBUFS`) counts as one: the next
    /// [`XfrmEvents::next_event`] returns [`XfrmEvent::Overrun`].
    ///
    /// With [`XfrmEvents::is_queued`] this lets another thread know whether a notification is
    /// still waiting to be taken: between `wait` and `next_event` it stays in the queue.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<bool, DumpError> {
        if !self.pending.is_empty() {
            return Ok(true);
        }
        self.set_timeout(timeout)?;
        // The first bytes are the netlink header: no key material, wiped anyway.
        let mut probe: Vec<u8> = Vec::with_capacity(16);
        loop {
            match self.sock.recv(&mut probe, libc::MSG_PEEK | libc::MSG_TRUNC) {
                Ok(_) => {
                    probe.as_mut_slice().zeroize();
                    return Ok(true);
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    // The error is consumed by this receive: keep it for next_event.
                    self.pending.push_back(XfrmEvent::Overrun);
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(false);
                }
                Err(source) => {
                    return Err(DumpError::Io {
                        request: "waiting for XFRM notifications",
                        source,
                    });
                }
            }
        }
    }

    /// Whether a notification is queued on the socket of `fd` (a duplicate of this socket's
    /// descriptor, see [`AsFd`]) and not yet taken by [`XfrmEvents::next_event`]; never
    /// blocks. An `Err` carrying `ENOBUFS` means notifications were lost — and that this call
    /// took the error, which the thread reading the events will then not see: tell it.
    pub fn is_queued(fd: BorrowedFd<'_>) -> io::Result<bool> {
        let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 16];
        match socket2::SockRef::from(&fd).recv_with_flags(
            &mut probe,
            libc::MSG_PEEK | libc::MSG_DONTWAIT | libc::MSG_TRUNC,
        ) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<(), DumpError> {
        // A zero read timeout means "block forever" to the OS; use the smallest real one.
        let timeout = timeout.map(|t| t.max(Duration::from_micros(100)));
        if self.timeout != Some(timeout) {
            socket2::SockRef::from(&self.sock)
                .set_read_timeout(timeout)
                .map_err(|source| DumpError::Io {
                    request: "receiving XFRM notifications",
                    source,
                })?;
            self.timeout = Some(timeout);
        }
        Ok(())
    }

    /// The next event, waiting at most `timeout` (`None`: forever). `Ok(None)` when none
    /// arrived in time.
    pub fn next_event(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Option<XfrmEvent>, DumpError> {
        if let Some(e) = self.pending.pop_front() {
            return Ok(Some(e));
        }
        self.set_timeout(timeout)?;
        let io_err = |source: io::Error| DumpError::Io {
            request: "receiving XFRM notifications",
            source,
        };
        loop {
            self.buf.clear();
            let received = match self.sock.recv(&mut self.buf, libc::MSG_TRUNC) {
                Ok(n) => n,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    return Ok(Some(XfrmEvent::Overrun));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None);
                }
                Err(e) => return Err(io_err(e)),
            };
            if received > self.buf.len() {
                // Cannot happen with one notification per datagram; treat it as a loss.
                self.buf.as_mut_slice().zeroize();
                return Ok(Some(XfrmEvent::Overrun));
            }
            for msg in Messages::new(&self.buf) {
                match msg {
                    Ok(msg) => {
                        if let Some(event) = decode(&msg) {
                            self.pending.push_back(event);
                        }
                    }
                    Err(e) => {
                        self.pending.push_back(XfrmEvent::Undecodable {
                            kind: 0,
                            reason: e.to_string(),
                        });
                        break;
                    }
                }
            }
            self.buf.as_mut_slice().zeroize();
            if let Some(e) = self.pending.pop_front() {
                return Ok(Some(e));
            }
        }
    }
}

impl AsFd for XfrmEvents {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl Drop for XfrmEvents {
    fn drop(&mut self) {
        self.buf.as_mut_slice().zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::super::dump::testenv::{in_private_netns, ip};
    use super::super::model::PolicyType;
    use super::*;

    fn next(ev: &mut XfrmEvents) -> XfrmEvent {
        ev.next_event(Some(Duration::from_secs(5)))
            .unwrap()
            .expect("an event within 5 s")
    }

    #[test]
    fn host_policy_and_state_events_decode() {
        in_private_netns("host_policy_and_state_events_decode", || {
            let mut ev = XfrmEvents::subscribe().unwrap();
            ip(
                "xfrm policy add src 10.0.0.1/32 dst 10.0.0.2/32 proto tcp dir out priority 7 \
                mark 0x5 mask 0xff tmpl src 10.0.0.1 dst 10.0.0.2 proto esp reqid 9 mode transport",
            );
            let XfrmEvent::NewPolicy(p) = next(&mut ev) else {
                panic!("not a new policy")
            };
            assert_eq!((p.priority, p.mark.value, p.templates.len()), (7, 5, 1));
            ip(
                "xfrm policy update src 10.0.0.1/32 dst 10.0.0.2/32 proto tcp dir out \
                priority 7 mark 0x5 mask 0xff",
            );
            let XfrmEvent::UpdatedPolicy(u) = next(&mut ev) else {
                panic!("not an updated policy")
            };
            assert_eq!((u.index, u.templates.len()), (p.index, 0));
            ip(
                "xfrm policy delete src 10.0.0.1/32 dst 10.0.0.2/32 proto tcp dir out \
                mark 0x5 mask 0xff",
            );
            let XfrmEvent::DeletedPolicy(d) = next(&mut ev) else {
                panic!("not a deleted policy")
            };
            assert_eq!((d.index, d.priority, d.mark), (p.index, 7, p.mark));
            assert_eq!(d.selector, p.selector);

            // The host kernel holds no ESP SA with keys: a larval state (allocated SPI, which
            // sends no notification) is deleted instead.
            ip(
                "xfrm state allocspi src 10.0.0.1 dst 10.0.0.2 proto esp mode transport \
                reqid 9 mark 0x5 mask 0xff min 0x1234 max 0x1234",
            );
            ip(
                "xfrm state delete src 10.0.0.1 dst 10.0.0.2 proto esp spi 0x1234 mark 0x5 mask 0xff",
            );
            let XfrmEvent::DeletedState(d) = next(&mut ev) else {
                panic!("not a deleted state")
            };
            assert_eq!(
                (d.spi, d.reqid, d.mark.value, d.mark.mask),
                (0x1234, 9, 5, 0xff)
            );
            assert!(d.is_larval());
            // Flushing an empty table sends nothing.
            ip("xfrm state allocspi src 10.0.0.1 dst 10.0.0.3 proto esp min 0x99 max 0x99");
            ip("xfrm state flush");
            assert_eq!(next(&mut ev), XfrmEvent::FlushedStates { proto: 0 });
            ip("xfrm policy add src 10.0.0.1/32 dst 10.0.0.3/32 dir in");
            assert!(matches!(next(&mut ev), XfrmEvent::NewPolicy(_)));
            ip("xfrm policy flush");
            assert_eq!(
                next(&mut ev),
                XfrmEvent::FlushedPolicies {
                    ptype: PolicyType::Main
                }
            );
            assert_eq!(
                ev.next_event(Some(Duration::from_millis(50))).unwrap(),
                None
            );
        });
    }
}
