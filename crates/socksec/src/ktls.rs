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

use crate::error::Error;
pub use socksec_core::ktls::{KtlsState, parse_crypto_info};

/// `SOL_TLS`.
const SOL_TLS: libc::c_int = 282;
/// `TLS_TX`, `TLS_RX`.
const TLS_TX: libc::c_int = 1;
const TLS_RX: libc::c_int = 2;

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
