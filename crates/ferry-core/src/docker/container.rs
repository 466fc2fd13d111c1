//! `/containers` shapes: what `docker run` sends, and what `docker inspect` and
//! `docker ps` expect back, for sandboxes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::docker::duration::human;
use crate::docker::network::EndpointSettingsReq;
use crate::id::short;
use crate::model::{mac_string, Network, RunState, Sandbox};

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct HostConfigReq {
    #[serde(default)]
    pub network_mode: Option<String>,
    #[serde(default)]
    pub auto_remove: bool,
    #[serde(default)]
    pub dns: Option<Vec<String>>,
    #[serde(default)]
    pub dns_search: Option<Vec<String>>,
    #[serde(default)]
    pub dns_options: Option<Vec<String>>,
    #[serde(default)]
    pub port_bindings: Option<crate::ports::PortBindings>,
    #[serde(default)]
    pub binds: Option<Vec<String>>,
    #[serde(default)]
    pub mounts: Option<Vec<Value>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkingConfigReq {
    #[serde(default)]
    pub endpoints_config: Option<BTreeMap<String, EndpointSettingsReq>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerCreateRequest {
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub attach_stdin: bool,
    #[serde(default)]
    pub attach_stdout: bool,
    #[serde(default)]
    pub attach_stderr: bool,
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub open_stdin: bool,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub volumes: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub host_config: Option<HostConfigReq>,
    #[serde(default)]
    pub networking_config: Option<NetworkingConfigReq>,
}

/// Paths of a sandbox's files, as ferryd lays them out under its exec root.
pub struct SandboxPaths {
    pub sandbox_key: String,
    pub hosts: String,
    pub resolv_conf: String,
    pub hostname: String,
    pub log: String,
}

fn state_json(sb: &Sandbox) -> Value {
    let (status, running, pid, code) = match sb.state {
        RunState::Created => ("created", false, 0, 0),
        RunState::Running { pid, .. } => ("running", true, pid, 0),
        RunState::Exited { code } => ("exited", false, 0, code),
    };
    json!({
        "Status": status, "Running": running, "Paused": false, "Restarting": false,
        "OOMKilled": false, "Dead": false, "Pid": pid, "ExitCode": code, "Error": "",
        "StartedAt": sb.started_at.clone().unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
        "FinishedAt": sb.finished_at.clone().unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
    })
}

fn endpoint_json(sb: &Sandbox, net: &Network) -> Value {
    let ep = sb.endpoint(&net.id);
    let live = ep.and_then(|e| e.live.as_ref());
    let mut aliases: Vec<String> = ep.map(|e| e.aliases.clone()).unwrap_or_default();
    if !net.predefined {
        aliases.push(short(&sb.id).to_string());
    }
    json!({
        "IPAMConfig": ep.and_then(|e| e.static_ip).map(|ip| json!({"IPv4Address": ip.to_string()})),
        "Links": null,
        "Aliases": if net.predefined { Value::Null } else { json!(aliases) },
        "NetworkID": net.id,
        "EndpointID": live.map(|l| l.id.clone()).unwrap_or_default(),
        "Gateway": live.and_then(|l| l.gateway).map(|g| g.to_string()).unwrap_or_default(),
        "IPAddress": live.map(|l| l.ip.to_string()).unwrap_or_default(),
        "IPPrefixLen": live.map(|l| l.prefix_len).unwrap_or(0),
        "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
        "MacAddress": live.map(|l| mac_string(&l.mac)).unwrap_or_default(),
        "DriverOpts": null,
    })
}

/// `GET /containers/{id}/json`. `nets` are the networks the sandbox belongs to, in
/// its endpoint order.
pub fn inspect(sb: &Sandbox, nets: &[&Network], paths: &SandboxPaths) -> Value {
    let mut networks = serde_json::Map::new();
    for n in nets {
        networks.insert(n.name.clone(), endpoint_json(sb, n));
    }
    // Top-level addressing is filled only for the default bridge, as dockerd does.
    let top = nets
        .iter()
        .find(|n| n.is_default_bridge())
        .and_then(|n| sb.endpoint(&n.id))
        .and_then(|e| e.live.as_ref());
    let running = sb.is_running();
    let (path, args) = match sb.cmd.split_first() {
        Some((p, a)) => (p.clone(), a.to_vec()),
        None => (String::new(), vec![]),
    };
    json!({
        "Id": sb.id,
        "Created": sb.created,
        "Path": path,
        "Args": args,
        "State": state_json(sb),
        "Image": "",
        "ResolvConfPath": paths.resolv_conf,
        "HostnamePath": paths.hostname,
        "HostsPath": paths.hosts,
        "LogPath": paths.log,
        "Name": format!("/{}", sb.name),
        "RestartCount": 0,
        "Driver": "",
        "Platform": "linux",
        "MountLabel": "", "ProcessLabel": "", "AppArmorProfile": "",
        "ExecIDs": null,
        "HostConfig": {
            "NetworkMode": sb.network_mode.as_str(),
            "PortBindings": crate::ports::to_bindings(&requested_ports(sb)),
            "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
            "AutoRemove": sb.auto_remove,
            "Dns": sb.dns.servers, "DnsOptions": sb.dns.options, "DnsSearch": sb.dns.search,
        },
        "Mounts": [],
        "Config": {
            "Hostname": sb.hostname, "Domainname": "", "User": "",
            "AttachStdin": false, "AttachStdout": false, "AttachStderr": false,
            "Tty": false, "OpenStdin": false, "StdinOnce": false, "Env": null,
            "Cmd": sb.cmd, "Image": "", "Volumes": null, "WorkingDir": "",
            "Entrypoint": null, "OnBuild": null, "Labels": sb.labels,
        },
        "NetworkSettings": {
            "Bridge": "",
            "SandboxID": if running { sb.id.clone() } else { String::new() },
            "HairpinMode": false,
            "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0,
            "Ports": crate::ports::ports_json(&published_ports(sb)),
            "SandboxKey": if running { paths.sandbox_key.clone() } else { String::new() },
            "SecondaryIPAddresses": null, "SecondaryIPv6Addresses": null,
            "EndpointID": top.map(|l| l.id.clone()).unwrap_or_default(),
            "Gateway": top.and_then(|l| l.gateway).map(|g| g.to_string()).unwrap_or_default(),
            "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
            "IPAddress": top.map(|l| l.ip.to_string()).unwrap_or_default(),
            "IPPrefixLen": top.map(|l| l.prefix_len).unwrap_or(0),
            "IPv6Gateway": "",
            "MacAddress": top.map(|l| mac_string(&l.mac)).unwrap_or_default(),
            "Networks": networks,
        },
    })
}

fn requested_ports(sb: &Sandbox) -> Vec<crate::ports::PortMapping> {
    sb.endpoints.iter().flat_map(|e| e.ports.clone()).collect()
}

/// The decided ports of every live endpoint.
pub fn published_ports(sb: &Sandbox) -> Vec<crate::ports::Published> {
    sb.endpoints
        .iter()
        .filter_map(|e| e.live.as_ref())
        .flat_map(|l| l.published.iter().copied())
        .collect()
}

/// `docker ps`' `Ports`: one object per published port.
fn port_summary(p: &[crate::ports::Published]) -> Vec<Value> {
    let mut v = vec![];
    for m in p {
        for (h, c) in m.host_ports.iter().zip(m.container_ports.iter()) {
            v.push(json!({"IP": m.host_ip_string(), "PrivatePort": c, "PublicPort": h, "Type": m.proto.as_str()}));
        }
    }
    v
}

/// `docker ps`' Status: "Up 9 seconds", "Exited (0) 2 minutes ago", "Created".
fn status_text(sb: &Sandbox, now_unix: i64) -> String {
    let since = |t: &Option<String>| {
        let at = t.as_deref().and_then(crate::docker::duration::rfc3339_unix);
        human(now_unix - at.unwrap_or(now_unix as f64) as i64)
    };
    match sb.state {
        RunState::Created => "Created".into(),
        RunState::Running { .. } => format!("Up {}", since(&sb.started_at)),
        RunState::Exited { code } => format!("Exited ({code}) {} ago", since(&sb.finished_at)),
    }
}

/// One element of `GET /containers/json`; `now_unix` dates its Status.
pub fn summary(sb: &Sandbox, nets: &[&Network], now_unix: i64) -> Value {
    let mut networks = serde_json::Map::new();
    for n in nets {
        networks.insert(n.name.clone(), endpoint_json(sb, n));
    }
    json!({
        "Id": sb.id,
        "Names": [format!("/{}", sb.name)],
        "Image": "",
        "ImageID": "",
        "Command": sb.cmd.join(" "),
        "Created": sb.created_unix,
        "Ports": port_summary(&published_ports(sb)),
        "Labels": sb.labels,
        "State": crate::filters::containers::state(sb),
        "Status": status_text(sb, now_unix),
        "HostConfig": {"NetworkMode": sb.network_mode.as_str()},
        "NetworkSettings": {"Networks": networks},
        "Mounts": [],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_request_from_cli_28_parses() {
        let body = r#"{"Hostname":"","Cmd":["sleep","100000"],"Image":"bb:latest","HostConfig":{"NetworkMode":"demonet","AutoRemove":false,"Dns":[],"DnsOptions":[],"DnsSearch":[]},"NetworkingConfig":{"EndpointsConfig":{"demonet":{"IPAMConfig":{"IPv4Address":"10.77.0.200"},"Links":null,"Aliases":null,"GwPriority":0,"DNSNames":null}}}}"#;
        let r: ContainerCreateRequest = serde_json::from_str(body).unwrap();
        let eps = r.networking_config.unwrap().endpoints_config.unwrap();
        assert_eq!(
            eps["demonet"]
                .ipam_config
                .as_ref()
                .unwrap()
                .ipv4_address
                .as_deref(),
            Some("10.77.0.200")
        );
        assert_eq!(
            r.host_config.unwrap().network_mode.as_deref(),
            Some("demonet")
        );
    }
}
