//! `ferryd`: the ferry daemon. Flags are named as dockerd's.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use ferry_store::RedbStore;
use ferryd::ops::supervise;
use ferryd::{api, reconcile, Config, Daemon};
use tower::Layer;

#[derive(Parser, Debug)]
#[command(
    name = "ferryd",
    version,
    about = "ferry's daemon: container networks behind a Docker-shaped API"
)]
struct Args {
    /// Persistent state directory (the embedded store lives here).
    #[arg(long, default_value = "/var/lib/ferry")]
    data_root: PathBuf,
    /// Runtime directory: pinned namespaces, sandbox files.
    #[arg(long, default_value = "/run/ferry")]
    exec_root: PathBuf,
    /// The API socket, as unix:///PATH.
    #[arg(
        short = 'H',
        long = "host",
        default_value = "unix:///run/ferry/ferry.sock"
    )]
    host: String,
    /// The group that owns the API socket (mode 0660): its members may drive ferryd, as
    /// the `docker` group's may drive dockerd. A group that does not exist leaves the
    /// socket root's only.
    #[arg(short = 'G', long, default_value = "ferry")]
    group: String,
    /// Where sandboxes are linked as `ferry-<name>` so `ip netns` sees them.
    #[arg(long, default_value = "/run/netns")]
    netns_dir: PathBuf,
    /// The default bridge's address and prefix.
    #[arg(long, default_value = "172.17.0.1/16")]
    bip: ipnet::Ipv4Net,
    /// Where the Docker plugin socket `ferry.sock` goes (dockerd looks in
    /// /run/docker/plugins); an empty value turns the plugin off.
    #[arg(long, default_value = "/run/docker/plugins", value_parser = path_or_empty)]
    plugin_dir: PathBuf,
    /// Where the embedded DNS forwards names it does not own, for sandboxes without
    /// --dns (repeatable). Default: the host's resolv.conf nameservers.
    #[arg(long = "dns-upstream", value_name = "IP[:PORT]", value_parser = ferryd::dns::parse_upstream)]
    dns_upstream: Vec<std::net::SocketAddr>,
    /// `off`: turn br_netfilter's calls into the IP hooks off in ferryd's namespace, so
    /// bridged traffic between sandboxes skips conntrack and the IP chains (ferry's
    /// firewall does not need them; other bridges on the host lose bridged filtering).
    #[arg(long, value_enum, default_value = "keep")]
    br_netfilter: ferryd::br_netfilter::BrNetfilter,
    /// `off`: leave frames between two sandboxes on one network to the bridge. `on`
    /// (default): a tc/BPF program on each sandbox's veth hands them straight to the
    /// other sandbox, past the bridge and the IP hooks, whenever the bridge would deliver
    /// them and ferry's `user` chain holds no rule (docs/design.md, "The shortcut"), and
    /// carries established routed flows (published ports, masquerade) past the host's
    /// stack where the kernel allows ("The routed fast path"). `same-network`: the first
    /// only, so that rules of other tables see every packet of a routed flow.
    #[arg(long, value_enum, default_value = "on")]
    shortcut: ferryd::shortcut::Mode,
    /// The cluster store of overlay networks: etcd://HOST:PORT[,HOST:PORT...]. Without
    /// it ferryd is a single host.
    #[arg(long, value_name = "etcd://HOST:PORT[,...]")]
    cluster_store: Option<String>,
    /// This host's tunnel address: an interface or an IPv4 address.
    #[arg(long, value_name = "IFACE|IP")]
    cluster_advertise: Option<String>,
    /// kv.cacertfile=PATH, kv.certfile=PATH, kv.keyfile=PATH (repeatable, or comma-separated).
    #[arg(long, value_name = "KEY=VALUE")]
    cluster_store_opt: Vec<String>,
    /// This host's name in the cluster (default: the hostname).
    #[arg(long)]
    node_name: Option<String>,
    /// Seconds a dead host's endpoints stay in the cluster before its lease expires.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..=60))]
    cluster_ttl: u64,
    /// Seconds a dead host's address blocks stay its own after its lease expired; then a
    /// host with no free block left may take them.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    cluster_block_grace: u64,
    /// Where third-party plugins' sockets are found (NAME.sock, NAME/NAME.sock); an
    /// empty value: none. ferryd's own plugin socket there is never used.
    #[arg(long, default_value = "/run/docker/plugins", value_parser = path_or_empty)]
    plugin_sockets: PathBuf,
    /// Where plugins' .spec and .json files are found (repeatable, in order).
    #[arg(long, default_values = ["/etc/docker/plugins", "/usr/lib/docker/plugins"])]
    plugin_specs: Vec<PathBuf>,
    /// Seconds one call to a third-party plugin may take.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
    plugin_timeout: u64,
    /// Seconds a plugin not found, or refusing connections, is retried (dockerd: 30,
    /// waiting 1, 2, 4, 8 s between tries); 0: no retry.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=600))]
    plugin_retry: u64,
    /// The UDP port of overlay tunnels.
    #[arg(long, default_value_t = ferryd::overlay::VXLAN_PORT)]
    vxlan_port: u16,
    /// A second ferryd in the same network namespace (two characters, as `fz`): its
    /// links are named `fz…`, its nftables tables `ferry_fz`, its default bridge
    /// `ferry_fz0`, so that neither takes the other's for its own. Give it its own
    /// --data-root, --exec-root, -H, --netns-dir, --bip and --plugin-dir too.
    #[arg(long, value_name = "ID", value_parser = parse_instance)]
    instance: Option<ferry_core::instance::InstanceId>,
}

