//! ferry's Engine API objects against dockerd's recorded answers
//! (../shared/fixtures/docker-engine-api/): the same fields, in the same order, with the
//! same values. Only what is each daemon's own is taken from ferry's object before the
//! comparison (`differs`), each with its reason: IDs, creation times, the default
//! bridge's interface name, the sandbox's netns path, a process's PID and times.

#![allow(clippy::unwrap_used, clippy::too_many_lines)] // test code: a failed unwrap is a failed test

use std::path::PathBuf;

use ferry_core::docker::container::{inspect, SandboxPaths};
use ferry_core::docker::network::{network_resource, NetworkCreateRequest};
use ferry_core::model::{DnsConf, Endpoint, LiveEndpoint, RunState, Sandbox};
use ferry_core::validate::{network_from_request, predefined_networks, CreateContext};
use ferry_core::IfName;
use serde_json::{json, Value};

/// A file of `shared/fixtures/docker-engine-api` beside the checkout, found by walking up
/// from this crate: a clone at /work/main and a worktree at /work/wt/NAME both reach
/// /work/shared.
fn fixture(name: &str) -> Value {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = here
        .ancestors()
        .map(|a| a.join("shared/fixtures/docker-engine-api"))
        .find(|p| p.is_dir())
        .unwrap_or_else(|| {
            panic!(
                "no shared/fixtures/docker-engine-api beside any parent of {}",
                here.display()
            )
        });
    let p = dir.join(name);
    let text =
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("fixture {}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

/// The response body of the exchange whose request path ends with `suffix`.
fn response(f: &Value, suffix: &str) -> Value {
    f["exchanges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["request"]["path"].as_str().unwrap().ends_with(suffix))
        .unwrap()["response"]["body"]
        .clone()
}

/// `theirs` with the fields at `pointers` (JSON pointers) taken from `ours`: the values
/// that legitimately differ. Each must exist on both sides and be non-empty in ours.
fn differs(ours: &Value, theirs: &Value, pointers: &[&str]) -> Value {
    let mut t = theirs.clone();
    for p in pointers {
        let o = ours.pointer(p).unwrap_or_else(|| panic!("ours has no {p}"));
        assert!(
            !(o.is_null() || o == "" || o == 0),
            "{p} is empty in ours: {o}"
        );
        *t.pointer_mut(p)
            .unwrap_or_else(|| panic!("theirs has no {p}")) = o.clone();
    }
    t
}

fn keys(v: &Value) -> Vec<String> {
    v.as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn demonet() -> ferry_core::model::Network {
    let f = fixture("04-network-create-demonet.json");
    let req: NetworkCreateRequest =
        serde_json::from_value(f["exchanges"][1]["request"]["body"].clone()).unwrap();
    let existing = predefined_networks(
        ["1".repeat(64), "2".repeat(64), "3".repeat(64)],
        "t",
        "172.17.0.1/16".parse().unwrap(),
    );
    let ctx = CreateContext {
        existing: &existing,
        host_routes: &[],
        pool_cursor: None,
        id: "4c".repeat(32),
        created: "t".into(),
    };
    network_from_request(&req, &ctx).unwrap().network
}

#[test]
fn network_inspect_has_dockers_fields_in_dockers_order() {
    let theirs = response(
        &fixture("05-network-inspect-demonet.json"),
        "/networks/demonet",
    );
    let ours = network_resource(&demonet(), &[]);
    assert_eq!(keys(&ours), keys(&theirs));
    assert_eq!(
        ours["IPAM"], theirs["IPAM"],
        "IPAM echoes what the user gave, as dockerd does"
    );
    // The ID and the creation time are each daemon's own.
    assert_eq!(ours, differs(&ours, &theirs, &["/Id", "/Created"]));
}

#[test]
fn default_bridge_inspect_matches_dockers_shape() {
    let theirs = response(
        &fixture("06-network-inspect-bridge.json"),
        "/networks/bridge",
    );
    let nets = predefined_networks(
        ["1".repeat(64), "2".repeat(64), "3".repeat(64)],
        "t",
        "172.17.0.1/16".parse().unwrap(),
    );
    let ours = network_resource(&nets[0], &[]);
    assert_eq!(keys(&ours), keys(&theirs));
    assert_eq!(ours["IPAM"], theirs["IPAM"]);
    // ferry's default bridge is ferry0, beside a docker0 Docker may still own.
    assert_eq!(
        ours["Options"]["com.docker.network.bridge.name"], "ferry0",
        "the default bridge's name"
    );
    assert_eq!(
        ours,
        differs(
            &ours,
            &theirs,
            &["/Id", "/Created", "/Options/com.docker.network.bridge.name"]
        )
    );
}

#[test]
fn container_inspect_has_dockers_network_fields() {
    let theirs = response(
        &fixture("19-inspect-container-web77.json"),
        "/containers/web77/json",
    );
    let net = demonet();
    let ip = "10.77.0.200".parse().unwrap();
    let sb = Sandbox {
        id: "aa".repeat(32),
        name: "web77".into(),
        created: "t".into(),
        created_unix: 0,
        hostname: "aaaaaaaaaaaa".into(),
        cmd: vec!["sleep".into(), "100000".into()],
        network_mode: "demonet".to_string().into(),
        auto_remove: false,
        dns: DnsConf::default(),
        state: RunState::Running {
            pid: 1,
            start_time: 1,
        },
        started_at: None,
        finished_at: None,
        labels: Default::default(),
        endpoints: vec![Endpoint {
            network_id: net.id.clone(),
            static_ip: Some(ip),
            aliases: vec![],
            ports: vec![],
            membership: Default::default(),
            live: Some(LiveEndpoint {
                id: "cd".repeat(32),
                ip,
                prefix_len: 24,
                gateway: Some("10.77.0.1".parse().unwrap()),
                mac: ferry_core::model::mac_for(ip),
                host_if: Some(IfName::new("fyaaaa").unwrap()),
                ifname: IfName::new("eth0").unwrap(),
                default_route: true,
                published: vec![],
                way_out: Default::default(),
            }),
        }],
    };
    let paths = SandboxPaths {
        sandbox_key: "k".into(),
        hosts: "h".into(),
        resolv_conf: "r".into(),
        hostname: "n".into(),
        log: "l".into(),
    };
    let ours = inspect(&sb, &[&net], &paths);
    let theirs_ns = &theirs["NetworkSettings"];
    assert_eq!(keys(&ours["NetworkSettings"]), keys(theirs_ns));
    assert_eq!(keys(&ours["State"]), keys(&theirs["State"]));
    let (o, t) = (
        &ours["NetworkSettings"]["Networks"]["demonet"],
        &theirs_ns["Networks"]["demonet"],
    );
    assert_eq!(keys(o), keys(t));
    for k in [
        "IPAMConfig",
        "Gateway",
        "IPAddress",
        "IPPrefixLen",
        "MacAddress",
    ] {
        assert_eq!(o[k], t[k], "{k}");
    }
    // The whole of NetworkSettings, by value: the sandbox's ID and netns path, the
    // network's and endpoint's IDs and the short-ID alias are each daemon's own.
    assert_eq!(
        ours["NetworkSettings"],
        differs(
            &ours["NetworkSettings"],
            theirs_ns,
            &[
                "/SandboxID",
                "/SandboxKey",
                "/Networks/demonet/NetworkID",
                "/Networks/demonet/EndpointID",
                "/Networks/demonet/Aliases/0",
            ]
        )
    );
    // State by value: the PID and the start time are the process's own.
    assert_eq!(
        ours["State"],
        differs(&ours["State"], &theirs["State"], &["/Pid", "/StartedAt"])
    );
    let alias = ours["NetworkSettings"]["Networks"]["demonet"]["Aliases"][0].clone();
    assert_eq!(alias, json!(&sb.id[..12]), "the alias is the short ID");
    assert_eq!(
        ours["NetworkSettings"]["IPAddress"], "",
        "top-level IPAddress is only for the default bridge"
    );
    for k in keys(&ours) {
        assert!(
            theirs.get(&k).is_some(),
            "ferry's inspect has {k}, dockerd's does not"
        );
    }
}
