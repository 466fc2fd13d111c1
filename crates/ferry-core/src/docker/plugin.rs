//! The libnetwork plugin protocol (plugin API v1) as dockerd 20.10 speaks it to a
//! remote network driver and a remote IPAM driver: request and response bodies, field
//! for field as on the wire (../shared/fixtures/docker-plugin-api/), and the pure rules
//! that turn Docker's values into ferry's (driver options, port maps, CIDR addresses).
//!
//! Requests accept missing and unknown fields: dockerd sends `null` for empty maps
//! and some calls have an empty body. Responses carry exactly the fields Docker reads.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ports::{coalesce, PortMapping, PortRange, Proto};
use crate::validate::OPT_BRIDGE_NAME;
use crate::CoreError;

/// `-o`/`--opt` pairs arrive under this key of CreateNetwork's Options.
pub const OPT_GENERIC: &str = "com.docker.network.generic";
pub const OPT_ENABLE_IPV6: &str = "com.docker.network.enable_ipv6";
pub const OPT_INTERNAL: &str = "com.docker.network.internal";
/// The seed article's short form of `com.docker.network.bridge.name`.
pub const OPT_BRIDGE_SHORT: &str = "bridge";
pub const OPT_PORTMAP: &str = "com.docker.network.portmap";
pub const OPT_EXPOSED: &str = "com.docker.network.endpoint.exposedports";
pub const OPT_REQUEST_TYPE: &str = "RequestAddressType";
pub const REQUEST_GATEWAY: &str = "com.docker.network.gateway";

pub const LOCAL_ADDRESS_SPACE: &str = "FerryLocal";
pub const GLOBAL_ADDRESS_SPACE: &str = "FerryGlobal";

pub type Options = BTreeMap<String, Value>;

// ---- Plugin and capabilities ----

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivateResponse {
    #[serde(rename = "Implements")]
    pub implements: Vec<String>,
}

