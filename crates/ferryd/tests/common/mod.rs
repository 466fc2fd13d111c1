//! What the daemon's integration tests share.

use ferry_core::docker::network::{IpamConfigReq, IpamReq, NetworkCreateRequest};

/// `network create NAME --subnet SUBNET`, as the API receives it.
pub fn net_req(name: &str, subnet: &str) -> NetworkCreateRequest {
    NetworkCreateRequest {
        name: name.into(),
        ipam: Some(IpamReq {
            config: Some(vec![IpamConfigReq {
                subnet: Some(subnet.into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}
