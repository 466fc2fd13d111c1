//! The leak check while things run: everything ferry owns in the kernel is accounted for
//! by the store, and everything the store records is in the kernel.
//!
//! The store's view is read through ferryd (`ferry ps`, `ferry inspect`, `ferry network
//! inspect`), the kernel's straight from the kernel (links and addresses of the host's
//! namespace, each running sandbox's namespace file, mounts). [`TestHost::accounted`] fails
//! naming every difference:
//!
//! * links beyond the host's baseline: exactly the bridges of the bridge networks and the
//!   host-side veth (`fy` + 11 hex digits of the endpoint ID) of every endpoint of every
//!   running sandbox; each bridge holds its gateway address, no veth holds an address;
//! * namespace files, `ip netns` links and nsfs mounts: only running sandboxes';
//! * each running sandbox: its process alive, and exactly the IPv4 addresses the store
//!   gives it in its namespace; no address twice on a network, in the store or the kernel;
//! * each network's `Containers` (what `network inspect` shows) is what the sandboxes say;
//! * routes: in the host's main table each bridge carries exactly its subnet's route and
//!   no endpoint's veth carries one; in each running sandbox, one route per endpoint's
//!   subnet and a single default route via a non-internal network's gateway (none when
//!   all its networks are internal), nothing else.
//!
//! What it returns lets a scenario prove the rest by traffic (every endpoint reached).

use crate::host::TestHost;
use crate::kernel;
use anyhow::{ensure, Context, Result};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;

/// A user or predefined network as the store has it.
#[derive(Debug, Clone)]
pub struct NetView {
    pub name: String,
    pub id: String,
    /// The bridge's name, for bridge networks.
    pub bridge: Option<String>,
    /// The gateway with the subnet's prefix (`10.1.0.1/24`), when it has one.
    pub gateway: Option<String>,
    /// `--internal`: its sandboxes get no default route through it.
    pub internal: bool,
}

/// One endpoint of a running sandbox.
#[derive(Debug, Clone)]
pub struct EndpointView {
    pub sandbox: String,
    pub sandbox_id: String,
    pub network: String,
    pub endpoint_id: String,
    /// The address alone (`10.1.0.2`).
    pub ip: String,
    /// With its prefix (`10.1.0.2/24`).
    pub cidr: String,
    /// Its network's gateway (empty when it has none).
    pub gateway: String,
}

/// What [`TestHost::accounted`] found consistent.
#[derive(Debug, Clone, Default)]
pub struct Accounted {
    pub networks: Vec<NetView>,
    pub endpoints: Vec<EndpointView>,
    /// Sandboxes by name that the store says are running.
    pub running: BTreeSet<String>,
    /// Every sandbox by name with its state (`running`, `created`, `exited`).
    pub states: BTreeMap<String, String>,
    /// (name, pid) of every running sandbox.
    pub pids: Vec<(String, i32)>,
    /// Published host ports of running sandboxes: (host port, sandbox, container port).
    pub published: Vec<(u16, String, u16)>,
}

impl TestHost {
    /// The leak check: see the module's note. Fails listing every difference found.
    pub fn accounted(&self) -> Result<Accounted> {
        self.accounted_keeping(&[])
    }

