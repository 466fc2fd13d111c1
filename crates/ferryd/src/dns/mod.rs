//! ferryd's side of the embedded DNS: the table derived from the desired state, the
//! listen addresses, and each sandbox's resolv.conf.
//!
//! * `records` — the state → one record per sandbox with names (pure).
//! * `names` — the table in service and the records it holds, following commits.
//!
//! Design note. The responder listens on the gateway address of every user-defined
//! bridge network, and of every plugin's network whose gateway this namespace holds (the
//! plugin's bridge, say), port 53, in ferryd's own network namespace (as aardvark-dns does),
//! one UDP socket and one TCP listener per network. A sandbox on such a network gets
//! `nameserver <gateway of its first user-defined network>`; the query's source
//! address tells the responder which sandbox asks, so one table answers every
//! socket, and a sandbox on two networks sees the names of both. The alternative,
//! Docker's 127.0.0.11 inside each sandbox, needs a socket (or a NAT rule) in every
//! sandbox namespace: per-sandbox cost, and a firewall dependency this avoids.
//! Forwarding runs in ferryd's namespace too, so a host resolver on loopback
//! (systemd-resolved's 127.0.0.53) works as an upstream.
//!
//! On every committed change of the state, `Dns::update` makes the records (a pure
//! function of the state: `records::record_of`) of just the sandboxes the commit's
//! keys name, applies their difference to the table in service (`Table::apply`:
//! O(changed · log n), the old table untouched) and swaps the new one in, then
//! reconciles the sockets with the networks. It used to rebuild the whole table from
//! the whole state: a sixth of ferryd's CPU per attach at 900 sandboxes, and growing.
//! A network key changes records only if the network came, went, or changed kind
//! (names, internal); then the sandboxes on it are remade. `Names::of` builds
//! everything from the state at start. Neither path drops a query.
//!
//! The default `bridge` network has no names, as in Docker: its sandboxes keep the
//! host's resolvers (or `--dns`) in their resolv.conf.

mod names;
mod records;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use ferry_core::family::v4;
use ferry_core::files::resolv_conf;
use ferry_core::model::{DnsConf, Sandbox};
use ferry_dns::{Forwarder, Server};

use crate::state::{Key, State};
use names::Names;
use records::has_names;
pub use records::{record_of, records};

/// The port the responder serves on every gateway.
pub const DNS_PORT: u16 = 53;
/// How often sockets that failed to open are tried again.
const RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// The addresses the responder listens on: the gateway of every network with names,
/// except those Docker's API made through ferry's plugin: dockerd answers its
/// containers' names itself, and the gateway's port 53 is the plugin's client's (a ferryd
/// hosting ferry as its plugin serves its own sandboxes' names there).
pub fn listen_addrs(st: &State) -> BTreeSet<Ipv4Addr> {
    st.networks
        .values()
        .filter(|n| has_names(n) && !st.docker_managed(&n.id))
        .filter_map(|n| n.pool.as_ref().and_then(|p| v4(p.gateway)))
        .collect()
}

/// Whether ferryd's namespace holds `ip` (the responder binds with IP_FREEBIND, so its
/// listening says nothing): an ordinary bind to it succeeds only then.
fn held_here(ip: Ipv4Addr) -> bool {
    std::net::UdpSocket::bind((ip, 0)).is_ok()
}

