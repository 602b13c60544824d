//! IPSEC2's `SaLookupContext`: a GUID that names a connection's SAs, and the details call that
//! turns it back into the full description of those SAs.
//!
//! The GUID is not a key into a table of this process: it *encodes* what identifies the SAs —
//! the CHILD SA's and the IKE SA's unique ids (as the IKE daemon numbers them) and the
//! outbound and inbound SPIs. So a context obtained in one process (an application, the broker)
//! can be looked up in another (`socksec sa GUID`), and a lookup after the SAs were rekeyed or
//! deleted says that they are gone instead of describing others. In the Windows `GUID` layout:
//! `Data1` = CHILD SA id, `Data2:Data3` = IKE SA id, `Data4` = outbound SPI then inbound SPI
//! (big-endian), so the text form reads `cccccccc-iiii-iiii-oooo-ooooIIIIIIII`.
//!
//! The nil GUID means "no SA": the connection is not protected by IPsec.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, ErrorKind};
use crate::report::{Direction, Protection, SaInfo};
use crate::vici::model::{ChildSa, IkeSa};
use crate::xfrm::model::{Family, IpsecProto, XfrmSnapshot};

/// What an IPSEC2 `SaLookupContext` names: a connection's CHILD SA, its IKE SA and the SPIs of
/// the kernel SAs in each direction. All zero is the nil GUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SaLookupContext {
    /// The CHILD SA's unique id (0 when the IKE daemon does not know the SAs).
    pub child_sa_id: u32,
    /// The IKE SA's unique id (0 when the IKE daemon does not know the SAs).
    pub ike_sa_id: u32,
    /// SPI of the outbound ESP/AH SA (0 when none).
    pub spi_out: u32,
    /// SPI of the inbound ESP/AH SA (0 when none).
    pub spi_in: u32,
}

impl SaLookupContext {
    /// The nil GUID: no SA.
    pub const NIL: Self = Self {
        child_sa_id: 0,
        ike_sa_id: 0,
        spi_out: 0,
        spi_in: 0,
    };

    /// Whether this is the nil GUID.
    pub fn is_nil(&self) -> bool {
        *self == Self::NIL
    }

    /// The context of an answer's protections: the first ESP/AH SA of each direction. The ids
    /// stay 0 until the IKE daemon's view is joined ([`Self::with_ids`]).
    pub fn from_protections(protections: &[Protection]) -> Self {
        let spi = |dir: Direction| {
            protections
                .iter()
                .filter(|p| p.direction == dir)
                .flat_map(|p| &p.sas)
                .find(|s| matches!(s.proto, IpsecProto::Esp | IpsecProto::Ah))
                .map_or(0, |s| s.spi)
        };
        Self {
            spi_out: spi(Direction::Outbound),
            spi_in: spi(Direction::Inbound),
            ..Self::NIL
        }
    }

    /// The same context with the IKE daemon's ids (charon numbers SAs with 32-bit ids).
    pub fn with_ids(self, ike_sa_id: u64, child_sa_id: u64) -> Self {
        Self {
            ike_sa_id: u32::try_from(ike_sa_id).unwrap_or(u32::MAX),
            child_sa_id: u32::try_from(child_sa_id).unwrap_or(u32::MAX),
            ..self
        }
    }

    /// The 16 bytes of a Windows `GUID` in memory (x86-64: `Data1`, `Data2`, `Data3`
    /// little-endian, `Data4` as bytes).
    pub fn to_guid_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&self.child_sa_id.to_le_bytes());
        b[4..6].copy_from_slice(&((self.ike_sa_id >> 16) as u16).to_le_bytes());
        b[6..8].copy_from_slice(&(self.ike_sa_id as u16).to_le_bytes());
        b[8..12].copy_from_slice(&self.spi_out.to_be_bytes());
        b[12..16].copy_from_slice(&self.spi_in.to_be_bytes());
        b
    }

    /// The context a Windows `GUID`'s memory bytes hold ([`Self::to_guid_bytes`] reversed).
    pub fn from_guid_bytes(b: [u8; 16]) -> Self {
        let word = |r: std::ops::Range<usize>| [b[r.start], b[r.start + 1]];
        let quad = |i: usize| [b[i], b[i + 1], b[i + 2], b[i + 3]];
        Self {
            child_sa_id: u32::from_le_bytes(quad(0)),
            ike_sa_id: (u32::from(u16::from_le_bytes(word(4..6))) << 16)
                | u32::from(u16::from_le_bytes(word(6..8))),
            spi_out: u32::from_be_bytes(quad(8)),
            spi_in: u32::from_be_bytes(quad(12)),
        }
    }
}

