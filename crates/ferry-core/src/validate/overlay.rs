//! A create request for an overlay network, checked as a bridge's would be where the two
//! agree (name, IPAM config, MTU option); the subnet, when none is given, and the overlap
//! with other overlays are the cluster's to decide.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::{addressing, mtu_option, valid_name, CreateContext};
use crate::docker::network::NetworkCreateRequest;
use crate::family::{v4, v4net};
use crate::model::IpamEcho;
use crate::CoreError;

/// What a valid overlay request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayRequest {
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    pub ip_range: Option<Ipv4Net>,
    /// `com.docker.network.driver.mtu`, when given.
    pub mtu: Option<u32>,
    pub echo: Option<IpamEcho>,
}

pub fn overlay_request(req: &NetworkCreateRequest) -> Result<OverlayRequest, CoreError> {
    valid_name(&req.name)?;
    if req.enable_ipv6 == Some(true) {
        return Err(CoreError::Invalid(
            "IPv6 networks are not supported by ferry yet".into(),
        ));
    }
    let opts = req.options.clone().unwrap_or_default();
    if let Some(k) = opts
        .keys()
        .find(|k| k.starts_with("com.docker.network.bridge."))
    {
        return Err(CoreError::Invalid(format!(
            "option {k} is for bridge networks, not overlays"
        )));
    }
    let mtu = mtu_option(&opts)?;
    let given = req
        .ipam
        .as_ref()
        .and_then(|i| i.config.as_ref())
        .and_then(|c| c.first())
        .is_some_and(|c| c.subnet.as_deref().is_some_and(|s| !s.is_empty()));
    // The bridge rules for the IPAM config, without other networks or host routes:
    // overlap with other overlays is checked against the whole cluster.
    let ctx = CreateContext {
        existing: &[],
        host_routes: &[],
        pool_cursor: None,
        id: String::new(),
        created: String::new(),
    };
    let a = addressing(req, &ctx)?;
    if !given {
        return Ok(OverlayRequest {
            subnet: None,
            gateway: None,
            ip_range: None,
            mtu,
            echo: None,
        });
    }
    // The request was checked as an IPv4 bridge's: its addresses are IPv4.
    Ok(OverlayRequest {
        subnet: v4net(a.pool.subnet),
        gateway: v4(a.pool.gateway),
        ip_range: a.pool.range.and_then(v4net),
        mtu,
        echo: Some(a.echo),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(body: &str) -> NetworkCreateRequest {
        serde_json::from_str(body).unwrap()
    }

    #[test]
    fn an_overlay_request_keeps_its_ipam_config_and_mtu() {
        let r = overlay_request(&req(r#"{"Name":"ov","Driver":"overlay","IPAM":{"Config":[{"Subnet":"10.5.0.0/24","IPRange":"10.5.0.128/25"}]},"Options":{"com.docker.network.driver.mtu":"1400"}}"#)).unwrap();
        assert_eq!(r.subnet, Some("10.5.0.0/24".parse().unwrap()));
        assert_eq!(r.gateway, Some("10.5.0.1".parse().unwrap()));
        assert_eq!(r.ip_range, Some("10.5.0.128/25".parse().unwrap()));
        assert_eq!(r.mtu, Some(1400));
        let none = overlay_request(&req(r#"{"Name":"ov","Driver":"overlay"}"#)).unwrap();
        assert_eq!((none.subnet, none.echo), (None, None));
    }

    #[test]
    fn bad_overlay_requests_name_the_problem() {
        for (body, needle) in [
            (
                r#"{"Name":"ov","IPAM":{"Config":[{"Subnet":"10.5.0.0/33"}]}}"#,
                "10.5.0.0/33",
            ),
            (
                r#"{"Name":"ov","IPAM":{"Config":[{"Subnet":"10.5.0.0/24","Gateway":"10.6.0.1"}]}}"#,
                "10.6.0.1",
            ),
            (
                r#"{"Name":"ov","Options":{"com.docker.network.driver.mtu":"9"}}"#,
                "mtu",
            ),
            (
                r#"{"Name":"ov","Options":{"com.docker.network.bridge.name":"x"}}"#,
                "bridge.name",
            ),
            (r#"{"Name":"bad name!"}"#, "bad name!"),
        ] {
            let e = overlay_request(&req(body)).unwrap_err().to_string();
            assert!(e.contains(needle), "{body}: {e}");
        }
    }
}
