//! The Docker plugin against dockerd's recorded calls
//! (../shared/fixtures/docker-plugin-api/): every exchange of every fixture is replayed,
//! in the order they were captured, against ferry's plugin handler with the recording
//! kernel fake and the in-memory store, and ferry's answer is held to the recorded one
//! where it must match (status, shape, the fields Docker reads). IDs and addresses that
//! are the plugin's own choice (PoolID, dynamic addresses) are mapped from the
//! recording's to ferry's as they appear.
//!
//! Answers are compared by value. What legitimately differs, and so is mapped or
//! derived rather than copied from the recording:
//!
//! * the plugin's own names: PoolIDs, address-space names (Capture… vs Ferry…), veth
//!   names (`capc…` vs ferry's `fy…`), EndpointOperInfo's keys (each driver's own);
//! * one dynamic address (listed in `CURSOR_DIFFERS`): the capture plugin handed a freed
//!   address straight back, ferry's allocator moves on as Docker's own IPAM does;
//! * `RequiresMACAddress`: the capture plugin said true so as to record Docker's MACs;
//!   ferry says false (its addresses do not depend on the MAC), so Docker leaves the MAC
//!   empty and ferry picks Docker's own 02:42+IPv4 MAC, checked where the recording has
//!   that case;
//! * what the capture plugin did because a `capture.*` network option told it to (a
//!   Join without a gateway, with StaticRoutes or DisableGatewayService, a pool that puts
//!   the gateway in its Data): ferry has no such options, so there its answer is its own,
//!   checked by value (the network's gateway, no routes).
//!
//! Where the capture plugin was told to fail (the f-series) ferry would not fail, so the
//! failing call is not sent: the replay then checks that Docker's rollback calls that
//! follow leave nothing behind. Calls the capture's minimal plugins answered with 404
//! (d-series) are ferry's to implement, so they are not sent either. Calls on IPv6 pools
//! and networks wait for IPv6 support: only the pool requests are sent (ferry must refuse
//! them, naming IPv6); the rest of those networks' calls are not. The counts of each are
//! asserted at the end, so a fixture set that changes shows up. Context a fixture relies
//! on but that was not captured (a network made before the capture started) is made
//! first with the same subnet.
//!
//! After every call: the store equals memory, every link the fake kernel holds belongs
//! to a network or endpoint ferry knows, every allocated address has a live owner.
//! At the end, removing what is left Docker's way leaves nothing at all.

#![allow(clippy::unwrap_used, clippy::too_many_lines)] // test code: a failed unwrap is a failed test

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use ferry_core::remote::DOCKER_IPAM_OWNER;
use ferry_kernel::fake::Recorder;
use ferry_store::MemStore;
use ferryd::{Config, Daemon};
use serde_json::{json, Value};

/// `shared/fixtures/docker-plugin-api` beside the checkout, found by walking up from this
/// crate: a clone at /work/main and a worktree at /work/wt/NAME both reach /work/shared.
fn fixtures_dir() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .map(|a| a.join("shared/fixtures/docker-plugin-api"))
        .find(|p| p.is_dir())
        .unwrap_or_else(|| {
            panic!(
                "no shared/fixtures/docker-plugin-api beside any parent of {}",
                here.display()
            )
        })
}

fn daemon(dir: &tempfile::TempDir) -> Arc<Daemon<Recorder>> {
    let cfg = Config::under(dir.path());
    Daemon::new(cfg, Recorder::default(), Box::new(MemStore::default())).unwrap()
}

