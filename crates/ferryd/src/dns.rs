//! ferryd's side of the embedded DNS: the table derived from the desired state, the
//! listen addresses, and each sandbox's resolv.conf.
//!
//! Design note. The responder listens on the gateway address of every user-defined
//! bridge network, port 53, in ferryd's own network namespace (as aardvark-dns does),
//! one UDP socket and one TCP listener per network. A sandbox on such a network gets
//! `nameserver <gateway of its first user-defined network>`; the query's source
//! address tells the responder which sandbox asks, so one table answers every
//! socket, and a sandbox on two networks sees the names of both. The alternative,
//! Docker's 127.0.0.11 inside each sandbox, needs a socket (or a NAT rule) in every
//! sandbox namespace: per-sandbox cost, and a firewall dependency this avoids.
//! Forwarding runs in ferryd's namespace too, so a host resolver on loopback
//! (systemd-resolved's 127.0.0.53) works as an upstream.
//!
//! On every committed change of the state, `Dns::update` rebuilds the table (a pure
//! function of the state: `records`) and swaps it in, then reconciles the sockets with
//! the networks. Both are cheap for hundreds of sandboxes, and neither drops a query.
//! The default `bridge` network has no names, as in Docker: its sandboxes keep the
//! host's resolvers (or `--dns`) in their resolv.conf.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use ferry_core::files::resolv_conf;
use ferry_core::model::{DnsConf, Driver, Network, Sandbox};
use ferry_dns::{Forwarder, Membership, SandboxRecord, Server, Table};
use ferry_kernel::KernelOps;

use crate::ops::Daemon;
use crate::state::State;

/// The port the responder serves on every gateway.
pub const DNS_PORT: u16 = 53;
/// How often sockets that failed to open are tried again.
const RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// Networks whose sandboxes find each other by name: user-defined bridges.
fn has_names(n: &Network) -> bool {
    n.driver == Driver::Bridge && !n.predefined
}

/// The addresses the responder listens on: the gateway of every network with names.
pub fn listen_addrs(st: &State) -> BTreeSet<Ipv4Addr> {
    st.networks
        .values()
        .filter(|n| has_names(n))
        .filter_map(|n| n.pool.as_ref().map(|p| p.gateway))
        .collect()
}

/// `IP` (port 53) or `IP:PORT` / `[IPv6]:PORT`.
pub fn parse_upstream(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| format!("{s}: not an IP address or IP:PORT"))
}

