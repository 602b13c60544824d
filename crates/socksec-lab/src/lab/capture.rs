//! What crosses a namespace's veth, as a packet socket sees it: the lab's evidence that a
//! flow went only in ESP (and IKE), never in clear.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{Context, Result};
use crate::lab::netns::Netns;

/// Frames of one capture, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// ESP packets (IP protocol 50).
    pub esp: usize,
    /// IKE packets (UDP port 500 or 4500).
    pub ike: usize,
    /// TCP segments in clear to or from the watched port.
    pub clear_tcp: usize,
    /// Everything else.
    pub other: usize,
}

/// A capture running on a thread until [`Capture::stop`].
pub struct Capture {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Counts>,
}

impl Capture {
    /// Starts counting the frames of `ns`'s veth, watching TCP port `port`.
    pub fn start(ns: &Netns, port: u16) -> Result<Self> {
        let ifindex = ns
            .ip(&["-o", "link", "show", "dev", &ns.interface])?
            .split(':')
            .next()
            .and_then(|i| i.trim().parse::<u32>().ok())
            .context("reading the veth's interface index")?;
        let fd: OwnedFd = ns
            .run(move || crate::sys::packet_socket(ifindex, Duration::from_millis(100)))?
            .context("opening a packet socket")?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut counts = Counts::default();
            let mut buf = vec![0u8; 65_536];
            while !flag.load(Ordering::Relaxed) {
                match crate::sys::recv_frame(&fd, &mut buf) {
                    Ok(0) => {}
                    Ok(n) => classify(&buf[..n], port, &mut counts),
                    Err(_) => break,
                }
            }
            counts
        });
        Ok(Self { stop, thread })
    }

    /// Stops and returns the counts.
    pub fn stop(self) -> Counts {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// Counts one Ethernet frame.
fn classify(frame: &[u8], port: u16, counts: &mut Counts) {
    let kind = frame.get(12..14).map(|t| u16::from_be_bytes([t[0], t[1]]));
    let (proto, l4) = match kind {
        Some(0x0800) if frame.len() >= 34 => {
            let ihl = usize::from(frame[14] & 0x0f) * 4;
            (frame[14 + 9], frame.get(14 + ihl..))
        }
        Some(0x86dd) if frame.len() >= 54 => (frame[14 + 6], frame.get(54..)),
        _ => {
            counts.other += 1;
            return;
        }
    };
    let ports = l4.filter(|l| l.len() >= 4).map(|l| {
        (
            u16::from_be_bytes([l[0], l[1]]),
            u16::from_be_bytes([l[2], l[3]]),
        )
    });
    match (proto, ports) {
        (50, _) => counts.esp += 1,
        (17, Some((s, d))) if [s, d].iter().any(|p| *p == 500 || *p == 4500) => counts.ike += 1,
        (6, Some((s, d))) if s == port || d == port => counts.clear_tcp += 1,
        _ => counts.other += 1,
    }
}
