//! `--aux-address NAME=IP` (`IPAM.Config[].AuxiliaryAddresses`): addresses of the
//! subnet set aside for devices outside ferry, never handed to a sandbox, echoed by
//! inspect. Each must be an address inside the subnet that is not its network,
//! broadcast or gateway address, and names and addresses must be unique.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::CoreError;

fn bad(name: &str, value: &str, why: String) -> CoreError {
    CoreError::BadValue {
        what: "auxiliary address",
        value: format!("{name}={value}"),
        why,
    }
}

/// Check the given aux addresses against the subnet and gateway.
pub fn parse(
    given: &BTreeMap<String, String>,
    subnet: IpNet,
    gateway: IpAddr,
) -> Result<BTreeMap<String, IpAddr>, CoreError> {
    let mut out: BTreeMap<String, IpAddr> = BTreeMap::new();
    for (name, value) in given {
        let ip: IpAddr = value
            .parse()
            .map_err(|_| bad(name, value, "not an IP address".into()))?;
        let why = if !subnet.contains(&ip) {
            Some(format!("it is not in subnet {subnet}"))
        } else if ip == subnet.network() || (ip == subnet.broadcast() && ip.is_ipv4()) {
            Some("it is the subnet's network or broadcast address".into())
        } else if ip == gateway {
            Some("it is the gateway address".into())
        } else if let Some((other, _)) = out.iter().find(|(_, a)| **a == ip) {
            Some(format!("{other} has the same address"))
        } else {
            None
        };
        if let Some(why) = why {
            return Err(bad(name, value, why));
        }
        out.insert(name.clone(), ip);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::AddressPool;

    fn given(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn aux_addresses_are_set_aside_from_sandboxes() {
        let subnet: IpNet = "10.81.0.0/24".parse().unwrap();
        let gw: IpAddr = "10.81.0.1".parse().unwrap();
        let aux = parse(&given(&[("router", "10.81.0.2")]), subnet, gw).unwrap();
        let mut pool = AddressPool::new(subnet, gw, None).with_aux(aux);
        assert_eq!(
            pool.allocate_dynamic("a", "n").unwrap().to_string(),
            "10.81.0.3"
        );
        let taken = pool.allocate_static("10.81.0.2".parse().unwrap(), "b");
        assert!(matches!(taken, Err(CoreError::AddressInUse(_))));
    }

    #[test]
    fn aux_addresses_outside_the_subnet_or_on_reserved_ones_are_refused() {
        let subnet: IpNet = "10.81.0.0/24".parse().unwrap();
        let gw: IpAddr = "10.81.0.1".parse().unwrap();
        let err = |p: &[(&str, &str)]| parse(&given(p), subnet, gw).unwrap_err().to_string();
        assert!(err(&[("r", "10.9.9.9")]).contains("not in subnet 10.81.0.0/24"));
        assert!(err(&[("r", "10.81.0.1")]).contains("gateway"));
        assert!(err(&[("r", "10.81.0.255")]).contains("broadcast"));
        assert!(err(&[("r", "nope")]).contains("not an IP address"));
        assert!(err(&[("a", "10.81.0.5"), ("b", "10.81.0.5")]).contains("same address"));
    }
}
