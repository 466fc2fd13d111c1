//! The overlay at scale (bench/overlay/run): a TestCluster of HOSTS hosts, one overlay;
//! every host starts PER_HOST sandboxes at once (`ferry run -d`, ten at a time per
//! host). Measured from the start: when every `run -d` returned, and when every host's
//! tunnel routed every sandbox of every other host to that host (the kernel state that
//! makes a remote sandbox reachable). Then traffic: each host in turn pings, from a
//! client sandbox, the last sandbox every other host started and a random sample of
//! the rest, until all answer. Also the tunnel's kernel entries on one host (routes,
//! neighbour and FDB entries of its VXLAN device), and etcd's requests per host over the
//! run (its gRPC counters).
//!
//! Why not every host pinging every sandbox: all the hosts share this machine's kernel,
//! whose ARP table holds at most `gc_thresh3` (1024) learned entries across all
//! namespaces; ten clients each resolving a thousand neighbours overflow it (measured:
//! 28 of 1010 answered), which separate machines would not. The tunnel entries are
//! checked for every sandbox instead, and traffic for a sample.
//!
//! Usage: ferry-bench-overlay-scale HOSTS PER_HOST

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use ferry_testkit::cluster::{ClusterOpts, TestCluster};
use ferry_testkit::tunnel::{tunnel_dev, tunnel_seen};
use ferry_testkit::TestHost;

/// Sandboxes each host starts at the same time.
const PARALLEL: usize = 10;
/// How long the whole run may take before the benchmark gives up.
const LIMIT: Duration = Duration::from_secs(600);

/// etcd's gRPC requests handled so far, by method (from its /metrics).
fn etcd_requests(c: &TestCluster) -> Result<BTreeMap<String, f64>> {
    let url = format!("http://{}/metrics", c.etcd.endpoint);
    let out = c.in_underlay("curl", &["-sf", "--max-time", "5", &url])?;
    ensure!(out.success(), "etcd metrics: {out}");
    let mut by = BTreeMap::new();
    for l in out.out().lines() {
        let Some(rest) = l.strip_prefix("grpc_server_handled_total{") else {
            continue;
        };
        let method = rest
            .split("grpc_method=\"")
            .nth(1)
            .and_then(|m| m.split('"').next())
            .unwrap_or("?");
        let n: f64 = l.rsplit(' ').next().unwrap_or("0").parse().unwrap_or(0.0);
        *by.entry(method.to_string()).or_insert(0.0) += n;
    }
    Ok(by)
}

/// Start `per_host` idle sandboxes on `h`, `PARALLEL` at a time.
fn start_all(h: &TestHost, index: usize, per_host: usize) -> Result<()> {
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..PARALLEL)
            .map(|w| {
                s.spawn(move || -> Result<()> {
                    for j in (w..per_host).step_by(PARALLEL) {
                        h.run_idle(&format!("s{index}-{j}"), &["--network", "scale"])?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("worker thread"))
    })
}

/// The overlay addresses of `h`'s sandboxes.
fn addresses(h: &TestHost) -> Result<Vec<String>> {
    let out = h.ferry_ok(&[
        "network",
        "inspect",
        "scale",
        "--format",
        "{{range .Containers}}{{.IPv4Address}} {{end}}",
    ])?;
    Ok(out
        .split_whitespace()
        .map(|a| a.split('/').next().unwrap_or(a).to_string())
        .collect())
}

/// From `h`'s client, ping `ips` until all answer (a few tries of 15 s).
fn reach(h: &TestHost, ips: &[String]) -> Result<()> {
    let probe = h.bins().probe.to_string_lossy().into_owned();
    let mut cmd = vec![probe.as_str(), "ping-all", "15"];
    cmd.extend(ips.iter().map(String::as_str));
    for _ in 0..4 {
        if h.exec("client", &cmd)?.success() {
            return Ok(());
        }
    }
    let out = h.exec("client", &cmd)?;
    ensure!(out.success(), "not every sampled sandbox answered: {out}");
    Ok(())
}

/// Routes, neighbour and FDB entries on `h`'s VXLAN device of the overlay.
fn tunnel_entries(h: &TestHost) -> Result<(usize, usize, usize)> {
    let seen = tunnel_seen(h, "scale")?;
    let dev = tunnel_dev(h, "scale")?;
    let fdb = h.in_host("bridge", &["fdb", "show", "dev", &dev])?;
    let remote = fdb.out().lines().filter(|l| l.contains(" dst ")).count();
    Ok((seen.routes.len(), seen.neighbours.len(), remote))
}

/// Every host starts its sandboxes, all hosts at once.
fn start_everywhere(c: &TestCluster, per_host: usize) -> Result<()> {
    std::thread::scope(|s| {
        let started: Vec<_> = c
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| s.spawn(move || start_all(h, i, per_host)))
            .collect();
        started
            .into_iter()
            .try_for_each(|t| t.join().expect("host thread"))
    })
}

