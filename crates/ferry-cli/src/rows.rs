//! What a list row's template sees: the fields docker's formatter gives `ps` and
//! `network ls` templates (`{{.ID}}`, `{{.Names}}`, `{{.RunningFor}}`, …), computed
//! from the API's list objects as the docker CLI computes them, and their column titles.

use ferry_core::docker::duration::{go_time_string, human};
use serde_json::{json, Value};

pub const NETWORK_TABLE: &str = r"table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}";
pub const SANDBOX_TABLE: &str = r"table {{.ID}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Networks}}\t{{.Names}}";

pub fn network_header() -> Value {
    json!({
        "ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE",
        "IPv4": "IPV4", "IPv6": "IPV6", "Internal": "INTERNAL", "Labels": "LABELS",
        "CreatedAt": "CREATED AT",
    })
}

pub fn sandbox_header() -> Value {
    json!({
        "ID": "SANDBOX ID", "Image": "IMAGE", "Command": "COMMAND", "CreatedAt": "CREATED AT",
        "RunningFor": "CREATED", "Ports": "PORTS", "State": "STATE", "Status": "STATUS",
        "Size": "SIZE", "Names": "NAMES", "Labels": "LABELS", "Mounts": "MOUNTS",
        "Networks": "NETWORKS", "LocalVolumes": "LOCAL VOLUMES", "Platform": "PLATFORM",
    })
}

/// A row with its keys sorted: docker marshals a row's fields as a Go map, so
/// `{{json .}}` prints them in key order.
fn sorted(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut pairs: Vec<_> = m.into_iter().collect();
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(pairs.into_iter().collect())
        }
        other => other,
    }
}

fn id(v: &Value, trunc: bool) -> String {
    let id = v["Id"].as_str().unwrap_or("");
    if trunc {
        id.chars().take(12).collect()
    } else {
        id.to_string()
    }
}

fn flag(v: &Value) -> String {
    v.as_bool().unwrap_or(false).to_string()
}

/// `k=v` pairs joined by commas, sorted (docker's order is Go's random map order).
fn labels(v: &Value) -> String {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// One `GET /networks` object as docker's `network ls` template sees it.
pub fn network_row(n: &Value, trunc: bool) -> Value {
    sorted(json!({
        "ID": id(n, trunc),
        "Name": n["Name"], "Driver": n["Driver"], "Scope": n["Scope"],
        "IPv4": flag(&n["EnableIPv4"]), "IPv6": flag(&n["EnableIPv6"]),
        "Internal": flag(&n["Internal"]),
        "Labels": labels(&n["Labels"]),
        "CreatedAt": go_time_string(n["Created"].as_str().unwrap_or("")),
    }))
}

/// Go's `strconv.Quote` of the command, cut to 20 characters with `…` unless
/// `--no-trunc`, as `docker ps` shows it.
fn command(cmd: &str, trunc: bool) -> String {
    let cut = if trunc && cmd.chars().count() > 20 {
        format!("{}…", cmd.chars().take(19).collect::<String>())
    } else {
        cmd.to_string()
    };
    serde_json::to_string(&cut).unwrap_or_default()
}

/// `docker ps`' Ports column: `0.0.0.0:8080->80/tcp, 90/udp`.
fn ports(v: &Value) -> String {
    let list = v.as_array().map(Vec::as_slice).unwrap_or_default();
    list.iter()
        .map(|p| {
            let private = format!(
                "{}/{}",
                p["PrivatePort"],
                p["Type"].as_str().unwrap_or("tcp")
            );
            match p["PublicPort"].as_u64() {
                Some(public) => {
                    format!(
                        "{}:{public}->{private}",
                        p["IP"].as_str().unwrap_or("0.0.0.0")
                    )
                }
                None => private,
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn created_at(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S +0000 UTC").to_string())
        .unwrap_or_default()
}

/// One `GET /containers/json` object as docker's `ps` template sees it.
pub fn sandbox_row(s: &Value, trunc: bool, now_unix: i64) -> Value {
    let created = s["Created"].as_i64().unwrap_or(0);
    let names: Vec<&str> = s["Names"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|n| n.trim_start_matches('/'))
                .collect()
        })
        .unwrap_or_default();
    let mut networks: Vec<&str> = s["NetworkSettings"]["Networks"]
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    networks.sort_unstable();
    sorted(json!({
        "ID": id(s, trunc),
        "Image": "<no image>",
        "Command": command(s["Command"].as_str().unwrap_or(""), trunc),
        "CreatedAt": created_at(created),
        "RunningFor": format!("{} ago", human(now_unix - created)),
        "Ports": ports(&s["Ports"]),
        "State": s["State"], "Status": s["Status"],
        "Size": "0B",
        "Names": names.join(","),
        "Labels": labels(&s["Labels"]),
        "Mounts": "", "LocalVolumes": "0",
        "Networks": networks.join(","),
        "Platform": null,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sandbox_row_has_dockers_fields() {
        let s = json!({
            "Id": "0123456789abcdef", "Names": ["/web"], "Command": "sleep 100000000000000000000",
            "Created": 1_000, "State": "running", "Status": "Up 9 seconds", "Labels": {"a": "b"},
            "Ports": [{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}],
            "NetworkSettings": {"Networks": {"n1": {}, "bridge": {}}},
        });
        let r = sandbox_row(&s, true, 1_009);
        assert_eq!(r["ID"], "0123456789ab");
        assert_eq!(r["Command"], "\"sleep 1000000000000…\"");
        assert_eq!(r["RunningFor"], "9 seconds ago");
        assert_eq!(r["Ports"], "0.0.0.0:8080->80/tcp");
        assert_eq!(r["Networks"], "bridge,n1");
        assert_eq!(r["Labels"], "a=b");
        assert_eq!(r["CreatedAt"], "1970-01-01 00:16:40 +0000 UTC");
    }
}