async fn call(d: &Daemon<Recorder>, method: &str, body: &Value) -> (u16, Value) {
    let raw = if body.is_null() {
        vec![]
    } else {
        let mut v = serde_json::to_vec(body).unwrap();
        v.push(b'\n');
        v
    };
    let resp = ferryd::plugin::handle(d, method, &raw).await;
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn is_error(status: u16, resp: &Value) -> bool {
    status != 200 || resp.get("Err").is_some() || resp.get("Error").is_some()
}

fn bare(ip: &str) -> &str {
    ip.split_once('/').map_or(ip, |(a, _)| a)
}

/// The subnet in a capture PoolID ("CaptureLocal/10.91.11.0/24[/sub/len]").
fn capture_pool_subnet(pool_id: &str) -> String {
    let parts: Vec<&str> = pool_id.split('/').collect();
    format!("{}/{}", parts[1], parts[2])
}

fn first_host(subnet: &str) -> String {
    let net: ipnet::Ipv4Net = subnet.parse().unwrap();
    let ip = std::net::Ipv4Addr::from(u32::from(net.network()) + 1);
    format!("{ip}/{}", net.prefix_len())
}

/// Dynamic addresses where ferry's choice differs from the capture plugin's: p10's c2
/// comes after p05 removed the container holding 10.78.0.3; the capture plugin gave .3
/// again, ferry's cursor (like Docker's default IPAM) goes on to .4.
const CURSOR_DIFFERS: &[&str] = &["p10-run-c2-publish.json #39"];

/// The recorded errors that are Docker's contract, not the capture plugin's injection, and
/// the words ferry's {"Err": …} must use for the same problem.
const RECORDED_ERRORS: &[(&str, &str)] =
    &[("p15-run-err-ip-taken.json #55", "Address already in use")];

/// Joins on a network whose creation was not captured (the replay makes it as context,
/// without its options) but was made with a `capture.*` option: p29's capnogw2 (INDEX.md:
/// "Join without Gateway but DisableGatewayService=true"), whose twin p26 shows the option.
const CAPTURE_OPTION_UNRECORDED: &[&str] = &["p29-run-nogw-disable-gw-service.json #151"];

/// What ferry told Docker about an endpoint, for its later EndpointOperInfo answers.
#[derive(Clone, Default)]
struct SeenEndpoint {
    /// ferry's address, with its prefix length.
    address: String,
    mac: String,
    src_name: Option<String>,
    host_if: Option<String>,
    /// "HOSTIP:HOSTPORT->PORT/PROTO" from Docker's last ProgramExternalConnectivity.
    published: Vec<String>,
}

#[derive(Default)]
struct Maps {
    /// capture PoolID → ferry PoolID
    pools: HashMap<String, String>,
    /// capture address (bare) → ferry address (bare)
    addrs: HashMap<String, String>,
    known_networks: std::collections::HashSet<String>,
    /// What belongs to IPv6 networks, which ferry refuses on purpose (no IPv6 yet):
    /// capture PoolIDs and NetworkIDs.
    v6_pools: std::collections::HashSet<String>,
    v6_nets: std::collections::HashSet<String>,
    /// NetworkID → (ferry's gateway, bare; whether a `capture.*` option changed what the
    /// capture plugin answered for it).
    nets: HashMap<String, (String, bool)>,
    /// EndpointID → what ferry answered about it.
    eps: HashMap<String, SeenEndpoint>,
}

/// Why a recorded call was not sent, counted.
#[derive(Default, Debug, PartialEq, Eq)]
struct NotSent {
    /// The capture plugin's injected failures (f-series).
    injected: usize,
    /// 404s of the minimal plugins (d-series).
    not_implemented: usize,
    /// Calls on IPv6 pools and networks, waiting for IPv6 support.
    ipv6: usize,
}

/// Docker's MAC for an IPv4 address: 02:42 and the address's four bytes.
fn docker_mac(ip: &str) -> String {
    let ip: std::net::Ipv4Addr = bare(ip).parse().unwrap();
    let o = ip.octets();
    format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

/// Docker's port map (`com.docker.network.portmap`) as ferry's EndpointOperInfo lists it.
fn published(options: &Value) -> Vec<String> {
    let mut out: Vec<String> = options["com.docker.network.portmap"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|p| {
            let host_ip = match p["HostIP"].as_str().unwrap_or("") {
                "" => "0.0.0.0",
                ip => ip,
            };
            let (from, to) = (p["HostPort"].as_u64().unwrap(), p["HostPortEnd"].as_u64());
            let ports = match to {
                Some(to) if to != from && to != 0 => format!("{from}-{to}"),
                _ => from.to_string(),
            };
            let proto = match p["Proto"].as_u64() {
                Some(6) => "tcp",
                Some(17) => "udp",
                other => panic!("portmap proto {other:?}"),
            };
            format!("{host_ip}:{ports}->{}/{proto}", p["Port"])
        })
        .collect();
    out.sort();
    out
}

/// Find the IPv6 networks and their pools in all fixtures.
fn scan_v6(files: &[String], m: &mut Maps) {
    for file in files {
        let text = std::fs::read_to_string(fixtures_dir().join(file)).unwrap();
        let f: Value = serde_json::from_str(&text).unwrap();
        let calls = f["plugin_calls"].as_array().unwrap();
        let has_v6_pool = calls.iter().any(|c| c["request"]["V6"] == json!(true));
        for c in calls {
            let (req, resp) = (&c["request"], &c["response"]);
            if has_v6_pool {
                if let Some(p) = resp["PoolID"].as_str() {
                    m.v6_pools.insert(p.to_string());
                }
            }
            let v6_data = req["IPv6Data"].as_array().is_some_and(|a| !a.is_empty());
            let v6_addr = !req["Interface"]["AddressIPv6"]
                .as_str()
                .unwrap_or("")
                .is_empty();
            if v6_data || v6_addr {
                m.v6_nets
                    .insert(req["NetworkID"].as_str().unwrap().to_string());
            }
        }
    }
}

struct Replay {
    d: Arc<Daemon<Recorder>>,
    m: Maps,
    checked: usize,
    not_sent: NotSent,
}

impl Replay {
    fn addr(&self, a: &str) -> String {
        let (ip, len) = a.split_once('/').map_or((a, None), |(i, l)| (i, Some(l)));
        let mapped = self
            .m
            .addrs
            .get(ip)
            .cloned()
            .unwrap_or_else(|| ip.to_string());
        match len {
            Some(l) => format!("{mapped}/{l}"),
            None => mapped,
        }
    }

    async fn ensure_pool(&mut self, capture_id: &str) {
        if self.m.pools.contains_key(capture_id) || !capture_id.starts_with("Capture") {
            return;
        }
        let subnet = capture_pool_subnet(capture_id);
        let (s, r) = call(
            &self.d,
            "IpamDriver.RequestPool",
            &json!({"AddressSpace": "FerryLocal", "Pool": subnet, "SubPool": "", "Options": {}, "V6": false}),
        )
        .await;
        assert_eq!(s, 200, "setting up pool {subnet}: {r}");
        let id = r["PoolID"].as_str().unwrap().to_string();
        let (s, g) = call(
            &self.d,
            "IpamDriver.RequestAddress",
            &json!({"PoolID": id, "Address": "", "Options": {"RequestAddressType": "com.docker.network.gateway"}}),
        )
        .await;
        assert_eq!(s, 200, "setting up the gateway of {subnet}: {g}");
        self.m.pools.insert(capture_id.to_string(), id);
    }

    async fn ensure_network(&mut self, network_id: &str, address: &str) {
        if self.m.known_networks.contains(network_id) {
            return;
        }
        let net: ipnet::Ipv4Net = address.parse().unwrap();
        let subnet = net.trunc().to_string();
        let (s, r) = call(
            &self.d,
            "NetworkDriver.CreateNetwork",
            &json!({"NetworkID": network_id, "Options": {"com.docker.network.enable_ipv6": false, "com.docker.network.generic": {}},
                    "IPv4Data": [{"AddressSpace": "FerryLocal", "Pool": subnet, "Gateway": first_host(&subnet)}], "IPv6Data": []}),
        )
        .await;
        assert_eq!(s, 200, "setting up network {network_id} ({subnet}): {r}");
        self.m.known_networks.insert(network_id.to_string());
        let gw = bare(&first_host(&subnet)).to_string();
        self.m.nets.insert(network_id.to_string(), (gw, false));
    }

    /// Put ferry's IDs and addresses in place of the capture's.
    async fn translate(&mut self, method: &str, req: &Value) -> Value {
        let mut req = req.clone();
        if let Some(p) = req
            .get("PoolID")
            .and_then(Value::as_str)
            .map(str::to_string)
        {
            if method.ends_with("RequestAddress") {
                self.ensure_pool(&p).await;
            }
            let ours = self
                .m
                .pools
                .get(&p)
                .cloned()
                .unwrap_or_else(|| format!("unknown-{p}"));
            req["PoolID"] = json!(ours);
        }
        if method.ends_with("ReleaseAddress") {
            let a = req["Address"].as_str().unwrap_or("").to_string();
            req["Address"] = json!(self.addr(&a));
        }
        if method.ends_with("CreateEndpoint") {
            let a = req["Interface"]["Address"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let nid = req["NetworkID"].as_str().unwrap().to_string();
            if !a.is_empty() {
                self.ensure_network(&nid, &a).await;
                req["Interface"]["Address"] = json!(self.addr(&a));
            }
        }
        if method.ends_with("CreateNetwork") {
            if let Some(list) = req["IPv4Data"].as_array_mut() {
                for d in list {
                    let g = d["Gateway"].as_str().unwrap_or("").to_string();
                    if !g.is_empty() {
                        d["Gateway"] = json!(self.addr(&g));
                    }
                }
            }
        }
        req
    }

    /// Compare ferry's answer with the recorded one by value (mapping what is the plugin's
    /// own choice, see the header); learn mappings.
    fn compare(
        &mut self,
        ctx: &str,
        method: &str,
        req: &Value,
        raw: &Value,
        rec: &Value,
        ours: &Value,
    ) {
        match method {
            "Plugin.Activate" => {
                for role in rec["Implements"].as_array().unwrap() {
                    assert!(
                        ours["Implements"].as_array().unwrap().contains(role),
                        "{ctx}: ferry does not implement {role}: {ours}"
                    );
                }
                assert_eq!(
                    ours,
                    &json!({"Implements": ["NetworkDriver", "IpamDriver"]}),
                    "{ctx}"
                );
            }
            "NetworkDriver.GetCapabilities" => assert_eq!(ours, rec, "{ctx}"),
            "IpamDriver.GetCapabilities" => {
                assert_eq!(rec["RequiresMACAddress"], true, "{ctx}: the recording");
                let expected = json!({
                    "RequiresMACAddress": false,
                    "RequiresRequestReplay": rec["RequiresRequestReplay"],
                });
                assert_eq!(ours, &expected, "{ctx}");
            }
            "IpamDriver.GetDefaultAddressSpaces" => {
                let mut expected = rec.clone();
                for v in expected.as_object_mut().unwrap().values_mut() {
                    *v = json!(v.as_str().unwrap().replace("Capture", "Ferry"));
                }
                assert_eq!(ours, &expected, "{ctx}");
            }
            "IpamDriver.RequestPool" => {
                let id = ours["PoolID"].as_str().expect("PoolID").to_string();
                let mut expected = rec.clone();
                expected["PoolID"] = json!(id);
                if rec["Data"].get("com.docker.network.gateway").is_some() {
                    // f08: the capture plugin chose the gateway; ferry leaves it to Docker.
                    expected["Data"] = json!({});
                }
                assert_eq!(ours, &expected, "{ctx}");
                self.m
                    .pools
                    .insert(rec["PoolID"].as_str().unwrap().to_string(), id);
            }
            "IpamDriver.RequestAddress" => {
                let (o, r) = (
                    ours["Address"].as_str().unwrap(),
                    rec["Address"].as_str().unwrap(),
                );
                let asked = req["Address"].as_str().unwrap_or("");
                if !asked.is_empty() {
                    assert_eq!(bare(o), asked, "{ctx}: asked for {asked}");
                }
                if CURSOR_DIFFERS.contains(&ctx.rsplit_once(' ').unwrap().0) {
                    assert_ne!(o, r, "{ctx}: listed in CURSOR_DIFFERS but equal");
                    let net: ipnet::Ipv4Net = r.parse().unwrap();
                    assert!(
                        net.trunc()
                            .contains(&bare(o).parse::<std::net::Ipv4Addr>().unwrap()),
                        "{ctx}: {o} outside {r}'s subnet"
                    );
                    assert_eq!(ours["Data"], rec["Data"], "{ctx}");
                } else {
                    assert_eq!(ours, rec, "{ctx}");
                }
                self.m
                    .addrs
                    .insert(bare(r).to_string(), bare(o).to_string());
            }
            "NetworkDriver.CreateNetwork" => {
                assert_eq!(ours, &json!({}), "{ctx}: recorded {rec}");
                let nid = req["NetworkID"].as_str().unwrap().to_string();
                let gw = bare(req["IPv4Data"][0]["Gateway"].as_str().unwrap_or("")).to_string();
                let generic = &req["Options"]["com.docker.network.generic"];
                let capture_opts = generic.as_object().is_some_and(|o| {
                    o.keys()
                        .any(|k| k == "capture.gateway" || k == "capture.routes")
                });
                self.m.nets.insert(nid, (gw, capture_opts));
            }
            "NetworkDriver.CreateEndpoint" => {
                let address = req["Interface"]["Address"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                let docker_mac_sent = req["Interface"]["MacAddress"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                let mac = if docker_mac_sent.is_empty() {
                    // Docker left it to the driver: ferry picks Docker's own rule, as the
                    // capture plugin did.
                    let expected = json!({"Interface": {"MacAddress": docker_mac(&address)}});
                    assert_eq!(ours, &expected, "{ctx}");
                    if address == raw["Interface"]["Address"].as_str().unwrap_or("") {
                        assert_eq!(ours, rec, "{ctx}");
                    }
                    docker_mac(&address)
                } else {
                    // Docker chose; a driver that answers another MAC is refused (f19).
                    assert_eq!(ours, &json!({"Interface": null}), "{ctx}");
                    docker_mac_sent
                };
                self.m.eps.insert(
                    req["EndpointID"].as_str().unwrap().to_string(),
                    SeenEndpoint {
                        address,
                        mac,
                        ..Default::default()
                    },
                );
            }
            "NetworkDriver.Join" => {
                let eid = req["EndpointID"].as_str().unwrap();
                let nid = req["NetworkID"].as_str().unwrap();
                let src = ours["InterfaceName"]["SrcName"]
                    .as_str()
                    .unwrap()
                    .to_string();
                // ferry's names: host end fy + 11 characters of the endpoint ID, the end
                // Docker moves into the container the same with a "c".
                assert_eq!(src, format!("fy{}c", &eid[..11]), "{ctx}: SrcName");
                let (gw, capture_opts) = self.m.nets.get(nid).cloned().unwrap_or_else(|| {
                    panic!("{ctx}: Join on a network the replay did not see made")
                });
                let call = ctx.rsplit_once(' ').unwrap().0;
                let expected = if capture_opts || CAPTURE_OPTION_UNRECORDED.contains(&call) {
                    // The capture plugin answered what a capture.* option asked for;
                    // ferry's answer is a plain Join on its network.
                    json!({"InterfaceName": {"SrcName": src, "DstPrefix": "eth"}, "Gateway": gw})
                } else {
                    let mut e = rec.clone();
                    e["InterfaceName"]["SrcName"] = json!(src);
                    if let Some(g) = rec["Gateway"].as_str() {
                        e["Gateway"] = json!(self.addr(g));
                    }
                    e
                };
                assert_eq!(ours, &expected, "{ctx}: recorded {rec}");
                let ep = self
                    .m
                    .eps
                    .get_mut(eid)
                    .expect("Join of an endpoint ferry made");
                ep.src_name = Some(src);
            }
            "NetworkDriver.ProgramExternalConnectivity" => {
                assert_eq!(ours, &json!({}), "{ctx}: recorded {rec}");
                if let Some(ep) = self.m.eps.get_mut(req["EndpointID"].as_str().unwrap()) {
                    ep.published = published(&req["Options"]);
                }
            }
            "NetworkDriver.RevokeExternalConnectivity" => {
                assert_eq!(ours, &json!({}), "{ctx}: recorded {rec}");
                if let Some(ep) = self.m.eps.get_mut(req["EndpointID"].as_str().unwrap()) {
                    ep.published.clear();
                }
            }
            "NetworkDriver.DeleteEndpoint" => {
                assert_eq!(ours, &json!({}), "{ctx}: recorded {rec}");
                self.m.eps.remove(req["EndpointID"].as_str().unwrap());
            }
            "NetworkDriver.EndpointOperInfo" => {
                // The keys are each driver's own (the capture plugin's veth names, ferry's
                // address, host link, MAC and published ports): ferry's values are held to
                // what it answered before about the same endpoint.
                let eid = req["EndpointID"].as_str().unwrap();
                let Some(ep) = self.m.eps.get_mut(eid) else {
                    assert_eq!(
                        ours,
                        &json!({"Value": {}}),
                        "{ctx}: an endpoint ferry does not have"
                    );
                    self.checked += 1;
                    return;
                };
                let v = &ours["Value"];
                let host_if = v["ferry.host_if"].as_str().unwrap_or("").to_string();
                assert_eq!(host_if, format!("fy{}", &eid[..11]), "{ctx}: ferry.host_if");
                if let Some(before) = &ep.host_if {
                    assert_eq!(&host_if, before, "{ctx}: the host link changed");
                }
                ep.host_if = Some(host_if.clone());
                let mut got_published: Vec<String> = v["ferry.published"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{ctx}: no ferry.published: {ours}"))
                    .iter()
                    .map(|p| p.as_str().unwrap().to_string())
                    .collect();
                got_published.sort();
                let mut expected = json!({
                    "ferry.address": ep.address,
                    "ferry.host_if": host_if,
                    "ferry.mac": ep.mac,
                });
                expected["ferry.published"] = json!(ep.published);
                let mut got = v.clone();
                got["ferry.published"] = json!(got_published);
                assert_eq!(got, expected, "{ctx}");
            }
            _ => assert_eq!(ours, &json!({}), "{ctx}: recorded {rec}"),
        }
        if method == "NetworkDriver.CreateNetwork" {
            self.m
                .known_networks
                .insert(req["NetworkID"].as_str().unwrap().to_string());
        }
        self.checked += 1;
    }

    async fn invariants(&self, ctx: &str) {
        let stored = self.d.stored_state().unwrap();
        let st = self.d.state.lock().await;
        assert_eq!(stored.networks, st.networks, "{ctx}: store vs memory");
        assert_eq!(stored.plugin, st.plugin, "{ctx}: store vs memory (plugin)");
        let mut known: Vec<String> = st
            .networks
            .values()
            .filter_map(|n| n.bridge().map(|b| b.name.to_string()))
            .collect();
        for e in st.plugin.endpoints.values() {
            known.extend(e.links());
            assert!(
                st.networks.contains_key(&e.endpoint.network_id),
                "{ctx}: endpoint {} outlived its network",
                e.id
            );
        }
        for l in self.d.kernel.links.lock().unwrap().iter() {
            assert!(known.contains(l), "{ctx}: link {l} leaked");
        }
        for e in st.plugin.endpoints.values().filter(|e| e.joined) {
            let host = e
                .endpoint
                .live
                .as_ref()
                .unwrap()
                .host_if
                .as_ref()
                .unwrap()
                .to_string();
            assert!(
                self.d.kernel.links.lock().unwrap().contains(&host),
                "{ctx}: joined endpoint {} has no link",
                e.id
            );
        }
        let pools = st
            .networks
            .values()
            .filter_map(|n| n.pool.as_ref())
            .chain(st.plugin.pools.values().filter_map(|p| p.pool.as_ref()));
        for p in pools {
            for (ip, owner) in p.allocations() {
                assert!(
                    owner == DOCKER_IPAM_OWNER
                        || st.plugin.endpoints.contains_key(owner)
                        || st.sandboxes.contains_key(owner),
                    "{ctx}: {ip} owned by {owner}, who is gone"
                );
            }
        }
        for p in st.plugin.pools.values() {
            assert!(
                p.pool.is_some() != p.network_id.is_some(),
                "{ctx}: pool {} is both or neither bound and unbound",
                p.id
            );
        }
    }

    async fn run_file(&mut self, file: &str) {
        let text = std::fs::read_to_string(fixtures_dir().join(file)).unwrap();
        let f: Value = serde_json::from_str(&text).unwrap();
        let series = &file[..1];
        for c in f["plugin_calls"].as_array().unwrap() {
            let method = c["path"].as_str().unwrap().trim_start_matches('/');
            let ctx = format!("{file} #{} {method}", c["seq"]);
            let rec_status = c["response_status"].as_u64().unwrap() as u16;
            let rec = &c["response"];
            let recorded_error = is_error(rec_status, rec);
            if recorded_error && series == "f" {
                self.not_sent.injected += 1;
                continue; // the capture plugin's own failure, not Docker's contract
            }
            if recorded_error && series == "d" && rec_status == 404 {
                self.not_sent.not_implemented += 1;
                continue;
            }
            let raw = &c["request"];
            let v6 = raw["PoolID"]
                .as_str()
                .is_some_and(|p| self.m.v6_pools.contains(p))
                || raw["NetworkID"]
                    .as_str()
                    .is_some_and(|n| self.m.v6_nets.contains(n));
            if raw["V6"] == json!(true) {
                let (status, ours) = call(&self.d, method, raw).await;
                assert!(
                    is_error(status, &ours) && ours["Err"].as_str().unwrap().contains("IPv6"),
                    "{ctx}: ferry must refuse IPv6 clearly: {ours}"
                );
                self.checked += 1;
                continue;
            }
            if v6 {
                self.not_sent.ipv6 += 1;
                continue; // a network ferry refused (IPv6), or one of its parts
            }
            let req = self.translate(method, raw).await;
            let (status, ours) = call(&self.d, method, &req).await;
            if recorded_error {
                assert!(
                    is_error(status, &ours),
                    "{ctx}: recorded an error, ferry answered {status} {ours}"
                );
                let call = ctx.rsplit_once(' ').unwrap().0;
                let why = RECORDED_ERRORS
                    .iter()
                    .find(|(c, _)| *c == call)
                    .unwrap_or_else(|| {
                        panic!("{ctx}: a recorded error RECORDED_ERRORS does not list")
                    })
                    .1;
                assert!(
                    ours["Err"].as_str().is_some_and(|m| m.contains(why)),
                    "{ctx}: ferry's error must be {{\"Err\": message}} naming the problem ({why:?}): {ours}"
                );
                self.checked += 1;
            } else {
                assert_eq!(status, 200, "{ctx}: ferry answered {ours} to {req}");
                self.compare(&ctx, method, &req, raw, rec, &ours);
            }
            self.invariants(&ctx).await;
        }
    }
}

fn ordered_files() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    // The order of capture: the normal lifecycle up to p41, the failures, the rest of
    // the lifecycle (p42 prunes the failure networks), then discovery variants.
    let rank = |n: &str| match (&n[..1], n[1..3].parse::<u32>().unwrap_or(0)) {
        ("p", k) if k <= 41 => 0,
        ("f", _) => 1,
        ("p", _) => 2,
        _ => 3,
    };
    names.sort_by_key(|n| (rank(n), n.clone()));
    names
}

#[tokio::test]
async fn every_recorded_exchange_replays_against_ferry() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = Replay {
        d: daemon(&dir),
        m: Maps::default(),
        checked: 0,
        not_sent: NotSent::default(),
    };
    let files = ordered_files();
    assert!(files.len() >= 70, "fixtures missing: {files:?}");
    scan_v6(&files, &mut r.m);
    for f in &files {
        r.run_file(f).await;
        if f.starts_with("p23") {
            // capnet and capnet2 are gone in Docker: so in ferry, with their pools.
            let st = r.d.state.lock().await;
            assert!(
                st.plugin.endpoints.is_empty(),
                "after p23: endpoints left: {:?}",
                st.plugin.endpoints.keys().collect::<Vec<_>>()
            );
            assert!(
                st.networks
                    .values()
                    .all(|n| !n.name.starts_with("docker-5e24")),
                "after p23: capnet is still there"
            );
        }
    }
    eprintln!(
        "{} exchanges checked against ferry; not sent: {:?}",
        r.checked, r.not_sent
    );
    // Of the 316 recorded calls: 269 sent and compared (including the IPv6 pool request,
    // which must be refused), and 47 not sent: 17 of the capture plugin's injected
    // failures, 7 of the minimal plugins' 404s, and 23 calls on IPv6 networks, which wait
    // for IPv6 support in ferry.
    assert_eq!(
        r.not_sent,
        NotSent {
            injected: 17,
            not_implemented: 7,
            ipv6: 23
        }
    );
    assert_eq!(r.checked, 269, "exchanges checked");

    // Remove what is left as Docker would: endpoints, networks, pools.
    let (eps, nets, pools) = {
        let st = r.d.state.lock().await;
        (
            st.plugin
                .endpoints
                .values()
                .map(|e| (e.endpoint.network_id.clone(), e.id.clone()))
                .collect::<Vec<_>>(),
            st.plugin.networks.keys().cloned().collect::<Vec<_>>(),
            st.plugin.pools.keys().cloned().collect::<Vec<_>>(),
        )
    };
    for (n, e) in eps {
        let body = json!({"NetworkID": n, "EndpointID": e});
        for m in ["Leave", "DeleteEndpoint"] {
            let (s, _) = call(&r.d, &format!("NetworkDriver.{m}"), &body).await;
            assert_eq!(s, 200);
        }
    }
    for p in &pools {
        let (s, _) = call(&r.d, "IpamDriver.ReleasePool", &json!({"PoolID": p})).await;
        assert_eq!(s, 200);
    }
    for n in nets {
        let (s, _) = call(
            &r.d,
            "NetworkDriver.DeleteNetwork",
            &json!({"NetworkID": n}),
        )
        .await;
        assert_eq!(s, 200);
    }
    r.invariants("final sweep").await;
    let st = r.d.state.lock().await;
    assert_eq!(st.plugin, Default::default(), "plugin records left");
    assert!(
        st.networks.is_empty(),
        "networks left: {:?}",
        st.networks.keys()
    );
    assert!(
        r.d.kernel.links.lock().unwrap().is_empty(),
        "links left: {:?}",
        r.d.kernel.links.lock().unwrap()
    );
}

/// The recording has no plain Join without a gateway (p27 and p29 are the capture
/// plugin's options), so the case Docker relies on for an internal network is made here
/// in p38's shape: no `Gateway` key at all, and `DisableGatewayService`, so Docker adds
/// no docker_gwbridge endpoint and the container gets no default route.
#[tokio::test]
async fn a_join_on_an_internal_network_names_no_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(&dir);
    let (s, pool) = call(
        &d,
        "IpamDriver.RequestPool",
        &json!({"AddressSpace": "FerryLocal", "Pool": "10.97.0.0/24", "SubPool": "", "Options": {}, "V6": false}),
    )
    .await;
    assert_eq!(s, 200, "{pool}");
    let pool_id = pool["PoolID"].as_str().unwrap();
    let (s, gw) = call(
        &d,
        "IpamDriver.RequestAddress",
        &json!({"PoolID": pool_id, "Address": "", "Options": {"RequestAddressType": "com.docker.network.gateway"}}),
    )
    .await;
    assert_eq!((s, &gw["Address"]), (200, &json!("10.97.0.1/24")), "{gw}");
    let nid = "9".repeat(64);
    let (s, r) = call(
        &d,
        "NetworkDriver.CreateNetwork",
        &json!({"NetworkID": nid, "Options": {"com.docker.network.enable_ipv6": false, "com.docker.network.generic": {},
                "com.docker.network.internal": true},
                "IPv4Data": [{"AddressSpace": "FerryLocal", "Pool": "10.97.0.0/24", "Gateway": "10.97.0.1/24"}], "IPv6Data": []}),
    )
    .await;
    assert_eq!((s, &r), (200, &json!({})));
    let (s, a) = call(
        &d,
        "IpamDriver.RequestAddress",
        &json!({"PoolID": pool_id, "Address": "", "Options": {}}),
    )
    .await;
    assert_eq!((s, &a["Address"]), (200, &json!("10.97.0.2/24")), "{a}");
    let eid = "e".repeat(64);
    let (s, r) = call(
        &d,
        "NetworkDriver.CreateEndpoint",
        &json!({"NetworkID": nid, "EndpointID": eid, "Interface": {"Address": "10.97.0.2/24", "AddressIPv6": "", "MacAddress": ""}, "Options": {}}),
    )
    .await;
    assert_eq!(
        (s, r),
        (
            200,
            json!({"Interface": {"MacAddress": "02:42:0a:61:00:02"}})
        )
    );
    let (s, join) = call(
        &d,
        "NetworkDriver.Join",
        &json!({"NetworkID": nid, "EndpointID": eid, "SandboxKey": "/var/run/docker/netns/x", "Options": {}}),
    )
    .await;
    assert_eq!(s, 200, "{join}");
    assert_eq!(
        join,
        json!({"InterfaceName": {"SrcName": format!("fy{}c", &eid[..11]), "DstPrefix": "eth"}, "DisableGatewayService": true})
    );
}
