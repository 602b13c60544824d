//! Log lines about clients: client-controlled text escaped (a newline or any other control
//! character cannot start a forged line), each line cut to [`MAX_LINE`] characters, and at
//! most [`BURST`] lines at once and [`PER_SECOND`] lines a second per uid (uid 0 unlimited);
//! the count of lines left out is logged with the next line that passes.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

/// Longest log line about a client, in characters, before it is cut.
pub const MAX_LINE: usize = 400;
/// Lines a uid may log at once.
pub const BURST: f64 = 20.0;
/// Lines a uid may log per second in the long run.
pub const PER_SECOND: f64 = 5.0;
/// Uids remembered before idle ones are forgotten.
const MAX_UIDS: usize = 4096;

/// `text` with every control character (and the Unicode line and paragraph separators)
/// escaped as Rust escapes it (`\n`, `\u{1b}`), cut to [`MAX_LINE`] characters.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_LINE + 16));
    for (n, c) in text.chars().enumerate() {
        if n == MAX_LINE {
            let _ = write!(out, "… ({} bytes in all)", text.len());
            break;
        }
        if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
    dropped: u64,
}

/// Per-uid token buckets for log lines.
#[derive(Debug, Default)]
pub struct Limiter {
    buckets: Mutex<HashMap<u32, Bucket>>,
}

impl Limiter {
    /// Whether `uid` may log a line now: `Some(n)` with the lines left out before this one,
    /// `None` when this one is left out too.
    pub fn allow(&self, uid: u32) -> Option<u64> {
        if uid == 0 {
            return Some(0);
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_UIDS && !buckets.contains_key(&uid) {
            buckets.retain(|_, b| b.dropped > 0 || refill(b, now) < BURST);
        }
        let b = buckets.entry(uid).or_insert(Bucket {
            tokens: BURST,
            last: now,
            dropped: 0,
        });
        b.tokens = refill(b, now);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Some(std::mem::take(&mut b.dropped))
        } else {
            b.dropped += 1;
            None
        }
    }
}

fn refill(b: &Bucket, now: Instant) -> f64 {
    (b.tokens + now.duration_since(b.last).as_secs_f64() * PER_SECOND).min(BURST)
}

/// Writes a whole log line with one `write` (`eprintln!` writes each piece on its own: five
/// system calls per line, and pieces of lines from other threads could come between them).
pub fn log_line(line: &str) {
    use std::io::Write;
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_cannot_forge_a_line() {
        let forged = "bad\nsocksecd: pid 1 uid 0 gid 0: flags 0x3\r\u{1b}[2J\u{2028}x";
        let line = escape(forged);
        assert!(!line.chars().any(|c| c.is_control()), "{line}");
        assert_eq!(
            line,
            "bad\\nsocksecd: pid 1 uid 0 gid 0: flags 0x3\\r\\u{1b}[2J\\u{2028}x"
        );
        let long = "a".repeat(10_000);
        let cut = escape(&long);
        assert!(cut.chars().count() < MAX_LINE + 40, "{}", cut.len());
        assert!(cut.ends_with("(10000 bytes in all)"), "{cut}");
    }

    #[test]
    fn a_uid_is_held_to_its_burst_and_root_is_not() {
        let l = Limiter::default();
        let passed = (0..1000).filter(|_| l.allow(65534).is_some()).count();
        assert!(
            passed >= BURST as usize && passed <= BURST as usize + 2,
            "{passed}"
        );
        assert_eq!(l.allow(65534), None);
        std::thread::sleep(std::time::Duration::from_millis(300));
        let reported = l.allow(65534).expect("a line after the refill");
        assert!(reported > 900, "{reported}");
        assert!((0..1000).all(|_| l.allow(0) == Some(0)));
        assert_eq!(l.allow(1000), Some(0), "another uid has its own bucket");
    }
}
