//! IPSEC2's `SaLookupContext` and the details call that turns it back into the SAs it names:
//! the types and the pure lookup are [`socksec_core::sa`] (re-exported here); this module reads
//! the snapshots they are looked up in.

use crate::error::Error;
use crate::sources::Sources;

pub use socksec_core::sa::*;

/// Describes the SAs `context` names, as the kernel and the IKE daemon have them in `sources`
/// (see [`socksec_core::sa::details`]).
pub fn details_with(context: &SaLookupContext, sources: &dyn Sources) -> Result<SaDetails, Error> {
    socksec_core::sa::details(context, || sources.xfrm(), || sources.ike_sas())
}
