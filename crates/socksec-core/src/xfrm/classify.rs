//! What an SA's algorithms give: integrity, confidentiality, both or neither.
//!
//! The kernel canonicalises algorithm names when an SA is added (`xfrm_algo.c`), so a dump
//! only ever carries names from a fixed list. A name outside the lists below is treated as
//! giving nothing: claiming protection that an unknown algorithm may not give would be the
//! worst error this crate can make.

use super::model::{Algorithms, IpsecProto};

/// AEAD algorithms that encrypt (every kernel AEAD authenticates).
const ENCRYPTING_AEADS: &[&str] = &[
    "rfc4106(gcm(aes))",
    "rfc4309(ccm(aes))",
    "rfc7539esp(chacha20,poly1305)",
];

/// AES-GMAC: an AEAD construction that authenticates without encrypting
/// (strongSwan's `NULL_AES_GMAC`).
const GMAC: &str = "rfc4543(gcm(aes))";

/// Encryption algorithms that hide the payload.
const CIPHERS: &[&str] = &[
    "cbc(des)",
    "cbc(des3_ede)",
    "cbc(cast5)",
    "cbc(blowfish)",
    "cbc(aes)",
    "cbc(serpent)",
    "cbc(camellia)",
    "cbc(twofish)",
    "rfc3686(ctr(aes))",
    "cbc(sm4)",
];

/// Integrity algorithms that authenticate (`digest_null` is deliberately absent).
const AUTHENTICATORS: &[&str] = &[
    "hmac(md5)",
    "hmac(sha1)",
    "hmac(sha256)",
    "hmac(sha384)",
    "hmac(sha512)",
    "hmac(rmd160)",
    "xcbc(aes)",
    "cmac(aes)",
    "hmac(sm3)",
];

/// What one SA gives the traffic it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaStrength {
    /// The SA authenticates the traffic (a forged or altered packet is dropped).
    pub integrity: bool,
    /// The SA encrypts the traffic.
    pub confidentiality: bool,
}

/// Classifies an SA by protocol and algorithms (linux-mechanisms §2.5).
pub fn classify(proto: IpsecProto, algs: &Algorithms) -> SaStrength {
    let auth_ok = algs
        .auth
        .as_ref()
        .is_some_and(|(n, _)| AUTHENTICATORS.contains(&n.as_str()));
    match proto {
        IpsecProto::Ah => SaStrength {
            integrity: auth_ok,
            confidentiality: false,
        },
        IpsecProto::Esp => match (&algs.aead, &algs.crypt) {
            (Some((name, _)), _) if name == GMAC => SaStrength {
                integrity: true,
                confidentiality: false,
            },
            (Some((name, _)), _) => {
                let known = ENCRYPTING_AEADS.contains(&name.as_str());
                SaStrength {
                    integrity: known,
                    confidentiality: known,
                }
            }
            (None, Some((name, _))) => SaStrength {
                integrity: auth_ok,
                confidentiality: CIPHERS.contains(&name.as_str()),
            },
            (None, None) => SaStrength {
                integrity: false,
                confidentiality: false,
            },
        },
        IpsecProto::Comp | IpsecProto::Other(_) => SaStrength {
            integrity: false,
            confidentiality: false,
        },
    }
}

/// A short name for the SA's algorithms, as `swanctl` users would recognise them
/// (`rfc4106(gcm(aes))`, `cbc(aes)+hmac(sha256)`, `hmac(sha256)` for AH).
pub fn describe(proto: IpsecProto, algs: &Algorithms) -> String {
    let parts: Vec<&str> = [
        algs.aead.as_ref().map(|(n, _)| n.as_str()),
        algs.crypt.as_ref().map(|(n, _)| n.as_str()),
        algs.auth.as_ref().map(|(n, _)| n.as_str()),
        algs.comp.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect();
    format!("{proto} {}", parts.join("+"))
}

/// The PF_KEY (`SADB_AALG_*`) id of an integrity algorithm, which templates' `aalgos`
/// bitmask refers to (`xfrm_algo.c`'s `sadb_alg_id`). `None` for an unknown name.
pub fn sadb_auth_id(name: &str) -> Option<u8> {
    Some(match name {
        "digest_null" => 0,
        "hmac(md5)" => 2,
        "hmac(sha1)" => 3,
        "hmac(sha256)" => 5,
        "hmac(sha384)" => 6,
        "hmac(sha512)" => 7,
        "hmac(rmd160)" => 8,
        "xcbc(aes)" => 9,
        "cmac(aes)" => 10,
        "hmac(sm3)" => 11,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn algs(aead: Option<&str>, crypt: Option<&str>, auth: Option<&str>) -> Algorithms {
        Algorithms {
            aead: aead.map(|n| (n.to_string(), 128)),
            crypt: crypt.map(|n| (n.to_string(), 128)),
            auth: auth.map(|n| (n.to_string(), 128)),
            comp: None,
        }
    }

    #[test]
    fn classification_table() {
        use IpsecProto::*;
        let cases = [
            (Ah, algs(None, None, Some("hmac(sha256)")), true, false),
            (Ah, algs(None, None, Some("digest_null")), false, false),
            (Esp, algs(Some("rfc4106(gcm(aes))"), None, None), true, true),
            (Esp, algs(Some("rfc4309(ccm(aes))"), None, None), true, true),
            (
                Esp,
                algs(Some("rfc7539esp(chacha20,poly1305)"), None, None),
                true,
                true,
            ),
            (
                Esp,
                algs(Some("rfc4543(gcm(aes))"), None, None),
                true,
                false,
            ),
            (Esp, algs(Some("rfc9999(new)"), None, None), false, false),
            (
                Esp,
                algs(None, Some("ecb(cipher_null)"), Some("hmac(sha256)")),
                true,
                false,
            ),
            (
                Esp,
                algs(None, Some("cbc(aes)"), Some("hmac(sha256)")),
                true,
                true,
            ),
            (
                Esp,
                algs(None, Some("cbc(aes)"), Some("digest_null")),
                false,
                true,
            ),
            (Esp, algs(None, Some("cbc(aes)"), None), false, true),
            (
                Esp,
                algs(None, Some("ecb(cipher_null)"), Some("digest_null")),
                false,
                false,
            ),
            (
                Esp,
                algs(None, Some("rot13"), Some("hmac(sha1)")),
                true,
                false,
            ),
            (Esp, algs(None, None, None), false, false),
            (Comp, algs(None, None, None), false, false),
        ];
        for (proto, a, integrity, confidentiality) in cases {
            assert_eq!(
                classify(proto, &a),
                SaStrength {
                    integrity,
                    confidentiality
                },
                "{proto:?} {a:?}"
            );
        }
    }

    #[test]
    fn description_names_every_algorithm() {
        let a = algs(None, Some("cbc(aes)"), Some("hmac(sha256)"));
        assert_eq!(describe(IpsecProto::Esp, &a), "esp cbc(aes)+hmac(sha256)");
    }
}
