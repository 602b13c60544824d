//! Kernel TLS as plain data: one direction's parameters and a socket's state, and the decoder
//! of the `struct tls_crypto_info` header (version, cipher) that both `getsockopt(SOL_TLS)` and
//! inet_diag's `INET_DIAG_ULP_INFO` report. No key byte is ever read.

use serde::{Deserialize, Serialize};

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