    /// [`TestHost::accounted`], where `keep` are links the scenario made itself.
    pub fn accounted_keeping(&self, keep: &[&str]) -> Result<Accounted> {
        let mut a = Accounted::default();
        let mut problems = Vec::new();
        let sandboxes = self.inspect_all(&["ps", "-aq"], &["inspect"])?;
        let mut running_ids = BTreeSet::new();
        let mut by_sandbox: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for s in &sandboxes {
            let name = s["Name"].as_str().unwrap_or("").trim_start_matches('/');
            let id = s["Id"].as_str().unwrap_or("").to_string();
            let status = s["State"]["Status"].as_str().unwrap_or("").to_string();
            a.states.insert(name.to_string(), status.clone());
            if status != "running" {
                continue;
            }
            a.running.insert(name.to_string());
            running_ids.insert(id.clone());
            let pid = s["State"]["Pid"].as_i64().unwrap_or(0);
            a.pids.push((name.to_string(), pid as i32));
            if pid <= 0 || !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                problems.push(format!(
                    "sandbox {name} is running with pid {pid}, not alive"
                ));
            }
            let nets = s["NetworkSettings"]["Networks"].as_object();
            for (net, e) in nets.into_iter().flatten() {
                let ip = e["IPAddress"].as_str().unwrap_or("").to_string();
                if ip.is_empty() {
                    continue; // host / none: no endpoint of ferry's
                }
                let prefix = e["IPPrefixLen"].as_u64().unwrap_or(0);
                let cidr = format!("{ip}/{prefix}");
                by_sandbox
                    .entry(id.clone())
                    .or_default()
                    .insert(cidr.clone());
                a.endpoints.push(EndpointView {
                    sandbox: name.to_string(),
                    sandbox_id: id.clone(),
                    network: net.clone(),
                    endpoint_id: e["EndpointID"].as_str().unwrap_or("").to_string(),
                    ip,
                    cidr,
                    gateway: e["Gateway"].as_str().unwrap_or("").to_string(),
                });
            }
            a.published.extend(published_of(name, s));
        }
        let networks = self.inspect_all(&["network", "ls", "-q"], &["network", "inspect"])?;
        for n in &networks {
            let view = net_view(n);
            check_listed(n, &view.name, &a.endpoints, &mut problems);
            a.networks.push(view);
        }
        self.account_links(&a, keep, &mut problems)?;
        self.account_namespaces(&a, &running_ids, &by_sandbox, &mut problems)?;
        self.account_host_routes(&a, &mut problems)?;
        self.account_sandbox_routes(&a, &mut problems)?;
        account_addresses(&a, &mut problems);
        ensure!(
            problems.is_empty(),
            "the kernel and the store disagree:\n - {}",
            problems.join("\n - ")
        );
        Ok(a)
    }

    /// `ferry LIST…` for IDs, then `ferry SHOW… IDS…` parsed as an array (empty if none).
    fn inspect_all(&self, list: &[&str], show: &[&str]) -> Result<Vec<Value>> {
        let ids = self.ferry_ok(list)?;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = show.to_vec();
        args.extend(&ids);
        let v: Value = serde_json::from_str(&self.ferry_ok(&args)?)
            .with_context(|| format!("parse `ferry {}`", show.join(" ")))?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    fn account_links(
        &self,
        a: &Accounted,
        keep: &[&str],
        problems: &mut Vec<String>,
    ) -> Result<()> {
        let mut expected: BTreeSet<String> =
            a.networks.iter().filter_map(|n| n.bridge.clone()).collect();
        for e in &a.endpoints {
            if e.endpoint_id.len() >= 11 {
                expected.insert(format!("fy{}", &e.endpoint_id[..11]));
            }
        }
        let present: BTreeSet<String> = self.links()?.into_iter().collect();
        for l in expected.difference(&present) {
            problems.push(format!("link {l} is in the store but not in the kernel"));
        }
        let left = self.leftovers()?;
        let left = left.except_links(keep);
        for l in left.links.iter().filter(|l| !expected.contains(*l)) {
            problems.push(format!("link {l} is in the kernel but not in the store"));
        }
        let addrs = self.addresses()?;
        for n in &a.networks {
            let (Some(br), Some(gw)) = (&n.bridge, &n.gateway) else {
                continue;
            };
            if present.contains(br) && !addrs.iter().any(|(l, c)| l == br && c == gw) {
                problems.push(format!("bridge {br} of {} lacks its gateway {gw}", n.name));
            }
        }
        let veths: BTreeSet<&String> = expected
            .iter()
            .filter(|l| !a.networks.iter().any(|n| n.bridge.as_ref() == Some(*l)))
            .collect();
        for (l, c) in addrs
            .iter()
            .filter(|(l, c)| veths.contains(l) && c.contains('.'))
        {
            problems.push(format!("host-side veth {l} holds an address, {c}"));
        }
        Ok(())
    }

    fn account_namespaces(
        &self,
        a: &Accounted,
        running_ids: &BTreeSet<String>,
        by_sandbox: &BTreeMap<String, BTreeSet<String>>,
        problems: &mut Vec<String>,
    ) -> Result<()> {
        let left = self.leftovers()?;
        let short: BTreeSet<String> = running_ids.iter().map(|i| i[..12].to_string()).collect();
        for f in left.netns_files.iter().filter(|f| !short.contains(*f)) {
            problems.push(format!("namespace file {f} belongs to no running sandbox"));
        }
        let names: BTreeSet<String> = a.running.iter().map(|n| format!("ferry-{n}")).collect();
        for l in left.ip_netns_links.iter().filter(|l| !names.contains(*l)) {
            problems.push(format!("ip netns link {l} belongs to no running sandbox"));
        }
        let ns_dir = self.exec_root.join("netns");
        for m in &left.ns_mounts {
            let owned = m.parent() == Some(ns_dir.as_path())
                && m.file_name()
                    .and_then(|f| f.to_str())
                    .is_some_and(|f| short.contains(f));
            if !owned {
                problems.push(format!(
                    "namespace mount {} is no running sandbox's",
                    m.display()
                ));
            }
        }
        for m in left.other_mounts.iter().chain(&left.etc_mounts) {
            problems.push(format!("mount {} is left", m.display()));
        }
        // Each running sandbox's addresses, read in its namespace.
        for (id, want) in by_sandbox {
            let path = ns_dir.join(&id[..12]);
            let Ok(ns) = File::open(&path) else {
                problems.push(format!(
                    "running sandbox {} has no namespace file",
                    &id[..12]
                ));
                continue;
            };
            let out = kernel::in_netns(&ns, &["ip", "-4", "-o", "addr", "show"])?;
            let have: BTreeSet<String> = kernel::parse_addresses(&out.stdout)
                .into_iter()
                .filter(|(l, _)| l != "lo")
                .map(|(_, c)| c)
                .collect();
            if &have != want {
                problems.push(format!(
                    "sandbox {}: the store gives {want:?}, its namespace holds {have:?}",
                    &id[..12]
                ));
            }
        }
        Ok(())
    }
}