impl ActivateResponse {
    pub fn ferry() -> Self {
        ActivateResponse {
            implements: vec!["NetworkDriver".into(), "IpamDriver".into()],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkCapabilities {
    #[serde(rename = "Scope")]
    pub scope: String,
    #[serde(rename = "ConnectivityScope")]
    pub connectivity_scope: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamCapabilities {
    #[serde(rename = "RequiresMACAddress")]
    pub requires_mac_address: bool,
    #[serde(rename = "RequiresRequestReplay")]
    pub requires_request_replay: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressSpaces {
    #[serde(rename = "LocalDefaultAddressSpace")]
    pub local: String,
    #[serde(rename = "GlobalDefaultAddressSpace")]
    pub global: String,
}

// ---- IPAM ----

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RequestPoolRequest {
    pub address_space: String,
    pub pool: String,
    pub sub_pool: String,
    pub options: Option<BTreeMap<String, String>>,
    #[serde(rename = "V6")]
    pub v6: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestPoolResponse {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    pub pool: String,
    pub data: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RequestAddressRequest {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    pub address: String,
    pub options: Option<BTreeMap<String, String>>,
}

impl RequestAddressRequest {
    pub fn is_gateway(&self) -> bool {
        self.options
            .as_ref()
            .and_then(|o| o.get(OPT_REQUEST_TYPE))
            .is_some_and(|t| t == REQUEST_GATEWAY)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestAddressResponse {
    pub address: String,
    pub data: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ReleaseAddressRequest {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    pub address: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReleasePoolRequest {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
}

// ---- Network driver ----

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpamData {
    pub address_space: String,
    pub pool: String,
    pub gateway: String,
    pub aux_addresses: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateNetworkRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    pub options: Option<Options>,
    #[serde(rename = "IPv4Data")]
    pub ipv4_data: Option<Vec<IpamData>>,
    #[serde(rename = "IPv6Data")]
    pub ipv6_data: Option<Vec<IpamData>>,
}

/// Any call that names only a network, an endpoint, or both.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EndpointRef {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointInterface {
    pub address: String,
    #[serde(rename = "AddressIPv6")]
    pub address_ipv6: String,
    pub mac_address: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateEndpointRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub interface: Option<EndpointInterface>,
    pub options: Option<Options>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceMac {
    #[serde(rename = "MacAddress")]
    pub mac_address: String,
}

/// `{"Interface": null}` when Docker supplied everything, else the MAC ferry chose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateEndpointResponse {
    #[serde(rename = "Interface")]
    pub interface: Option<InterfaceMac>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct JoinRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub sandbox_key: String,
    pub options: Option<Options>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InterfaceName {
    pub src_name: String,
    pub dst_prefix: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct JoinResponse {
    pub interface_name: InterfaceName,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub gateway: String,
    /// True on internal networks: no gateway, and Docker must not add docker_gwbridge.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub disable_gateway_service: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ProgramExternalRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub options: Option<Options>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperInfoResponse {
    #[serde(rename = "Value")]
    pub value: BTreeMap<String, Value>,
}

// ---- Docker's values in ferry's terms ----

/// An `a.b.c.d/len` address (what IPAM answers and CreateEndpoint carries).
pub fn parse_cidr_addr(what: &'static str, s: &str) -> Result<Ipv4Net, CoreError> {
    s.parse::<Ipv4Net>().map_err(|_| CoreError::BadValue {
        what,
        value: s.to_string(),
        why: "not an IPv4 address with a prefix length".into(),
    })
}

/// A bare address, or `a.b.c.d/len` (ReleaseAddress sends bare ones; accept both).
pub fn parse_addr(what: &'static str, s: &str) -> Result<Ipv4Addr, CoreError> {
    let bare = s.split_once('/').map_or(s, |(a, _)| a);
    bare.parse().map_err(|_| CoreError::BadValue {
        what,
        value: s.to_string(),
        why: "not an IPv4 address".into(),
    })
}

/// `02:42:0a:4e:00:02` as bytes.
pub fn parse_mac(s: &str) -> Result<[u8; 6], CoreError> {
    let bad = || CoreError::BadValue {
        what: "MAC address",
        value: s.to_string(),
        why: "expected six hex bytes separated by colons".into(),
    };
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (b, p) in mac.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    Ok(mac)
}

/// Docker's network and endpoint IDs are 64 lowercase hex digits; ferry names links
/// after them, so anything else is refused before it is used.
pub fn check_id(what: &'static str, id: &str) -> Result<(), CoreError> {
    if id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(CoreError::BadValue {
            what,
            value: id.to_string(),
            why: "not a 64-hex-digit ID".into(),
        })
    }
}

/// The `-o` pairs of a CreateNetwork as ferry's string options: values that are not
/// strings are kept in their JSON form; the seed article's `bridge=NAME` becomes
/// `com.docker.network.bridge.name`, and giving both differently is refused.
pub fn generic_options(opts: Option<&Options>) -> Result<BTreeMap<String, String>, CoreError> {
    let mut out = BTreeMap::new();
    let Some(Value::Object(generic)) = opts.and_then(|o| o.get(OPT_GENERIC)) else {
        return Ok(out);
    };
    for (k, v) in generic {
        let v = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        out.insert(k.clone(), v);
    }
    if let Some(short) = out.remove(OPT_BRIDGE_SHORT) {
        match out.get(OPT_BRIDGE_NAME) {
            Some(long) if *long != short => {
                return Err(CoreError::Invalid(format!(
                    "options bridge={short} and {OPT_BRIDGE_NAME}={long} name different bridges"
                )))
            }
            _ => {
                out.insert(OPT_BRIDGE_NAME.to_string(), short);
            }
        }
    }
    Ok(out)
}

/// A boolean option at the top level of CreateNetwork's Options (Docker sends JSON
/// booleans there; accept the string forms too).
pub fn flag_option(opts: Option<&Options>, key: &str) -> bool {
    match opts.and_then(|o| o.get(key)) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct WirePortMap {
    proto: u8,
    #[serde(rename = "IP")]
    ip: String,
    port: u16,
    #[serde(rename = "HostIP")]
    host_ip: String,
    host_port: u16,
    host_port_end: u16,
}

/// The port options dockerd sends a remote driver with CreateEndpoint, Join and
/// ProgramExternalConnectivity (`P:p10`): each container port exposed, and each mapping
/// one port at a time (a range as one entry per port; no host port: 0). The inverse of
/// [`portmap`].
pub fn port_options(ports: &[PortMapping]) -> Value {
    let wire_proto = |p: Proto| match p {
        Proto::Tcp => 6u8,
        Proto::Udp => 17,
    };
    let mut exposed: Vec<(u8, u16)> = vec![];
    let mut map = vec![];
    for m in ports {
        let proto = wire_proto(m.proto);
        for (i, port) in m.container_ports.iter().enumerate() {
            if !exposed.contains(&(proto, port)) {
                exposed.push((proto, port));
            }
            let host = m.host_ports.map_or(0, |h| h.start() + i as u16);
            map.push(WirePortMap {
                proto,
                ip: String::new(),
                port,
                host_ip: m.host_ip.map(|ip| ip.to_string()).unwrap_or_default(),
                host_port: host,
                host_port_end: host,
            });
        }
    }
    let exposed: Vec<Value> = exposed
        .into_iter()
        .map(|(proto, port)| serde_json::json!({"Proto": proto, "Port": port}))
        .collect();
    serde_json::json!({ OPT_EXPOSED: exposed, OPT_PORTMAP: map })
}

/// `com.docker.network.portmap` as ferry's mappings (runs of ports joined into ranges).
/// Proto 6 is tcp, 17 udp. A host port of 0 asks ferry to choose one; Docker's "any
/// one port of HOST_START-HOST_END" for a single container port is refused, as ferry's
/// own `-p` refuses it.
pub fn portmap(opts: Option<&Options>) -> Result<Vec<PortMapping>, CoreError> {
    let Some(v) = opts.and_then(|o| o.get(OPT_PORTMAP)) else {
        return Ok(vec![]);
    };
    if v.is_null() {
        return Ok(vec![]);
    }
    let entries: Vec<WirePortMap> = serde_json::from_value(v.clone()).map_err(|e| {
        CoreError::Invalid(format!(
            "option {OPT_PORTMAP}: not a list of port maps: {e}"
        ))
    })?;
    let mut out = vec![];
    for e in entries {
        let proto = match e.proto {
            6 => Proto::Tcp,
            17 => Proto::Udp,
            p => {
                return Err(CoreError::BadValue {
                    what: "protocol",
                    value: p.to_string(),
                    why: "only tcp and udp can be published".into(),
                })
            }
        };
        let host_ip = match e.host_ip.trim() {
            "" => None,
            s => Some(s.parse::<Ipv4Addr>().map_err(|_| CoreError::BadValue {
                what: "host IP",
                value: s.into(),
                why: "only IPv4 host addresses can be published".into(),
            })?),
        }
        .filter(|ip| !ip.is_unspecified());
        let container_ports = PortRange::single(e.port)?;
        let host_ports = match (e.host_port, e.host_port_end) {
            (0, _) => None,
            (a, b) if b == 0 || b == a => Some(PortRange::single(a)?),
            (a, b) => {
                return Err(CoreError::BadValue {
                    what: "publish spec",
                    value: format!("{a}-{b}:{}", e.port),
                    why: "ferry publishes a container port on one host port; name it".into(),
                })
            }
        };
        out.push(PortMapping {
            proto,
            host_ip,
            host_ports,
            container_ports,
            source: None,
        });
    }
    Ok(coalesce(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn opts(v: Value) -> Options {
        serde_json::from_value(v).unwrap()
    }

    /// What dockerd sends for `-p 8080:80 -p 127.0.0.1:8443:443/tcp -p 5353:53/udp`
    /// (`P:p10`, without its `--expose 9000`), and back.
    #[test]
    fn the_port_options_are_dockerds_and_read_back_as_the_same_mappings() {
        let specs = [
            "8080:80",
            "127.0.0.1:8443:443/tcp",
            "5353:53/udp",
            "9090-9091:90-91",
        ];
        let maps: Vec<PortMapping> = specs
            .iter()
            .map(|s| crate::ports::parse_publish(s).unwrap())
            .collect();
        let v = port_options(&maps);
        assert_eq!(
            v[OPT_EXPOSED],
            json!([{"Proto": 6, "Port": 80}, {"Proto": 6, "Port": 443}, {"Proto": 17, "Port": 53},
                   {"Proto": 6, "Port": 90}, {"Proto": 6, "Port": 91}])
        );
        assert_eq!(
            v[OPT_PORTMAP][1],
            json!({"Proto": 6, "IP": "", "Port": 443, "HostIP": "127.0.0.1", "HostPort": 8443, "HostPortEnd": 8443})
        );
        assert_eq!(
            v[OPT_PORTMAP][4],
            json!({"Proto": 6, "IP": "", "Port": 91, "HostIP": "", "HostPort": 9091, "HostPortEnd": 9091})
        );
        let back = portmap(Some(&opts(v))).unwrap();
        assert_eq!(back, coalesce(maps));
        // No host port: 0, for the driver to choose.
        let any = crate::ports::parse_publish("80").unwrap();
        assert_eq!(
            port_options(&[any])[OPT_PORTMAP][0],
            json!({"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 0, "HostPortEnd": 0})
        );
    }

    #[test]
    fn the_seed_articles_bridge_option_names_the_bridge() {
        let o = opts(json!({OPT_GENERIC: {"bridge": "br1", "foo": "bar"}}));
        let g = generic_options(Some(&o)).unwrap();
        assert_eq!(g.get(OPT_BRIDGE_NAME).map(String::as_str), Some("br1"));
        assert_eq!(g.get("foo").map(String::as_str), Some("bar"));
        assert!(!g.contains_key("bridge"));
    }

    #[test]
    fn two_different_bridge_names_are_refused() {
        let o = opts(json!({OPT_GENERIC: {"bridge": "br1", OPT_BRIDGE_NAME: "br2"}}));
        assert!(generic_options(Some(&o)).is_err());
    }

    #[test]
    fn portmap_becomes_ranges_and_protocols() {
        let o = opts(json!({OPT_PORTMAP: [
            {"Proto":6,"IP":"","Port":443,"HostIP":"127.0.0.1","HostPort":8443,"HostPortEnd":8443},
            {"Proto":6,"IP":"","Port":80,"HostIP":"","HostPort":8080,"HostPortEnd":8080},
            {"Proto":6,"IP":"","Port":81,"HostIP":"","HostPort":8081,"HostPortEnd":8081},
            {"Proto":17,"IP":"","Port":53,"HostIP":"","HostPort":5353,"HostPortEnd":5353},
            {"Proto":6,"IP":"","Port":9000,"HostIP":"0.0.0.0","HostPort":0,"HostPortEnd":0}
        ]}));
        let m = portmap(Some(&o)).unwrap();
        assert_eq!(m.len(), 4, "{m:?}");
        let web = m
            .iter()
            .find(|p| p.container_ports.start() == 80)
            .expect("80");
        assert_eq!(web.container_ports.to_string(), "80-81");
        assert_eq!(web.host_ports.unwrap().to_string(), "8080-8081");
        let dns = m.iter().find(|p| p.proto == Proto::Udp).expect("udp");
        assert_eq!(dns.host_ports.unwrap().start(), 5353);
        let eph = m
            .iter()
            .find(|p| p.container_ports.start() == 9000)
            .unwrap();
        assert_eq!((eph.host_ports, eph.host_ip), (None, None));
        let local = m.iter().find(|p| p.container_ports.start() == 443).unwrap();
        assert_eq!(local.host_ip, Some(Ipv4Addr::new(127, 0, 0, 1)));
    }

    #[test]
    fn an_empty_or_missing_portmap_is_no_ports() {
        assert!(portmap(None).unwrap().is_empty());
        let o = opts(json!({OPT_PORTMAP: [], OPT_EXPOSED: []}));
        assert!(portmap(Some(&o)).unwrap().is_empty());
    }

    #[test]
    fn release_address_accepts_bare_and_cidr_forms() {
        assert_eq!(
            parse_addr("address", "10.0.0.2").unwrap(),
            Ipv4Addr::new(10, 0, 0, 2)
        );
        assert_eq!(
            parse_addr("address", "10.0.0.2/24").unwrap(),
            Ipv4Addr::new(10, 0, 0, 2)
        );
    }

    #[test]
    fn join_response_omits_an_empty_gateway() {
        let r = JoinResponse {
            interface_name: InterfaceName {
                src_name: "fyc".into(),
                dst_prefix: "eth".into(),
            },
            gateway: String::new(),
            disable_gateway_service: true,
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"InterfaceName": {"SrcName": "fyc", "DstPrefix": "eth"}, "DisableGatewayService": true})
        );
    }
}