impl fmt::Display for SaLookupContext {
    /// The registry form of the GUID, lower case, without braces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.spi_out.to_be_bytes();
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:08x}",
            self.child_sa_id,
            self.ike_sa_id >> 16,
            self.ike_sa_id & 0xffff,
            o[0],
            o[1],
            o[2],
            o[3],
            self.spi_in
        )
    }
}

/// A string that is not a GUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a GUID (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx): {0:?}")]
pub struct BadGuid(String);

impl FromStr for SaLookupContext {
    type Err = BadGuid;

    /// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, with or without braces, any case.
    fn from_str(s: &str) -> Result<Self, BadGuid> {
        let bad = || BadGuid(s.to_owned());
        let inner = s
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .unwrap_or(s);
        let groups: Vec<&str> = inner.split('-').collect();
        let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
        if lens != [8, 4, 4, 4, 12]
            || !groups
                .iter()
                .all(|g| g.bytes().all(|c| c.is_ascii_hexdigit()))
        {
            return Err(bad());
        }
        let hex = |t: &str| u64::from_str_radix(t, 16).map_err(|_| bad());
        let last = hex(groups[4])?;
        let spi_out = (hex(groups[3])? << 16) | (last >> 32);
        Ok(Self {
            child_sa_id: hex(groups[0])? as u32,
            ike_sa_id: ((hex(groups[1])? << 16) | hex(groups[2])?) as u32,
            spi_out: spi_out as u32,
            spi_in: last as u32,
        })
    }
}

impl Serialize for SaLookupContext {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SaLookupContext {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The full description of the SAs a lookup context names, as they are now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaDetails {
    /// The context that was looked up.
    pub context: SaLookupContext,
    /// The kernel's outbound SAs with the context's outbound SPI (empty when gone).
    pub outbound: Vec<SaInfo>,
    /// The kernel's inbound SAs with the context's inbound SPI (empty when gone).
    pub inbound: Vec<SaInfo>,
    /// The IKE SA, as the IKE daemon lists it (without its CHILD SAs), when it still exists.
    pub ike_sa: Option<IkeSa>,
    /// The CHILD SA, as the IKE daemon lists it, when it still exists.
    pub child_sa: Option<ChildSa>,
    /// What could not be found, and why.
    pub notes: Vec<String>,
}

impl SaDetails {
    /// Whether anything the context names still exists.
    pub fn found(&self) -> bool {
        !self.outbound.is_empty()
            || !self.inbound.is_empty()
            || self.ike_sa.is_some()
            || self.child_sa.is_some()
    }
}

/// Looks a context up: the kernel's SAs by SPI in the snapshot `xfrm` gives, the IKE daemon's
/// IKE and CHILD SA by unique id in what `ike_sas` gives (each asked only when needed). Pure:
/// the caller's closures read the kernel and the IKE daemon.
///
/// A nil context is an error ([`ErrorKind::InvalidArgument`]); a context whose SAs are all gone
/// is a successful answer whose [`SaDetails::found`] is false and whose notes say so.
pub fn details(
    context: &SaLookupContext,
    xfrm: impl FnOnce() -> Result<Arc<XfrmSnapshot>, Error>,
    ike_sas: impl FnOnce() -> Result<Arc<Vec<IkeSa>>, String>,
) -> Result<SaDetails, Error> {
    if context.is_nil() {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            "the nil SaLookupContext names no SA (the connection was not protected by IPsec)",
        ));
    }
    let snapshot = xfrm()?;
    let kernel = |spi: u32, dir: &str, notes: &mut Vec<String>| -> Vec<SaInfo> {
        if spi == 0 {
            return Vec::new();
        }
        let found: Vec<SaInfo> = snapshot
            .states
            .iter()
            .filter(|s| s.spi == spi && matches!(s.proto, IpsecProto::Esp | IpsecProto::Ah))
            .map(|s| crate::xfrm::resolve::sa_info(s, Family::Inet))
            .collect();
        if found.is_empty() {
            notes.push(format!(
                "the kernel has no {dir} SA with SPI 0x{spi:08x} (any more)"
            ));
        }
        found
    };
    let mut notes = Vec::new();
    let outbound = kernel(context.spi_out, "outbound", &mut notes);
    let inbound = kernel(context.spi_in, "inbound", &mut notes);
    let (mut ike_sa, mut child_sa) = (None, None);
    if context.ike_sa_id == 0 {
        notes.push("no IKE SA is named: the IKE daemon did not know these SAs".into());
    } else {
        match ike_sas() {
            Ok(list) => {
                (ike_sa, child_sa) = find_ike(&list, context);
                if ike_sa.is_none() {
                    notes.push(format!(
                        "the IKE daemon has no IKE SA #{} (any more)",
                        context.ike_sa_id
                    ));
                } else if child_sa.is_none() {
                    notes.push(format!(
                        "the IKE daemon has no CHILD SA #{} (any more)",
                        context.child_sa_id
                    ));
                }
            }
            Err(why) => notes.push(why),
        }
    }
    Ok(SaDetails {
        context: *context,
        outbound,
        inbound,
        ike_sa,
        child_sa,
        notes,
    })
}

