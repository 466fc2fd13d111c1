//! The overlay's convergence benchmark (bench/overlay/run): a TestCluster of N hosts, then
//! M rounds of "start a server sandbox on host A with `ferry run -d`; from a client on
//! host B, try a TCP handshake until one succeeds", timing each round from the moment
//! `run -d` returned. Prints a Markdown table: p50, p99 and max, and the tunnel's kernel
//! entries host B holds at the end (routes and neighbours: per remote host, not per
//! remote endpoint).
//!
//! Usage: ferry-bench-overlay HOSTS ROUNDS

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ferry_testkit::cluster::{ClusterOpts, TestCluster};
use ferry_testkit::At;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Routes and neighbour entries on host `h`'s VXLAN device of the overlay `bench`.
fn tunnel_entries(h: &ferry_testkit::TestHost) -> Result<String> {
    let seen = ferry_testkit::tunnel::tunnel_seen(h, "bench")?;
    Ok(format!("{} / {}", seen.routes.len(), seen.neighbours.len()))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let hosts: usize = args.get(1).map_or(Ok(3), |s| s.parse()).context("HOSTS")?;
    let rounds: usize = args
        .get(2)
        .map_or(Ok(50), |s| s.parse())
        .context("ROUNDS")?;
    if hosts < 2 {
        bail!("at least 2 hosts");
    }
    let c = TestCluster::start(
        "bench-overlay",
        ClusterOpts {
            hosts,
            ttl_secs: 10,
            ..ClusterOpts::default()
        },
    )?;
    let (a, b) = (&c.hosts[0], &c.hosts[hosts - 1]);
    c.overlay_everywhere("bench", &["--subnet", "10.200.0.0/16"])?;
    b.run_idle("client", &["--network", "bench"])?;
    let probe = b.bins().probe.to_string_lossy().into_owned();
    let mut times = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let name = format!("srv{i}");
        a.run_server(&name, &["--network", "bench"], "tcp", 80)?;
        let t = Instant::now();
        let ip = a.ip_of(&name, "bench")?;
        loop {
            let out = b.exec("client", &[&probe, "tcp", &ip, "80"])?;
            if out.success() {
                break;
            }
            if t.elapsed() > Duration::from_secs(30) {
                bail!("round {i}: {ip} not reached from host {hosts} within 30 s:\n{out}");
            }
        }
        times.push(t.elapsed());
    }
    // Control: the same probe against a sandbox on host B itself (no tunnel, no etcd).
    b.run_server("local", &["--network", "bench"], "tcp", 80)?;
    let local_ip = b.ip_of("local", "bench")?;
    let t = Instant::now();
    b.expect_reach(At::Sandbox("client"), "tcp", &local_ip, 80)?;
    let local = t.elapsed();
    let entries = tunnel_entries(b)?;
    times.sort();
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    println!("| hosts | rounds | p50 | p99 | max | same-host probe | tunnel routes / neighbours on host B |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {hosts} | {rounds} | {} | {} | {} | {} | {entries} |",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99)),
        ms(*times.last().expect("rounds > 0")),
        ms(local),
    );
    c.finish()
}