/// The gateways of plugins' networks with names (see [`Inner::plugin_gateways`]).
fn plugin_gateways(st: &State) -> BTreeSet<Ipv4Addr> {
    st.networks
        .values()
        .filter(|n| n.remote().is_some() && has_names(n))
        .filter_map(|n| n.pool.as_ref().and_then(|p| v4(p.gateway)))
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

/// The name server of a sandbox: the gateway of its first endpoint on a network with
/// names, if it has one.
fn nameserver_of(sb: &Sandbox, serves: impl Fn(Ipv4Addr) -> bool) -> Option<Ipv4Addr> {
    sb.endpoints
        .iter()
        .filter_map(|e| e.live.as_ref()?.gateway.and_then(v4))
        .find(|g| serves(*g))
}

/// Open and close sockets to match `gateways`. A port someone else holds is said once
/// (every commit tries it again, and so does the retry every 5 s), and so is its end.
fn listen(s: &mut Serving, gateways: &BTreeSet<Ipv4Addr>) {
    let mut unbound = BTreeSet::new();
    for e in s.server.listen_on(gateways) {
        let ferry_dns::DnsError::Bind { addr, .. } = &e;
        if !s.unbound.contains(addr) {
            tracing::warn!("{e}; trying again every {RETRY:?}");
        }
        unbound.insert(*addr);
    }
    for addr in s.unbound.difference(&unbound) {
        if matches!(addr.ip(), IpAddr::V4(ip) if gateways.contains(&ip)) {
            tracing::info!("dns: listening on {addr} now");
        }
    }
    s.unbound = unbound;
}

/// A responder in service and the table it answers from.
struct Serving {
    server: Server,
    names: Names,
    /// The upstreams of sandboxes without `--dns`.
    default_upstreams: Vec<SocketAddr>,
    /// Gateway sockets that could not be opened at the last try.
    unbound: BTreeSet<SocketAddr>,
}

#[derive(Default)]
struct Inner {
    /// The listen addresses of the last update (also before serving starts: they
    /// decide what sandboxes' resolv.conf says).
    gateways: BTreeSet<Ipv4Addr>,
    /// Of those, the gateways of plugins' networks: the plugin decides whether this
    /// namespace holds the address, so a sandbox is pointed at one only while it does.
    plugin_gateways: BTreeSet<Ipv4Addr>,
    /// Other hosts' sandboxes on overlays (see crate::overlay).
    remote: std::collections::BTreeMap<String, ferry_dns::SandboxRecord>,
    serving: Option<Serving>,
}

impl Inner {
    /// The responder in service, if any, with the addresses it should listen on.
    fn serving(&mut self) -> Option<(&mut Serving, &BTreeSet<Ipv4Addr>)> {
        Some((self.serving.as_mut()?, &self.gateways))
    }
}

/// The daemon's responder. Until `start` it only tracks the listen addresses (the
/// unit tests never open a socket).
#[derive(Default)]
pub struct Dns {
    inner: Mutex<Inner>,
}

impl Dns {
    /// Follow a commit of `keys`: the table changed by the records of the sandboxes
    /// they touch (kept if none changed), sockets matching the networks.
    pub fn update(&self, st: &State, keys: &[Key]) {
        self.follow(st, |s| s.names.follow(st, keys));
    }

    /// Make the table again from the whole state, and follow it from there.
    pub fn rebuild(&self, st: &State) {
        let remote = self.inner.lock().expect("dns lock").remote.clone();
        self.follow(st, |s| {
            s.names = Names::of(st, &s.default_upstreams, &remote);
            true
        });
    }

    /// Other hosts' sandboxes on overlays: their names answer here too.
    pub fn set_remote(
        &self,
        records: std::collections::BTreeMap<String, ferry_dns::SandboxRecord>,
    ) {
        let mut inner = self.inner.lock().expect("dns lock");
        if let Some(s) = inner.serving.as_mut() {
            if s.names.set_remote(&records) {
                s.server.set_table(s.names.table().clone());
            }
        }
        inner.remote = records;
    }

    /// Track `st`'s listen addresses; if serving, let `change` bring the names up to
    /// date (true: the table changed and goes into service), then match the sockets.
    fn follow(&self, st: &State, change: impl FnOnce(&mut Serving) -> bool) {
        let mut inner = self.inner.lock().expect("dns lock");
        inner.gateways = listen_addrs(st);
        inner.plugin_gateways = plugin_gateways(st);
        let Some((s, gateways)) = inner.serving() else {
            return;
        };
        if change(s) {
            s.server.set_table(s.names.table().clone());
        }
        listen(s, gateways);
    }

    /// Open the sockets that could not be opened before (a port held by someone else).
    fn retry(&self) {
        let mut inner = self.inner.lock().expect("dns lock");
        let Some((s, gateways)) = inner.serving() else {
            return;
        };
        if s.server.listening() != *gateways {
            listen(s, gateways);
        }
    }

    /// Start answering: `upstreams` (the `--dns-upstream` flags), else `host_resolv`'s
    /// nameservers, serve sandboxes without `--dns`; sockets that could not open are
    /// tried again every few seconds while the responder lives.
    pub fn serve(self: &Arc<Self>, st: &State, host_resolv: &str, upstreams: Vec<SocketAddr>) {
        let upstreams = if upstreams.is_empty() {
            resolv_upstreams(host_resolv)
        } else {
            upstreams
        };
        tracing::info!("dns: forwarding to {upstreams:?} unless a sandbox has --dns");
        self.start(st, upstreams);
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RETRY).await;
                match weak.upgrade() {
                    Some(dns) => dns.retry(),
                    None => return,
                }
            }
        });
    }

    fn start(&self, st: &State, upstreams: Vec<SocketAddr>) {
        {
            let mut inner = self.inner.lock().expect("dns lock");
            inner.serving = Some(Serving {
                server: Server::new(
                    DNS_PORT,
                    Forwarder::default(),
                    tokio::runtime::Handle::current(),
                ),
                names: Names::empty(&upstreams),
                default_upstreams: upstreams,
                unbound: BTreeSet::new(),
            });
        }
        self.rebuild(st);
    }

    /// The sandbox's resolv.conf: the responder if one of its networks has names,
    /// with its `--dns-search`/`--dns-option` (its `--dns` servers become the
    /// responder's upstreams); otherwise the host's servers or `--dns`.
    pub fn resolv_conf(&self, host_resolv: &str, sb: &Sandbox) -> String {
        let inner = self.inner.lock().expect("dns lock");
        // A plugin's gateway is asked about only for this sandbox's own endpoints.
        let serves = |g: Ipv4Addr| {
            inner.gateways.contains(&g) && (!inner.plugin_gateways.contains(&g) || held_here(g))
        };
        match nameserver_of(sb, serves) {
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
