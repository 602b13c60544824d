//! No IPsec at all: the baseline every other scenario differs from.

use crate::error::{Result, ensure};
use crate::lab::{Expect, Lab, sockets, xfrm};

/// A TCP connection moon -> sun with no policy and no SA anywhere.
pub fn run(lab: &mut Lab) -> Result<()> {
    let pair = sockets::tcp_pair(lab.moon(), lab.sun(), 5001, false)?;
    let states = lab.moon().xfrm_states()?;
    ensure!(
        states.is_empty(),
        "moon has SAs in a scenario without IPsec: {states:?}"
    );
    let policies = xfrm::parse_policies(&lab.moon().xfrm_policy_text()?);
    ensure!(
        policies.is_empty(),
        "moon has policies without IPsec: {policies:?}"
    );
    lab.check_socket("client", true, &pair.client, None, &Expect::Clear)?;
    lab.check_socket("server", false, &pair.server, None, &Expect::Clear)?;
    lab.note(format!(
        "TCP exchange in {} ms, no SAs",
        pair.elapsed.as_millis()
    ));
    Ok(())
}
