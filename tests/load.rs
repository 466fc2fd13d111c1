//! Load (issue 17): many attaches at once on one subnet, subnets filled exactly and
//! released in parallel, a 10,000-port published range. Each ends with the live leak check
//! ([`TestHost::accounted`]: no address twice, the store's addresses are the kernel's) and
//! a removal that leaves nothing.
//!
//! Sizes are bounded for CI; `FERRY_LOAD_FULL=1` runs the full sizes (200 dynamic +
//! 50 static attaches, and the /24 filled too).

#![allow(clippy::unwrap_used, clippy::too_many_lines)] // test code: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::time::Instant;

use anyhow::{ensure, Result};
use ferry_testkit::{host_or_skip, At, NoReach, Output, TestHost, BUSYBOX};

fn full() -> bool {
    std::env::var_os("FERRY_LOAD_FULL").is_some()
}

/// Run every argument list through the CLI at once; the outputs in the same order.
fn all_at_once(host: &TestHost, calls: &[Vec<String>]) -> Result<Vec<Output>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = calls
            .iter()
            .map(|args| {
                s.spawn(move || {
                    let a: Vec<&str> = args.iter().map(String::as_str).collect();
                    host.ferry(&a)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a CLI thread panicked"))
            .collect()
    })
}

fn idle_run(name: &str, net: &str, ip: Option<&str>) -> Vec<String> {
    let mut a: Vec<String> = ["run", "-d", "--name", name, "--network", net]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if let Some(ip) = ip {
        a.extend(["--ip".to_string(), ip.to_string()]);
    }
    a.extend(
        ["--", BUSYBOX, "sleep", "3600"]
            .iter()
            .map(|s| s.to_string()),
    );
    a
}

/// `rm -f` every sandbox at once, then remove the networks; nothing may be left.
fn release_all_and_check(host: &TestHost) -> Result<()> {
    let rms: Vec<Vec<String>> = host
        .sandbox_ids()?
        .into_iter()
        .map(|id| vec!["rm".into(), "-f".into(), id])
        .collect();
    for (out, args) in all_at_once(host, &rms)?.into_iter().zip(&rms) {
        ensure!(out.success(), "{args:?} failed:\n{out}");
    }
    for net in host.user_networks()? {
        host.ferry_ok(&["network", "rm", &net])?;
    }
    let left = host.leftovers()?;
    ensure!(left.is_empty(), "left behind:\n{left}");
    Ok(())
}

/// N dynamic and M static (`--ip`, drawn at random from the /24) `run -d` at once on one
/// /24: every static one that succeeds has its address, every one refused asked for an
/// address another sandbox holds and was told so with a 4xx; no address twice, and the
/// store's addresses are the kernel's.
#[test]
fn concurrent_attaches_and_static_ips_on_one_24_never_give_an_address_twice() -> Result<()> {
    let host = host_or_skip!();
    let (dynamic, statics) = if full() { (200, 50) } else { (40, 10) };
    host.create_network("load24", &["--subnet", "10.160.0.0/24"])?;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64;
    eprintln!("load: seed {seed}");
    let mut x = seed | 1;
    let mut wanted = BTreeSet::new();
    while wanted.len() < statics {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        wanted.insert(2 + (x % 253) as u8);
    }
    let mut calls: Vec<Vec<String>> = (0..dynamic)
        .map(|i| idle_run(&format!("d{i}"), "load24", None))
        .collect();
    let statics: Vec<(String, String)> = wanted
        .iter()
        .map(|o| (format!("s{o}"), format!("10.160.0.{o}")))
        .collect();
    calls.extend(
        statics
            .iter()
            .map(|(n, ip)| idle_run(n, "load24", Some(ip))),
    );
    let t = Instant::now();
    let outs = all_at_once(&host, &calls)?;
    let took = t.elapsed();
    let w = host.accounted()?;
    let ip_of = |name: &str| {
        w.endpoints
            .iter()
            .find(|e| e.sandbox == name)
            .map(|e| e.ip.clone())
    };
    let (mut held, mut refused) = (0, 0);
    for ((name, ip), out) in statics.iter().zip(&outs[dynamic..]) {
        if out.success() {
            ensure!(
                ip_of(name).as_deref() == Some(ip),
                "{name} asked for {ip}, got {:?}",
                ip_of(name)
            );
            held += 1;
        } else {
            let other = w.endpoints.iter().find(|e| &e.ip == ip);
            ensure!(
                other.is_some() && out.stderr.contains(ip.as_str()),
                "{name} was refused {ip}, which no one holds, or without naming it:\n{out}"
            );
            refused += 1;
        }
    }
    let dyn_ok = outs[..dynamic].iter().filter(|o| o.success()).count();
    ensure!(
        dyn_ok == dynamic,
        "{} of {dynamic} dynamic attaches failed",
        dynamic - dyn_ok
    );
    eprintln!(
        "load: {dynamic} dynamic + {} static attaches at once in {took:?}: {dyn_ok} dynamic held, \
         {held} static held at their address, {refused} static refused (address taken); \
         {} distinct addresses, store = kernel",
        statics.len(),
        w.endpoints.len()
    );
    release_all_and_check(&host)?;
    host.finish()
}

/// A subnet filled exactly: as many sandboxes as it has free addresses all get one, the
/// next is refused with a 4xx saying the network is full; all released at once, the
/// same number fits again. /29 and /25 in CI, the /24 too with `FERRY_LOAD_FULL`.
#[test]
fn subnets_filled_exactly_and_released_in_parallel() -> Result<()> {
    let host = host_or_skip!();
    let mut sizes = vec![("10.161.0.0/29", 5usize), ("10.162.0.0/25", 125)];
    if full() {
        sizes.push(("10.163.0.0/24", 253));
    }
    for (subnet, free) in sizes {
        let net = format!("fill{}", subnet.split('/').nth(1).unwrap_or("x"));
        host.create_network(&net, &["--subnet", subnet])?;
        for pass in 0..2 {
            let calls: Vec<Vec<String>> = (0..free)
                .map(|i| idle_run(&format!("{net}p{pass}s{i}"), &net, None))
                .collect();
            let t = Instant::now();
            for (out, args) in all_at_once(&host, &calls)?.into_iter().zip(&calls) {
                ensure!(out.success(), "{subnet}: {args:?} failed:\n{out}");
            }
            let took = t.elapsed();
            let over = host.ferry(
                &idle_run(&format!("{net}over{pass}"), &net, None)
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>(),
            )?;
            ensure!(
                !over.success() && !over.stderr.contains("500"),
                "{subnet} full, one more should be refused as a client error:\n{over}"
            );
            let w = host.accounted()?;
            ensure!(
                w.endpoints.iter().filter(|e| e.network == net).count() == free,
                "{subnet}: not {free} endpoints"
            );
            eprintln!("load: {subnet} filled with {free} at once in {took:?} (pass {pass}); one more refused: {}", over.stderr.trim());
            let rms: Vec<Vec<String>> = host
                .sandbox_ids()?
                .into_iter()
                .map(|id| vec!["rm".into(), "-f".into(), id])
                .collect();
            let t = Instant::now();
            for out in all_at_once(&host, &rms)? {
                ensure!(out.success(), "rm -f failed:\n{out}");
            }
            eprintln!(
                "load: {subnet}: {} released at once in {:?}",
                rms.len(),
                t.elapsed()
            );
        }
        host.ferry_ok(&["network", "rm", &net])?;
    }
    release_all_and_check(&host)?;
    host.finish()
}

/// `-p 30000-39999:30000-39999` (one interval element) and `-p 40000-49999:30000-39999`
/// (one element per port in `pub_any`: nftables cannot add an offset to a range): the first and last
/// ports of both answer on the host; after `rm -f` all four are refused and no nftables
/// element names the ranges' ports.
#[test]
fn a_10000_port_range_is_published_and_removed_whole() -> Result<()> {
    let host = host_or_skip!();
    host.create_network("range", &["--subnet", "10.164.0.0/24"])?;
    let probe = host.bins().probe.to_string_lossy().into_owned();
    let script = format!("{probe} serve-tcp 30000 & exec {probe} serve-tcp 39999");
    let before = host.leftovers()?.nft_elements.len();
    let mut ports = Vec::new();
    for (name, range, first) in [
        ("same", "30000-39999:30000-39999", 30000u16),
        ("shifted", "40000-49999:30000-39999", 40000),
    ] {
        let t = Instant::now();
        host.run_detached(
            name,
            &["--network", "range", "-p", range],
            &[BUSYBOX, "sh", "-c", &script],
        )?;
        let took = t.elapsed();
        for port in [first, first + 9999] {
            host.expect_reach(At::Host, "tcp", "127.0.0.1", port)?;
            ports.push(port);
        }
        let w = host.accounted()?;
        let n = w.published.iter().filter(|p| p.1 == name).count();
        ensure!(n == 10_000, "{name}: {n} ports published");
        let elements = host.leftovers()?.nft_elements.len() - before;
        eprintln!("load: -p {range} published in {took:?}; {elements} nftables elements in all");
    }
    let shifted = host.leftovers()?.nft_elements.len() - before;
    ensure!(
        shifted > 10_000,
        "the shifted range should be one element per port: {shifted} in all"
    );
    let t = Instant::now();
    host.ferry_ok(&["rm", "-f", "same", "shifted"])?;
    let removed = t.elapsed();
    for port in ports {
        host.expect_no_reach(At::Host, "tcp", "127.0.0.1", port, NoReach::Refused)?;
    }
    let left: Vec<String> = host
        .leftovers()?
        .nft_elements
        .into_iter()
        .filter(|e| e.contains("pub_"))
        .collect();
    ensure!(left.is_empty(), "published-port elements left: {left:?}");
    eprintln!("load: both ranges (20,000 ports) removed in {removed:?}");
    release_all_and_check(&host)?;
    host.finish()
}

/// Attaches that publish nothing on an ICC-on network change nothing in the firewall: the
/// tables read the same, rule handles included (a reload would renumber them), before
/// and after 100 `run -d` at once (1,000 on a /22 with `FERRY_LOAD_FULL`), and after their
/// `rm -f`. Control: one published port does change them.
#[test]
fn attaches_without_ports_change_no_rule_and_only_their_own_sources() -> Result<()> {
    let host = host_or_skip!();
    let (n, subnet) = if full() {
        (1000, "10.164.0.0/22")
    } else {
        (100, "10.164.0.0/24")
    };
    host.create_network("quiet", &["--subnet", subnet])?;
    host.ferry_ok(
        &idle_run("first", "quiet", None)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )?;
    // Every rule and every element but the anti-spoofing ones (one per endpoint, the
    // veth's allowed sources: see `sources` in crates/ferry-core/src/nft/mod.rs).
    let tables = || -> Result<String> {
        Ok(format!(
            "{}{}{}",
            host.nft(&["-a", "list", "table", "inet", "ferry"])?,
            host.nft(&["-a", "list", "chain", "bridge", "ferry", "prerouting"])?,
            host.nft(&["-a", "list", "chain", "bridge", "ferry", "guard"])?
        ))
    };
    let sources = || -> Result<usize> {
        Ok(host
            .nft_elements()?
            .iter()
            .filter(|e| e.starts_with("bridge/sources "))
            .count())
    };
    let before = tables()?;
    ensure!(
        sources()? == 1,
        "the first sandbox's sources are not listed"
    );
    let calls: Vec<Vec<String>> = (0..n)
        .map(|i| idle_run(&format!("q{i}"), "quiet", None))
        .collect();
    let t = Instant::now();
    for (out, args) in all_at_once(&host, &calls)?.iter().zip(&calls) {
        ensure!(out.success(), "{args:?} failed:\n{out}");
    }
    let took = t.elapsed();
    ensure!(
        tables()? == before,
        "{n} attaches without ports changed the firewall beyond their sources"
    );
    ensure!(
        sources()? == n + 1,
        "{} sources for {} sandboxes",
        sources()?,
        n + 1
    );
    let rms: Vec<Vec<String>> = (0..n)
        .map(|i| vec!["rm".into(), "-f".into(), format!("q{i}")])
        .collect();
    for out in all_at_once(&host, &rms)? {
        ensure!(out.success(), "rm -f failed:\n{out}");
    }
    ensure!(tables()? == before, "their removal changed the firewall");
    ensure!(sources()? == 1, "the removed sandboxes' sources are left");
    // Control: a published port is seen in the same listing.
    host.ferry_ok(&[
        "run",
        "-d",
        "--name",
        "pub",
        "--network",
        "quiet",
        "-p",
        "8090:80",
        "--",
        BUSYBOX,
        "sleep",
        "60",
    ])?;
    ensure!(
        tables()? != before,
        "a published port did not show in the tables"
    );
    eprintln!("load: {n} attaches without ports in {took:?}, no rule changed");
    release_all_and_check(&host)?;
    host.finish()
}