/// `10.1.0.0/24` → `10.1.0.1`.
fn first_address(subnet: &str) -> Option<String> {
    let net: std::net::Ipv4Addr = subnet_of(subnet)?.split_once('/')?.0.parse().ok()?;
    Some(std::net::Ipv4Addr::from(u32::from(net).checked_add(1)?).to_string())
}

/// `10.1.0.2/24` → `10.1.0.0/24`.
fn subnet_of(cidr: &str) -> Option<String> {
    let (ip, len) = cidr.split_once('/')?;
    let ip: std::net::Ipv4Addr = ip.parse().ok()?;
    let len: u32 = len.parse().ok()?;
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    Some(format!(
        "{}/{len}",
        std::net::Ipv4Addr::from(u32::from(ip) & mask)
    ))
}

impl TestHost {
    /// The host's main table: each bridge network's bridge carries exactly its subnet's
    /// route, and no route names an endpoint's veth.
    fn account_host_routes(&self, a: &Accounted, problems: &mut Vec<String>) -> Result<()> {
        let routes = self.routes()?;
        for n in &a.networks {
            let (Some(br), Some(gw)) = (&n.bridge, &n.gateway) else {
                continue;
            };
            let want = subnet_of(gw);
            let on_br: Vec<&kernel::Route> = routes
                .iter()
                .filter(|r| &r.dev == br && r.table == "main")
                .collect();
            if !on_br.iter().any(|r| Some(&r.dest) == want.as_ref()) {
                problems.push(format!(
                    "bridge {br} of {} has no route to its subnet",
                    n.name
                ));
            }
            for r in on_br.iter().filter(|r| Some(&r.dest) != want.as_ref()) {
                problems.push(format!("route `{}` on bridge {br} is not ferry's", r.line));
            }
        }
        for e in &a.endpoints {
            let veth = format!("fy{}", e.endpoint_id.get(..11).unwrap_or(""));
            for r in routes.iter().filter(|r| r.dev == veth) {
                problems.push(format!("host-side veth {veth} carries route `{}`", r.line));
            }
        }
        Ok(())
    }

