//! Throughput across the overlay (bench/overlay/run): iperf3, one TCP stream for SECONDS,
//! in the same rounds over three paths between host B and host A of a two-host
//! TestCluster:
//!
//! - `ferry`: sandbox on B → sandbox on A across ferry's overlay as shipped (the
//!   shortcut: veth, VXLAN, the underlay, and back up, past bridges and forwards);
//! - `ferry, no shortcut`: the same with a rule in each host's `user` chain, which closes
//!   the shortcut's gate (veth, bridge, routed into VXLAN, and back up the same way);
//! - `vxlan`: B's namespace → A's over a VXLAN pair made by hand with iproute2 (the
//!   floor the issue names: the same encapsulation, no bridge, no veth, no firewall);
//! - `underlay`: B's namespace → A's over the bare underlay link.
//!
//! Prints a Markdown table, a row per round, then the medians and the median of the
//! per-round ratios to the hand-made pair and the underlay.
//!
//! Usage: ferry-bench-overlay-tput [ROUNDS] [SECONDS]; with FERRY_BENCH_HOLD=FILE the setup
//! stays up until FILE is removed (see `hold`).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use ferry_testkit::cluster::{ClusterOpts, TestCluster};
use ferry_testkit::{Output, TestHost};

const IPERF3: &str = "/usr/bin/iperf3";
/// The hand-made pair: its own VNI and UDP port, away from ferry's (4789).
const HAND_VNI: &str = "4242";
const HAND_PORT: &str = "4790";
const HAND_NET: &str = "10.250.0";

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Gbit/s the receiver counted, from `iperf3 -J`.
fn gbits(out: &Output) -> Result<f64> {
    if !out.success() {
        bail!("iperf3 failed:\n{out}");
    }
    let v: serde_json::Value = serde_json::from_str(&out.stdout).context("iperf3 -J")?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .context("no end.sum_received.bits_per_second")
}

/// The VXLAN device `hv0` in a host's namespace, to `remote` over `ul0`, addressed.
fn hand_vxlan(h: &TestHost, local: &str, remote: &str, addr: &str) -> Result<()> {
    let ip = |args: &[&str]| -> Result<()> {
        h.in_host("ip", args)?.expect_success()?;
        Ok(())
    };
    ip(&[
        "link", "add", "hv0", "type", "vxlan", "id", HAND_VNI, "local", local, "remote", remote,
        "dstport", HAND_PORT, "dev", "ul0",
    ])?;
    ip(&["addr", "add", addr, "dev", "hv0"])?;
    ip(&["link", "set", "hv0", "up"])
}

