//! `/networks` request and response bodies.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::model::{mac_string, Membership, Network, Sandbox};
use crate::plan::gateway_service::gateway_endpoint_name;

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamConfigReq {
    #[serde(default)]
    pub subnet: Option<String>,
    #[serde(default, rename = "IPRange")]
    pub ip_range: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub auxiliary_addresses: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamReq {
    #[serde(default)]
    pub driver: Option<String>,
    #[serde(default)]
    pub options: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub config: Option<Vec<IpamConfigReq>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkCreateRequest {
    pub name: String,
    #[serde(default)]
    pub driver: Option<String>,
    #[serde(default, rename = "IPAM")]
    pub ipam: Option<IpamReq>,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub attachable: bool,
    #[serde(default, rename = "EnableIPv6")]
    pub enable_ipv6: Option<bool>,
    #[serde(default)]
    pub options: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub ingress: bool,
    #[serde(default)]
    pub config_only: bool,
    #[serde(default)]
    pub config_from: Option<ConfigFrom>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConfigFrom {
    #[serde(default)]
    pub network: String,
}

impl NetworkCreateRequest {
    /// Refuse what ferry does not make (rather than make an ordinary local bridge
    /// instead): swarm or global scope, ingress, config-only networks and networks
    /// built from one.
    pub fn check_supported(&self) -> Result<(), crate::CoreError> {
        let no = |what: String| Err(crate::CoreError::NotSupported(what));
        match self.scope.as_deref().unwrap_or("") {
            "" | "local" => {}
            s => {
                return no(format!(
                    "--scope {s} is not supported by ferry: it makes local networks only"
                ))
            }
        }
        if self.ingress {
            return no("ingress networks are a swarm feature, not supported by ferry".into());
        }
        if self.config_only {
            return no("config-only networks (--config-only) are not supported by ferry".into());
        }
        match &self.config_from {
            Some(c) if !c.network.is_empty() => no(format!(
                "networks made from a config-only network (--config-from {}) are not supported by ferry",
                c.network
            )),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointIpamConfig {
    #[serde(default, rename = "IPv4Address")]
    pub ipv4_address: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointSettingsReq {
    #[serde(default, rename = "IPAMConfig")]
    pub ipam_config: Option<EndpointIpamConfig>,
    #[serde(default)]
    pub aliases: Option<Vec<String>>,
    /// ferry only (Docker ignores it): ports to publish on this endpoint
    /// (`ferry network connect --publish`), in `HostConfig.PortBindings`' shape.
    #[serde(
        default,
        rename = "FerryPortBindings",
        skip_serializing_if = "Option::is_none"
    )]
    pub port_bindings: Option<crate::ports::PortBindings>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConnectRequest {
    pub container: String,
    #[serde(default)]
    pub endpoint_config: Option<EndpointSettingsReq>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DisconnectRequest {
    pub container: String,
    #[serde(default)]
    pub force: bool,
}

fn ipam_config_json(net: &Network) -> Value {
    let mut cfgs: Vec<Value> = net
        .ipam_echo
        .iter()
        .map(|e| {
            let mut m = serde_json::Map::new();
            if let Some(s) = &e.subnet {
                m.insert("Subnet".into(), json!(s));
            }
            if let Some(r) = &e.ip_range {
                m.insert("IPRange".into(), json!(r));
            }
            if let Some(g) = &e.gateway {
                m.insert("Gateway".into(), json!(g));
            }
            Value::Object(m)
        })
        .collect();
    // ferry has one subnet per network: its aux addresses belong to the first config.
    let aux = net.pool.as_ref().map(|p| &p.aux).filter(|a| !a.is_empty());
    if let (Some(aux), Some(Value::Object(first))) = (aux, cfgs.first_mut()) {
        first.insert("AuxiliaryAddresses".into(), json!(aux));
    }
    json!(cfgs)
}

/// The network object of `GET /networks` (with `containers` empty) and
/// `GET /networks/{id}` (with the running sandboxes attached to it).
pub fn network_resource(net: &Network, containers: &[&Sandbox]) -> Value {
    let mut cmap = serde_json::Map::new();
    for sb in containers {
        let Some((ep, live)) = sb
            .endpoint(&net.id)
            .and_then(|e| Some((e, e.live.as_ref()?)))
        else {
            continue;
        };
        let name = match ep.membership {
            Membership::Asked => sb.name.clone(),
            Membership::GatewayService => gateway_endpoint_name(&sb.id),
        };
        cmap.insert(
            sb.id.clone(),
            json!({
                "Name": name,
                "EndpointID": live.id,
                "MacAddress": mac_string(&live.mac),
                "IPv4Address": format!("{}/{}", live.ip, live.prefix_len),
                "IPv6Address": "",
            }),
        );
    }
    json!({
        "Name": net.name,
        "Id": net.id,
        "Created": net.created,
        "Scope": net.scope(),
        "Driver": net.driver_name(),
        "EnableIPv6": false,
        "IPAM": {
            "Driver": net.ipam_plugin.as_ref().map_or("default", |i| i.driver.as_str()),
            "Options": net.ipam_options,
            "Config": ipam_config_json(net),
        },
        "Internal": net.internal,
        "Attachable": net.attachable,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": cmap,
        "Options": net.options,
        "Labels": net.labels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_request_from_cli_28_parses_and_ignores_unknown_fields() {
        let body = r#"{"Driver":"bridge","Scope":"","IPAM":{"Driver":"default","Options":{},"Config":[{"Subnet":"10.77.0.0/24","IPRange":"10.77.0.128/25","Gateway":"10.77.0.1"}]},"Internal":false,"Attachable":false,"Ingress":false,"ConfigOnly":false,"ConfigFrom":null,"Options":{"com.docker.network.bridge.name":"br77"},"Labels":{"a":"b"},"Name":"demonet","CheckDuplicate":true,"GwPriority":0}"#;
        let r: NetworkCreateRequest = serde_json::from_str(body).unwrap();
        assert_eq!(r.name, "demonet");
        let c = &r.ipam.unwrap().config.unwrap()[0];
        assert_eq!(c.ip_range.as_deref(), Some("10.77.0.128/25"));
    }
}