fn find_ike(list: &Arc<Vec<IkeSa>>, c: &SaLookupContext) -> (Option<IkeSa>, Option<ChildSa>) {
    let Some(ike) = list.iter().find(|i| i.uniqueid == u64::from(c.ike_sa_id)) else {
        return (None, None);
    };
    let child = ike
        .child_sas
        .iter()
        .find(|ch| ch.uniqueid == u64::from(c.child_sa_id))
        .cloned();
    let ike = IkeSa {
        child_sas: Vec::new(),
        ..ike.clone()
    };
    (Some(ike), child)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_windows_bytes_round_trip() {
        let c = SaLookupContext {
            child_sa_id: 7,
            ike_sa_id: 0x0001_0004,
            spi_out: 0xca17_c561,
            spi_in: 0xcc79_891a,
        };
        let text = c.to_string();
        assert_eq!(text, "00000007-0001-0004-ca17-c561cc79891a");
        assert_eq!(text.parse::<SaLookupContext>().unwrap(), c);
        assert_eq!(
            format!("{{{}}}", text.to_uppercase()).parse::<SaLookupContext>(),
            Ok(c)
        );
        let bytes = c.to_guid_bytes();
        assert_eq!(&bytes[0..4], &[7, 0, 0, 0], "Data1 little-endian");
        assert_eq!(&bytes[4..8], &[1, 0, 4, 0], "Data2, Data3 little-endian");
        assert_eq!(
            &bytes[8..],
            &[0xca, 0x17, 0xc5, 0x61, 0xcc, 0x79, 0x89, 0x1a]
        );
        assert_eq!(SaLookupContext::from_guid_bytes(bytes), c);
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<SaLookupContext>(&json).unwrap(), c);
    }

    #[test]
    fn malformed_guids_are_refused() {
        for bad in [
            "",
            "00000007-0001-0004-ca17",
            "00000007-0001-0004-ca17-c561cc79891",
            "00000007-0001-0004-ca17-c561cc79891a0",
            "0000000g-0001-0004-ca17-c561cc79891a",
            "+0000007-0001-0004-ca17-c561cc79891a",
            "00000007:0001-0004-ca17-c561cc79891a",
        ] {
            assert!(bad.parse::<SaLookupContext>().is_err(), "{bad:?}");
        }
        assert!(SaLookupContext::NIL.is_nil());
        assert_eq!(
            SaLookupContext::NIL.to_string(),
            "00000000-0000-0000-0000-000000000000"
        );
    }
}
