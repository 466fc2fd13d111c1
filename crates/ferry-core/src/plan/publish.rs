//! Published ports against the network: where ports may be published at all, and the
//! host ports other endpoints hold.

use super::driver::Publishing;
use crate::model::Network;
use crate::ports::Published;
use crate::state::State;
use crate::CoreError;

/// Every port published by a live endpoint other than `sb_id`'s on `net_id` (Docker's
/// containers' included: `sb_id` may be a Docker endpoint's ID).
pub fn taken_ports(st: &State, sb_id: &str, net_id: &str) -> Vec<Published> {
    let docker = st
        .plugin
        .endpoints
        .values()
        .map(|e| (e.id.as_str(), &e.endpoint));
    st.sandboxes
        .values()
        .flat_map(|s| s.endpoints.iter().map(move |e| (s.id.as_str(), e)))
        .chain(docker)
        .filter(|(s, e)| !(*s == sb_id && e.network_id == net_id))
        .filter_map(|(_, e)| e.live.as_ref())
        .flat_map(|l| l.published.iter().copied())
        .collect()
}

/// Refuse ports on a network that cannot publish them.
pub fn check_publishable(net: &Network, has_ports: bool) -> Result<(), CoreError> {
    if has_ports && net.internal {
        return Err(CoreError::Invalid(format!(
            "network {} is internal: ports cannot be published on it",
            net.name
        )));
    }
    match net.kind.network_driver().publishing(&net.name) {
        Publishing::Refused(why) if has_ports => Err(CoreError::Invalid(why)),
        _ => Ok(()),
    }
}