/// Until every host's tunnel routes each other host's sandboxes to that host; the time
/// from `t0` when the last one did.
fn entries_everywhere(c: &TestCluster, by_host: &[Vec<String>], t0: Instant) -> Result<Duration> {
    let vtep = |j: usize| format!("172.30.0.{}", 11 + j);
    loop {
        let mut done = true;
        for (i, h) in c.hosts.iter().enumerate() {
            let seen = tunnel_seen(h, "scale")?;
            done &= by_host
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .all(|(j, ips)| ips.iter().all(|ip| seen.via(ip) == Some(vtep(j).as_str())));
        }
        if done {
            return Ok(t0.elapsed());
        }
        ensure!(
            t0.elapsed() < LIMIT,
            "tunnel routes incomplete after {LIMIT:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Each host in turn reaches the last sandbox of every other host and `extra` random
/// others; the number of addresses tried.
fn sample_traffic(c: &TestCluster, by_host: &[Vec<String>], extra: usize) -> Result<usize> {
    let mut tried = 0;
    let mut pick = std::collections::hash_map::RandomState::new().build_hasher();
    for (i, h) in c.hosts.iter().enumerate() {
        let others: Vec<&String> = by_host
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .flat_map(|(_, v)| v)
            .collect();
        let mut sample: Vec<String> = by_host
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .filter_map(|(_, v)| v.last().cloned())
            .collect();
        for k in 0..extra {
            k.hash(&mut pick);
            let n = usize::try_from(pick.finish()).unwrap_or(0) % others.len().max(1);
            sample.extend(others.get(n).map(|s| (*s).clone()));
        }
        reach(h, &sample)?;
        tried += sample.len();
    }
    Ok(tried)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let hosts: usize = args.get(1).map_or(Ok(10), |s| s.parse()).context("HOSTS")?;
    let per_host: usize = args
        .get(2)
        .map_or(Ok(100), |s| s.parse())
        .context("PER_HOST")?;
    ensure!(
        hosts >= 2 && per_host >= 1,
        "at least 2 hosts and 1 sandbox"
    );
    let c = TestCluster::start(
        "bench-scale",
        ClusterOpts {
            hosts,
            ttl_secs: 10,
            ..ClusterOpts::default()
        },
    )?;
    c.overlay_everywhere("scale", &["--subnet", "10.201.0.0/16"])?;
    for h in &c.hosts {
        h.run_idle("client", &["--network", "scale"])?;
    }
    let before = etcd_requests(&c)?;
    let t0 = Instant::now();
    start_everywhere(&c, per_host)?;
    let runs = t0.elapsed();
    let by_host = c.hosts.iter().map(addresses).collect::<Result<Vec<_>>>()?;
    let total: usize = by_host.iter().map(Vec::len).sum();
    ensure!(
        total == hosts * (per_host + 1),
        "{total} addresses, not {}",
        hosts * (per_host + 1)
    );
    let all = entries_everywhere(&c, &by_host, t0)?;
    let sampled = sample_traffic(&c, &by_host, 10)?;
    let after = etcd_requests(&c)?;
    let (routes, neigh, fdb) = tunnel_entries(&c.hosts[hosts - 1])?;
    let per_host_requests: Vec<String> = after
        .iter()
        .map(|(m, n)| (m, n - before.get(m).copied().unwrap_or(0.0)))
        .filter(|(_, n)| *n > 0.0)
        .map(|(m, n)| format!("{m} {:.0}", n / hosts as f64))
        .collect();
    let s = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    println!("| hosts | sandboxes | every `run -d` returned | every host's tunnel routes every remote sandbox | traffic sample answered | tunnel routes / neighbours / FDB entries on one host | etcd requests per host (by method) |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {hosts} | {total} | {} | {} | {sampled} of {sampled} | {routes} / {neigh} / {fdb} | {} |",
        s(runs),
        s(all),
        per_host_requests.join(", ")
    );
    c.finish()
}
