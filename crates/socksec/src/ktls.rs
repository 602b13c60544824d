//! Kernel TLS: a per-socket fact. When a TLS library hands its record keys to the kernel
//! (`TCP_ULP` "tls", then `TLS_TX` and `TLS_RX`), the kernel encrypts and authenticates every
//! record it sends and decrypts and verifies every record it receives: with both directions
//! configured the connection is secured and encrypted by the system.
//!
//! The parameters are read back with `getsockopt(SOL_TLS, TLS_TX/TLS_RX)` asking for only the
//! 4-byte `struct tls_crypto_info` header (version, cipher): with exactly that length the
//! kernel copies the header and nothing of the keys (`do_tls_getsockopt_conf`). A direction
//! that is not configured answers `EBUSY`.
//!
//! kTLS knows no identities: the handshake, and so the peer's certificate, stayed in the TLS
//! library. An answer secured by kTLS alone says so when identities are asked for.

use std::os::fd::BorrowedFd;

use serde::{Deserialize, Serialize};

use crate::contract::{Flags, SecurityInfo};
use crate::error::Error;
use crate::report::{Direction, Mechanism, Protection, Reason};

/// `SOL_TLS`.
const SOL_TLS: libc::c_int = 282;
/// `TLS_TX`, `TLS_RX`.
const TLS_TX: libc::c_int = 1;
const TLS_RX: libc::c_int = 2;

/// One direction's kTLS parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KtlsParams {
    /// `"1.2"`, `"1.3"`, or the raw version (`"0x0305"`).
    pub version: String,
    /// `"aes_gcm_128"`, `"aes_gcm_256"`, `"aes_ccm_128"`, `"chacha20_poly1305"`, `"sm4_gcm"`,
    /// `"sm4_ccm"`, `"aria_gcm_128"`, `"aria_gcm_256"`, or `"cipher <n>"` for one socksec does
    /// not know.
    pub cipher: String,
    /// Whether socksec knows the cipher (every known kTLS cipher is an AEAD: integrity and
    /// confidentiality).
    pub known_cipher: bool,
}

/// What a socket's kTLS state is.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct KtlsState {
    /// Whether the socket's upper-layer protocol is "tls".
    pub tls_ulp: bool,
    /// Transmit parameters, when configured.
    pub tx: Option<KtlsParams>,
    /// Receive parameters, when configured.
    pub rx: Option<KtlsParams>,
}

/// Decodes a `struct tls_crypto_info` header (`u16 version`, `u16 cipher_type`, host order).
pub fn parse_crypto_info(b: [u8; 4]) -> KtlsParams {
    let version = u16::from_ne_bytes([b[0], b[1]]);
    let cipher = u16::from_ne_bytes([b[2], b[3]]);
    let name = match cipher {
        51 => Some("aes_gcm_128"),
        52 => Some("aes_gcm_256"),
        53 => Some("aes_ccm_128"),
        54 => Some("chacha20_poly1305"),
        55 => Some("sm4_gcm"),
        56 => Some("sm4_ccm"),
        57 => Some("aria_gcm_128"),
        58 => Some("aria_gcm_256"),
        _ => None,
    };
    KtlsParams {
        version: match version {
            0x0303 => "1.2".to_string(),
            0x0304 => "1.3".to_string(),
            v => format!("0x{v:04x}"),
        },
        cipher: name.map_or_else(|| format!("cipher {cipher}"), str::to_string),
        known_cipher: name.is_some(),
    }
}

/// Reads a TCP socket's kTLS state.
pub fn read(fd: BorrowedFd<'_>) -> Result<KtlsState, Error> {
    let mut ulp = [0u8; 16];
    let n = match crate::sys::getsockopt_bytes(fd, libc::IPPROTO_TCP, libc::TCP_ULP, &mut ulp) {
        Ok(n) => n,
        // A kernel without upper-layer protocols has no kTLS.
        Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => return Ok(KtlsState::default()),
        Err(e) => return Err(Error::system("getsockopt(TCP_ULP)", &e)),
    };
    let name = ulp[..n].split(|&b| b == 0).next().unwrap_or_default();
    if name != b"tls" {
        return Ok(KtlsState::default());
    }
    let direction = |opt, what| {
        let mut b = [0u8; 4];
        match crate::sys::getsockopt_bytes(fd, SOL_TLS, opt, &mut b) {
            Ok(4) => Ok(Some(parse_crypto_info(b))),
            Ok(_) => Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(None),
            Err(e) => Err(Error::system(what, &e)),
        }
    };
    Ok(KtlsState {
        tls_ulp: true,
        tx: direction(TLS_TX, "getsockopt(SOL_TLS, TLS_TX)")?,
        rx: direction(TLS_RX, "getsockopt(SOL_TLS, TLS_RX)")?,
    })
}

/// Adds kTLS to an answer: one protection per direction; SECURED and ENCRYPTED when both
/// directions are configured with a known cipher. Pure.
pub fn apply(info: &mut SecurityInfo, state: &KtlsState) {
    if !state.tls_ulp {
        return;
    }
    let mut both = true;
    for (direction, params) in [
        (Direction::Outbound, &state.tx),
        (Direction::Inbound, &state.rx),
    ] {
        let ok = params.as_ref().is_some_and(|p| p.known_cipher);
        let reason = match params {
            _ if ok => None,
            Some(p) => Some(Reason::Unknown {
                direction,
                detail: format!("kernel TLS with an unknown {}", p.cipher),
            }),
            None => Some(Reason::Unknown {
                direction,
                detail: "kernel TLS is attached but this direction has no keys".into(),
            }),
        };
        both &= ok;
        info.add_protection(Protection {
            ktls: params.clone(),
            ..Protection::without_sas(Mechanism::Ktls, direction, ok, ok, reason)
        });
    }
    if both {
        info.flags = Flags::from_verdict(true, true);
    }
}

/// Reads the socket's kTLS state and adds it to the answer; a socket whose state cannot be
/// read gets an error (it is the caller's own socket: that should not happen).
pub fn attach(info: &mut SecurityInfo, fd: BorrowedFd<'_>) -> Result<(), Error> {
    let state = read(fd)?;
    apply(info, &state);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crypto_info_headers() {
        let h = |v: u16, c: u16| {
            let mut b = [0u8; 4];
            b[..2].copy_from_slice(&v.to_ne_bytes());
            b[2..].copy_from_slice(&c.to_ne_bytes());
            parse_crypto_info(b)
        };
        let p = h(0x0304, 52);
        assert_eq!(
            (p.version.as_str(), p.cipher.as_str(), p.known_cipher),
            ("1.3", "aes_gcm_256", true)
        );
        let p = h(0x0303, 54);
        assert_eq!(
            (p.version.as_str(), p.cipher.as_str()),
            ("1.2", "chacha20_poly1305")
        );
        let p = h(0x0305, 99);
        assert_eq!(
            (p.version.as_str(), p.cipher.as_str(), p.known_cipher),
            ("0x0305", "cipher 99", false)
        );
    }
}