fn parse_instance(s: &str) -> Result<ferry_core::instance::InstanceId, String> {
    ferry_core::instance::InstanceId::new(s).map_err(|e| e.to_string())
}

/// The cluster flags, checked: none of them, or a store and an address to advertise.
fn cluster_conf(a: &Args) -> anyhow::Result<Option<ferryd::overlay::ClusterConf>> {
    let Some(url) = &a.cluster_store else {
        anyhow::ensure!(
            a.cluster_advertise.is_none() && a.cluster_store_opt.is_empty(),
            "--cluster-advertise and --cluster-store-opt need --cluster-store"
        );
        return Ok(None);
    };
    let hosts = url.strip_prefix("etcd://").with_context(|| {
        format!("--cluster-store {url}: only etcd://HOST:PORT[,HOST:PORT...] is supported")
    })?;
    let endpoints: Vec<String> = hosts.split(',').map(str::to_string).collect();
    anyhow::ensure!(
        endpoints.iter().all(|e| e.contains(':')),
        "--cluster-store {url}: each member is HOST:PORT"
    );
    let advertise = a
        .cluster_advertise
        .clone()
        .context("--cluster-store needs --cluster-advertise IFACE|IP")?;
    let mut store = ferry_store::EtcdConfig::new(endpoints);
    let mut files: std::collections::BTreeMap<String, PathBuf> = Default::default();
    for kv in a.cluster_store_opt.iter().flat_map(|o| o.split(',')) {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--cluster-store-opt {kv}: expected KEY=VALUE"))?;
        anyhow::ensure!(
            ["kv.cacertfile", "kv.certfile", "kv.keyfile"].contains(&k),
            "--cluster-store-opt {k}: unknown option (kv.cacertfile, kv.certfile, kv.keyfile)"
        );
        files.insert(k.to_string(), PathBuf::from(v));
    }
    if !files.is_empty() {
        store.tls = Some(ferry_store::TlsFiles {
            ca: files
                .remove("kv.cacertfile")
                .context("--cluster-store-opt: TLS needs kv.cacertfile")?,
            cert: files.remove("kv.certfile"),
            key: files.remove("kv.keyfile"),
        });
    }
    let node = match &a.node_name {
        Some(n) => n.clone(),
        None => nix::unistd::gethostname()?.to_string_lossy().into_owned(),
    };
    anyhow::ensure!(
        !node.is_empty() && !node.contains('/'),
        "--node-name {node:?}: a host name without '/'"
    );
    Ok(Some(ferryd::overlay::ClusterConf {
        store,
        advertise,
        node,
        ttl: std::time::Duration::from_secs(a.cluster_ttl),
        grace: std::time::Duration::from_secs(a.cluster_block_grace),
        vxlan_port: a.vxlan_port,
    }))
}

/// A path, or nothing (`--plugin-dir=`): clap's own PathBuf parser refuses empty values.
fn path_or_empty(s: &str) -> Result<PathBuf, std::convert::Infallible> {
    Ok(PathBuf::from(s))
}

fn socket_path(host: &str) -> anyhow::Result<PathBuf> {
    host.strip_prefix("unix://")
        .map(PathBuf::from)
        .with_context(|| format!("-H {host}: only unix:///PATH sockets are supported"))
}

/// How long a stopping ferryd lets the requests it took finish.
const DRAIN_WITHIN: std::time::Duration = std::time::Duration::from_secs(3);

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(id) = &args.instance {
        // Before anything is named.
        ferry_core::instance::set(id)?;
    }
    let cluster = cluster_conf(&args)?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
                .unwrap_or_else(|_| "info,netlink_packet_route=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // Tests only: one step of every attach made to fail, read once, here.
    let fault = ferry_kernel::fault::from_env().map_err(anyhow::Error::msg)?;
    let plughost_records = args.exec_root.join("plughost");
    let cfg = Config {
        data_root: args.data_root,
        exec_root: args.exec_root,
        socket: socket_path(&args.host)?,
        netns_dir: args.netns_dir,
        bip: args.bip,
        br_netfilter: args.br_netfilter,
        shortcut: args.shortcut,
        plughost: ferryd::plughost::Conf {
            dirs: ferryd::plughost::Dirs {
                sockets: (!args.plugin_sockets.as_os_str().is_empty())
                    .then_some(args.plugin_sockets),
                specs: args.plugin_specs,
                own_socket: (!args.plugin_dir.as_os_str().is_empty())
                    .then(|| ferryd::plugin::socket_in(&args.plugin_dir)),
            },
            call_timeout: std::time::Duration::from_secs(args.plugin_timeout),
            retry_budget: std::time::Duration::from_secs(args.plugin_retry),
            records: plughost_records,
        },
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(
            cfg,
            args.dns_upstream,
            args.plugin_dir,
            cluster,
            args.group,
            fault,
        ))
}