/// The nameservers of a resolv.conf, port 53. Loopback ones are kept: the forwarder
/// runs in ferryd's namespace, where they answer.
pub fn resolv_upstreams(resolv: &str) -> Vec<SocketAddr> {
    resolv
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next()).flatten()
        })
        .filter_map(|ip| ip.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// The responder's view of the state: every running sandbox with an endpoint on a
/// network with names. Pure.
pub fn records(st: &State) -> Vec<SandboxRecord> {
    let mut out = vec![];
    for sb in st.sandboxes.values() {
        let mut rec = SandboxRecord {
            forward: false,
            upstreams: sb
                .dns
                .servers
                .iter()
                .filter_map(|s| s.parse::<IpAddr>().ok())
                .map(|ip| SocketAddr::new(ip, 53))
                .collect(),
            ..Default::default()
        };
        for e in &sb.endpoints {
            let (Some(live), Some(net)) = (&e.live, st.networks.get(&e.network_id)) else {
                continue;
            };
            rec.forward |= !net.internal;
            if has_names(net) {
                let mut names = vec![sb.name.clone()];
                names.push(sb.hostname.clone());
                names.extend(e.aliases.iter().cloned());
                names.retain(|n| !n.is_empty());
                rec.memberships.push(Membership {
                    network: net.id.clone(),
                    ip: live.ip,
                    names,
                });
            } else {
                rec.other_addrs.push(live.ip);
            }
        }
        if !rec.memberships.is_empty() {
            out.push(rec);
        }
    }
    out
}

/// The name server of a sandbox: the gateway of its first endpoint on a network with
/// names, if it has one.
fn nameserver_of(sb: &Sandbox, gateways: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    sb.endpoints
        .iter()
        .filter_map(|e| e.live.as_ref()?.gateway)
        .find(|g| gateways.contains(g))
}

#[derive(Default)]
struct Inner {
    server: Option<Server>,
    default_upstreams: Vec<SocketAddr>,
    /// The listen addresses of the last update (also before serving starts: they
    /// decide what sandboxes' resolv.conf says).
    gateways: BTreeSet<Ipv4Addr>,
    /// The records the table in service was built from: an update that changes none
    /// (a pid recorded, an address freed on a network without names) keeps the table.
    built_from: Option<Vec<SandboxRecord>>,
}

/// The daemon's responder. Until `start` it only tracks the listen addresses (the
/// unit tests never open a socket).
#[derive(Default)]
pub struct Dns {
    inner: Mutex<Inner>,
}

impl Dns {
    /// Follow a committed state: new table, sockets matching the networks.
    pub fn update(&self, st: &State) {
        let mut inner = self.inner.lock().expect("dns lock");
        inner.gateways = listen_addrs(st);
        let Some(server) = &inner.server else {
            return;
        };
        let recs = records(st);
        if inner.built_from.as_ref() != Some(&recs) {
            server.set_table(Table::build(&recs, &inner.default_upstreams));
            inner.built_from = Some(recs);
        }
        let server = inner.server.as_ref().expect("checked above");
        for e in server.listen_on(&inner.gateways) {
            tracing::warn!("{e}; trying again every {RETRY:?}");
        }
    }

    /// Open the sockets that could not be opened before (a port held by someone else).
    fn retry(&self) {
        let inner = self.inner.lock().expect("dns lock");
        if let Some(server) = &inner.server {
            if server.listening() != inner.gateways {
                for e in server.listen_on(&inner.gateways) {
                    tracing::debug!("{e}");
                }
            }
        }
    }

    fn start(&self, st: &State, upstreams: Vec<SocketAddr>) {
        {
            let mut inner = self.inner.lock().expect("dns lock");
            inner.server = Some(Server::new(
                DNS_PORT,
                Forwarder::default(),
                tokio::runtime::Handle::current(),
            ));
            inner.default_upstreams = upstreams;
        }
        self.update(st);
    }

    /// The sandbox's resolv.conf: the responder if one of its networks has names,
    /// with its `--dns-search`/`--dns-option` (its `--dns` servers become the
    /// responder's upstreams); otherwise the host's servers or `--dns`.
    pub fn resolv_conf(&self, host_resolv: &str, sb: &Sandbox) -> String {
        let gateways = &self.inner.lock().expect("dns lock").gateways;
        match nameserver_of(sb, gateways) {
            Some(ns) => resolv_conf(
                host_resolv,
                &DnsConf {
                    servers: vec![ns.to_string()],
                    search: sb.dns.search.clone(),
                    options: sb.dns.options.clone(),
                },
            ),
            None => resolv_conf(host_resolv, &sb.dns),
        }
    }
}

impl<K: KernelOps> Daemon<K> {
    /// Start answering: `upstreams` (the `--dns-upstream` flags), else the host's
    /// resolv.conf nameservers, serve sandboxes without `--dns`.
    pub async fn serve_dns(self: &Arc<Self>, upstreams: Vec<SocketAddr>) {
        let upstreams = if upstreams.is_empty() {
            resolv_upstreams(&self.host_resolv)
        } else {
            upstreams
        };
        tracing::info!("dns: forwarding to {upstreams:?} unless a sandbox has --dns");
        let st = self.state.lock().await;
        self.dns.start(&st, upstreams);
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RETRY).await;
                match weak.upgrade() {
                    Some(d) => d.dns.retry(),
                    None => return,
                }
            }
        });
    }

    /// Rewrite a running sandbox's resolv.conf in place (its networks changed).
    pub(crate) fn write_resolv(&self, st: &State, id: &str) {
        let Some(sb) = st.sandboxes.get(id).filter(|s| s.network_mode != "host") else {
            return;
        };
        let (_, resolv, _) = self.sandbox_files(id);
        if resolv.exists() {
            if let Err(e) = std::fs::write(&resolv, self.dns.resolv_conf(&self.host_resolv, sb)) {
                tracing::warn!("write {}: {e}", resolv.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::model::{Endpoint, LiveEndpoint, RunState};
    use ferry_dns::{lookup, Answer};
    use hickory_proto::rr::RecordType;

    fn net(id: &str, gw: &str, predefined: bool, internal: bool) -> Network {
        let subnet: ipnet::Ipv4Net = format!("{gw}/24").parse().unwrap();
        let pool = ferry_core::ipam::AddressPool::new(subnet.trunc(), gw.parse().unwrap(), None);
        Network {
            id: id.into(),
            name: id.into(),
            created: String::new(),
            driver: Driver::Bridge,
            internal,
            attachable: false,
            predefined,
            labels: Default::default(),
            options: Default::default(),
            ipam_options: None,
            ipam_echo: vec![],
            bridge: None,
            pool: Some(pool),
        }
    }

    fn ep(net: &str, ip: &str, gw: &str, aliases: &[&str]) -> Endpoint {
        Endpoint {
            network_id: net.into(),
            static_ip: None,
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
            ports: vec![],
            live: Some(LiveEndpoint {
                id: "e".repeat(64),
                ip: ip.parse().unwrap(),
                prefix_len: 24,
                gateway: Some(gw.parse().unwrap()),
                mac: [0; 6],
                host_if: ferry_core::IfName::new("fyx").unwrap(),
                ifname: ferry_core::IfName::new("eth0").unwrap(),
                default_route: false,
                published: vec![],
            }),
        }
    }

    fn sandbox(name: &str, hostname: &str, endpoints: Vec<Endpoint>) -> Sandbox {
        Sandbox {
            id: format!("{name}{}", "0".repeat(64 - name.len())),
            name: name.into(),
            created: String::new(),
            created_unix: 0,
            hostname: hostname.into(),
            cmd: vec![],
            network_mode: "x".into(),
            auto_remove: false,
            dns: DnsConf::default(),
            state: RunState::Running {
                pid: 1,
                start_time: 1,
            },
            started_at: None,
            finished_at: None,
            endpoints,
        }
    }

    fn state() -> State {
        let mut st = State::default();
        for n in [
            net("bridge", "172.17.0.1", true, false),
            net("a", "10.1.0.1", false, false),
            net("b", "10.2.0.1", false, false),
            net("i", "10.3.0.1", false, true),
        ] {
            st.networks.insert(n.id.clone(), n);
        }
        for sb in [
            sandbox(
                "web",
                "h-web",
                vec![ep("a", "10.1.0.2", "10.1.0.1", &["www"])],
            ),
            sandbox(
                "both",
                "both",
                vec![
                    ep("bridge", "172.17.0.2", "172.17.0.1", &[]),
                    ep("b", "10.2.0.2", "10.2.0.1", &[]),
                    ep("a", "10.1.0.3", "10.1.0.1", &[]),
                ],
            ),
            sandbox(
                "old",
                "old",
                vec![ep("bridge", "172.17.0.3", "172.17.0.1", &[])],
            ),
            sandbox("inner", "inner", vec![ep("i", "10.3.0.2", "10.3.0.1", &[])]),
        ] {
            st.sandboxes.insert(sb.id.clone(), sb);
        }
        st
    }

    fn table() -> Table {
        Table::build(&records(&state()), &["127.0.0.1:53".parse().unwrap()])
    }

    fn a(table: &Table, from: &str, name: &str) -> Answer {
        lookup(table, from.parse().unwrap(), name, RecordType::A)
    }

    #[test]
    fn the_responder_listens_on_user_network_gateways_only() {
        let want: BTreeSet<Ipv4Addr> = ["10.1.0.1", "10.2.0.1", "10.3.0.1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(listen_addrs(&state()), want);
    }

    #[test]
    fn names_hostnames_and_aliases_of_running_sandboxes_resolve_per_network() {
        let t = table();
        let web = Answer::A(vec!["10.1.0.2".parse().unwrap()]);
        for n in ["web", "h-web", "www"] {
            assert_eq!(a(&t, "10.1.0.3", n), web, "{n}");
        }
        // `both` asks from any of its addresses, the default bridge's included.
        assert_eq!(a(&t, "172.17.0.2", "web"), web);
        assert_eq!(a(&t, "10.3.0.2", "web"), Answer::NxDomain);
        // Default-bridge names do not exist, and default-bridge-only sandboxes are
        // strangers.
        assert!(matches!(a(&t, "10.1.0.2", "old"), Answer::Forward(_)));
        assert_eq!(a(&t, "172.17.0.3", "web"), Answer::Refused);
    }

    #[test]
    fn a_stopped_sandbox_has_no_names() {
        let mut st = state();
        for sb in st.sandboxes.values_mut() {
            if sb.name == "web" {
                sb.endpoints[0].live = None;
                sb.state = RunState::Exited { code: 0 };
            }
        }
        let t = Table::build(&records(&st), &[]);
        assert!(!matches!(a(&t, "10.1.0.3", "web"), Answer::A(_)));
    }

    #[test]
    fn internal_only_sandboxes_do_not_forward() {
        let t = table();
        assert_eq!(
            a(&t, "10.3.0.2", "inner"),
            Answer::A(vec!["10.3.0.2".parse().unwrap()])
        );
        assert_eq!(a(&t, "10.3.0.2", "example.test"), Answer::Refused);
    }

    #[test]
    fn dns_flags_become_the_sandboxs_upstreams() {
        let mut st = state();
        for sb in st.sandboxes.values_mut() {
            sb.dns.servers = vec!["10.9.0.53".into()];
        }
        let t = Table::build(&records(&st), &[]);
        assert_eq!(
            a(&t, "10.1.0.2", "example.test"),
            Answer::Forward(vec!["10.9.0.53:53".parse().unwrap()].into())
        );
    }

    #[test]
    fn resolv_conf_points_at_the_first_named_networks_gateway() {
        let dns = Dns::default();
        let st = state();
        dns.update(&st);
        let by = |n: &str| st.sandboxes.values().find(|s| s.name == n).unwrap().clone();
        let host = "nameserver 10.0.0.53\nsearch corp.test\n";
        assert_eq!(
            dns.resolv_conf(host, &by("both")),
            "nameserver 10.2.0.1\nsearch corp.test\n"
        );
        assert_eq!(
            dns.resolv_conf(host, &by("old")),
            "nameserver 10.0.0.53\nsearch corp.test\n"
        );
        let mut web = by("web");
        web.dns = DnsConf {
            servers: vec!["10.9.0.53".into()],
            search: vec!["x.test".into()],
            options: vec!["ndots:1".into()],
        };
        assert_eq!(
            dns.resolv_conf(host, &web),
            "nameserver 10.1.0.1\nsearch x.test\noptions ndots:1\n"
        );
    }

    #[test]
    fn upstreams_parse_with_or_without_a_port() {
        assert_eq!(
            parse_upstream("10.0.0.53"),
            Ok("10.0.0.53:53".parse().unwrap())
        );
        assert_eq!(
            parse_upstream("127.0.0.1:5353"),
            Ok("127.0.0.1:5353".parse().unwrap())
        );
        assert_eq!(
            parse_upstream("[::1]:5353"),
            Ok("[::1]:5353".parse().unwrap())
        );
        assert!(parse_upstream("resolver.test").is_err());
        assert_eq!(
            resolv_upstreams("# x\nnameserver 127.0.0.53\nnameserver fd00::53\nsearch a\n"),
            vec![
                "127.0.0.53:53".parse().unwrap(),
                "[fd00::53]:53".parse().unwrap()
            ]
        );
    }
}