/// With `FERRY_BENCH_HOLD=FILE`, write the hosts' ferryd pids and the server's address
/// to FILE and wait until FILE is removed: the setup stays up for experiments by hand
/// (`nsenter -t PID -n …`, `ferry exec`), then the rounds run and everything goes. The
/// client sandbox sleeps for an hour: hold for less, or the rounds find it gone.
fn hold(hosts: &[&TestHost], srv: &str) -> Result<()> {
    let Some(file) = std::env::var_os("FERRY_BENCH_HOLD") else {
        return Ok(());
    };
    let mut text = format!("server {srv}\n");
    for (i, h) in hosts.iter().enumerate() {
        let pid = h.ferryd_pid().context("ferryd is not running")?;
        text.push_str(&format!(
            "host{i} ferryd {pid} root {}\n",
            h.root().display()
        ));
    }
    std::fs::write(&file, text).context("FERRY_BENCH_HOLD")?;
    eprintln!("holding while {} exists", file.to_string_lossy());
    while std::path::Path::new(&file).exists() {
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}

/// ferry with its shortcut's gate closed for `f`: a rule in each host's `user` chain.
fn without_shortcut<T>(hosts: &[&TestHost], f: impl FnOnce() -> Result<T>) -> Result<T> {
    for h in hosts {
        h.nft(&[
            "add", "rule", "inet", "ferry", "user", "meta", "mark", "0x7e57", "counter",
        ])?;
    }
    std::thread::sleep(Duration::from_millis(300)); // each ferryd hears it and closes the gate
    let out = f();
    for h in hosts {
        h.nft(&["flush", "chain", "inet", "ferry", "user"])?;
    }
    std::thread::sleep(Duration::from_millis(300));
    out
}

/// The rounds: each path once per round, one after another, then the medians.
fn rounds_of(hosts: &[&TestHost; 2], srv: &str, rounds: usize, t: &str, a_ul: &str) -> Result<()> {
    let b = hosts[1];
    println!("| round | ferry Gbit/s | ferry, no shortcut | hand VXLAN | underlay | ferry/vxlan | no shortcut/vxlan | ferry/underlay |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut cols: [Vec<f64>; 7] = Default::default();
    for r in 1..=rounds {
        let ferry = gbits(&b.exec("cli", &[IPERF3, "-c", srv, "-t", t, "-J"])?)?;
        let slow = without_shortcut(hosts, || {
            gbits(&b.exec("cli", &[IPERF3, "-c", srv, "-t", t, "-J"])?)
        })?;
        let hand = gbits(&b.in_host(IPERF3, &["-c", &format!("{HAND_NET}.1"), "-t", t, "-J"])?)?;
        let under = gbits(&b.in_host(IPERF3, &["-c", a_ul, "-t", t, "-J"])?)?;
        let row = [
            ferry,
            slow,
            hand,
            under,
            ferry / hand,
            slow / hand,
            ferry / under,
        ];
        println!(
            "| {r} | {ferry:.2} | {slow:.2} | {hand:.2} | {under:.2} | {:.3} | {:.3} | {:.3} |",
            row[4], row[5], row[6]
        );
        for (c, v) in cols.iter_mut().zip(row) {
            c.push(v);
        }
    }
    let m: Vec<f64> = cols.iter_mut().map(|c| median(c)).collect();
    println!(
        "| median | {:.2} | {:.2} | {:.2} | {:.2} | {:.3} | {:.3} | {:.3} |",
        m[0], m[1], m[2], m[3], m[4], m[5], m[6]
    );
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args.get(1).map_or(Ok(5), |s| s.parse()).context("ROUNDS")?;
    let secs: u64 = args
        .get(2)
        .map_or(Ok(5), |s| s.parse())
        .context("SECONDS")?;
    if !(1..=10).contains(&secs) {
        bail!("SECONDS must be 1..10 (each run is bounded at 15 s)");
    }
    let c = TestCluster::start("bench-overlay-tput", ClusterOpts::default())?;
    let (a, b) = (&c.hosts[0], &c.hosts[1]);
    let (a_ul, b_ul) = ("172.30.0.11", "172.30.0.12");
    a.ferry_ok(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.201.0.0/24",
        "tput",
    ])?;
    c.wait_for(Duration::from_secs(10), "host B to see the overlay", |c| {
        Ok(c.hosts[1].ferry(&["network", "inspect", "tput"])?.success())
    })?;
    a.run_detached("srv", &["--network", "tput"], &[IPERF3, "-s"])?;
    b.run_idle("cli", &["--network", "tput"])?;
    let srv = a.ip_of("srv", "tput")?;
    hand_vxlan(a, a_ul, b_ul, &format!("{HAND_NET}.1/24"))?;
    hand_vxlan(b, b_ul, a_ul, &format!("{HAND_NET}.2/24"))?;
    // One iperf3 server in A's namespace serves both namespace paths, one at a time.
    let pidfile = a.root().join("iperf3.pid");
    let pidfile = pidfile.to_string_lossy().into_owned();
    a.in_host(IPERF3, &["-s", "-D", "-I", &pidfile])?
        .expect_success()?;
    std::thread::sleep(Duration::from_millis(300));
    hold(&[a, b], &srv)?;
    let result = rounds_of(&[a, b], &srv, rounds, &secs.to_string(), a_ul);
    if let Ok(pid) = std::fs::read_to_string(&pidfile) {
        if let Ok(pid) = pid.trim().parse::<i32>() {
            // The daemon this run started, by its pid.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    for h in [a, b] {
        let _ = h.in_host("ip", &["link", "del", "hv0"]);
    }
    result?;
    c.finish()
}