async fn run(
    cfg: Config,
    dns_upstream: Vec<std::net::SocketAddr>,
    plugin_dir: PathBuf,
    cluster: Option<ferryd::overlay::ClusterConf>,
    group: String,
    fault: Option<ferry_kernel::AttachStep>,
) -> anyhow::Result<()> {
    for dir in [&cfg.data_root, &cfg.exec_root] {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let store = RedbStore::open(&cfg.store_path())?;
    let mut kernel = ferry_kernel::Netlink::new()?;
    if let Some(step) = fault {
        tracing::warn!(
            "{}=attach:{step}: the {step} step of every attach will fail (fault injection, for tests)",
            ferry_kernel::fault::ENV
        );
    }
    kernel.arm_fault(fault);
    kernel.carry_routed(cfg.shortcut == ferryd::shortcut::Mode::On);
    let socket = cfg.socket.clone();
    let d = Daemon::new(cfg, kernel, Box::new(store))?;
    reconcile::reconcile(&d).await.context("reconcile")?;
    supervise::monitor(d.clone());
    ferryd::ops::firewalling::watch(d.clone());
    ferryd::ops::firewalling::watch_user_chain(d.clone());
    ferryd::ops::plughost::release_leases(d.clone());
    reconcile::watch(d.clone());
    d.serve_dns(dns_upstream).await;
    if let Some(conf) = cluster {
        ferryd::ops::join_cluster(&d, conf)
            .await
            .context("cluster")?;
    }

    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let listener = ferryd::serve::bind_private(&socket)
        .with_context(|| format!("listen on {}", socket.display()))?;
    ferryd::serve::give_to_group(&socket, &group)
        .with_context(|| format!("give {} to group {group}", socket.display()))?;
    tracing::info!("ferryd listening on unix://{}", socket.display());

    let stop = d.clone();
    let plugin = if plugin_dir.as_os_str().is_empty() {
        None
    } else {
        let listener = ferryd::plugin::bind(&plugin_dir)?;
        Some(tokio::spawn(ferryd::plugin::serve(d.clone(), listener)))
    };
    let inflight = std::sync::Arc::new(ferryd::serve::InFlight::default());
    let app = axum::middleware::from_fn_with_state(inflight.clone(), ferryd::serve::track)
        .layer(axum::middleware::from_fn(api::strip_version).layer(api::router(d.clone())));
    let gate = ferryd::serve::Gate::new(d.cfg.netns_root());
    let serve = ferryd::serve::serve_unix(listener, gate, app);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = stop.stopped() => tracing::info!("system cleanup done: stopping"),
        _ = serve => {}
        _ = term.recv() => tracing::info!("SIGTERM: stopping; sandboxes keep running"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: stopping; sandboxes keep running"),
    }
    let _ = std::fs::remove_file(&socket);
    // No new connection is taken now; what was asked before the signal is answered.
    if !inflight.drain(DRAIN_WITHIN).await {
        tracing::warn!("stopping with requests still in flight after {DRAIN_WITHIN:?}");
    }
    // No more periodic checks; the shortcut's programs outlive this process, so its gate
    // closes: the bridge carries everything now.
    d.leave();
    if let Some(task) = plugin {
        task.abort();
        let _ = std::fs::remove_file(ferryd::plugin::socket_in(&plugin_dir));
    }
    // Finish deleting the veth pairs detached last; reconcile removes any left.
    if !d.kernel.settle(std::time::Duration::from_secs(5)).await {
        tracing::warn!("stopping with veth deletions pending; the next start removes them");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_plugin_dir_turns_the_plugin_off_and_br_netfilter_defaults_to_keep() {
        let a = Args::try_parse_from(["ferryd", "--plugin-dir="]).unwrap();
        assert!(a.plugin_dir.as_os_str().is_empty());
        assert_eq!(a.br_netfilter, ferryd::br_netfilter::BrNetfilter::Keep);
        let a = Args::try_parse_from(["ferryd", "--br-netfilter", "off"]).unwrap();
        assert_eq!(a.br_netfilter, ferryd::br_netfilter::BrNetfilter::Off);
        assert_eq!(a.plugin_dir, PathBuf::from("/run/docker/plugins"));
        let e = Args::try_parse_from(["ferryd", "--br-netfilter", "maybe"]).unwrap_err();
        assert!(e.to_string().contains("maybe"), "{e}");
    }
}