    /// Each running sandbox's main table: exactly one route per endpoint's subnet, and
    /// one default route via the gateway of one of its non-internal networks if it has
    /// one, none otherwise.
    fn account_sandbox_routes(&self, a: &Accounted, problems: &mut Vec<String>) -> Result<()> {
        let internal: BTreeSet<&str> = a
            .networks
            .iter()
            .filter(|n| n.internal)
            .map(|n| n.name.as_str())
            .collect();
        let mut by_sandbox: BTreeMap<&str, Vec<&EndpointView>> = BTreeMap::new();
        for e in &a.endpoints {
            by_sandbox.entry(&e.sandbox_id).or_default().push(e);
        }
        for (id, eps) in by_sandbox {
            let path = self.exec_root.join("netns").join(&id[..12]);
            let Ok(ns) = File::open(&path) else {
                continue; // named by account_namespaces
            };
            let out = kernel::in_netns(&ns, &["ip", "-4", "route", "show"])?;
            let mut have: Vec<String> = kernel::parse_routes(&out.stdout)
                .into_iter()
                .map(|r| match r.via {
                    Some(via) => format!("{} via {via}", r.dest),
                    None => r.dest,
                })
                .collect();
            have.sort();
            let mut want: Vec<String> = eps.iter().filter_map(|e| subnet_of(&e.cidr)).collect();
            want.sort();
            let gateways: Vec<String> = eps
                .iter()
                .filter(|e| !internal.contains(e.network.as_str()) && !e.gateway.is_empty())
                .map(|e| format!("default via {}", e.gateway))
                .collect();
            let defaults: Vec<&String> = have.iter().filter(|r| r.starts_with("default")).collect();
            let default_ok = match (gateways.is_empty(), defaults.as_slice()) {
                (true, []) => true,
                (false, [d]) => gateways.contains(d),
                _ => false,
            };
            let others: Vec<String> = have
                .iter()
                .filter(|r| !r.starts_with("default"))
                .cloned()
                .collect();
            if others != want || !default_ok {
                problems.push(format!(
                    "sandbox {}: routes {have:?}, the store's endpoints want {want:?} and one of {gateways:?}",
                    eps[0].sandbox
                ));
            }
        }
        Ok(())
    }
}

fn net_view(n: &Value) -> NetView {
    let id = n["Id"].as_str().unwrap_or("").to_string();
    let name = n["Name"].as_str().unwrap_or("").to_string();
    let bridge = (n["Driver"] == "bridge").then(|| {
        n["Options"]["com.docker.network.bridge.name"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| match name.as_str() {
                "bridge" => "ferry0".to_string(),
                _ => format!("fy-{}", &id[..8.min(id.len())]),
            })
    });
    let cfg = &n["IPAM"]["Config"][0];
    let subnet = cfg["Subnet"].as_str();
    // Without a Gateway in its config (none was asked for), the subnet's first address,
    // as Docker and ferry choose it.
    let gateway = cfg["Gateway"]
        .as_str()
        .map(str::to_string)
        .or_else(|| subnet.and_then(first_address));
    let gateway = match (gateway, subnet) {
        (Some(g), Some(s)) => s.split_once('/').map(|(_, p)| format!("{g}/{p}")),
        _ => None,
    };
    NetView {
        internal: n["Internal"].as_bool().unwrap_or(false),
        name,
        id,
        bridge,
        gateway,
    }
}

/// No address twice on one network.
fn account_addresses(a: &Accounted, problems: &mut Vec<String>) {
    let mut seen: BTreeMap<(&str, &str), &str> = BTreeMap::new();
    for e in &a.endpoints {
        if let Some(other) = seen.insert((&e.network, &e.ip), &e.sandbox) {
            problems.push(format!(
                "{} on {} is given to both {other} and {}",
                e.ip, e.network, e.sandbox
            ));
        }
    }
}

/// A sandbox's published host ports, from its inspect: (host port, sandbox, its port).
fn published_of(name: &str, s: &serde_json::Value) -> Vec<(u16, String, u16)> {
    let mut out = vec![];
    let ports = s["NetworkSettings"]["Ports"].as_object();
    for (inner, binds) in ports.into_iter().flatten() {
        let inner: u16 = inner
            .split('/')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        for b in binds.as_array().into_iter().flatten() {
            if let Some(hp) = b["HostPort"].as_str().and_then(|p| p.parse().ok()) {
                out.push((hp, name.to_string(), inner));
            }
        }
    }
    out
}

/// What network `n` lists as attached must be what its sandboxes say.
fn check_listed(
    n: &serde_json::Value,
    name: &str,
    endpoints: &[EndpointView],
    problems: &mut Vec<String>,
) {
    let listed: BTreeSet<(String, String)> = n["Containers"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(id, c)| {
            (
                id.clone(),
                c["EndpointID"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let said: BTreeSet<(String, String)> = endpoints
        .iter()
        .filter(|e| e.network == name)
        .map(|e| (e.sandbox_id.clone(), e.endpoint_id.clone()))
        .collect();
    if listed != said {
        problems.push(format!(
            "network {name} lists {listed:?}, its sandboxes say {said:?}"
        ));
    }
}
