//! Networks across hosts: overlays on etcd. Each scenario builds a [`TestCluster`]: host
//! namespaces on an underlay bridge, a real etcd on it, one ferryd per host.

#![allow(clippy::unwrap_used, clippy::too_many_lines)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use ferry_testkit::cluster::{ClusterOpts, TestCluster};
use ferry_testkit::tunnel::{tunnel_dev, tunnel_in, tunnel_seen, TunnelSeen};
use ferry_testkit::{At, NoReach, PortCounter, BUSYBOX};

fn cluster(scenario: &str, opts: ClusterOpts) -> Result<Option<TestCluster>> {
    if !ferry_testkit::privileged(scenario) || !ferry_testkit::etcd::etcd_or_skip(scenario) {
        return Ok(None);
    }
    TestCluster::start(scenario, opts).map(Some)
}

/// The seed article's scenario: `web` on host 1 in overlay-net; a sandbox on host 2 in
/// overlay-net fetches it by name; sandboxes in overlay-net2, on host 2 and on host 1,
/// cannot reach it, while they reach their own network's server across hosts.
#[test]
fn seed_scenario_names_resolve_and_traffic_flows_only_within_one_overlay() -> Result<()> {
    let Some(c) = cluster("overlay-seed", ClusterOpts::default())? else {
        return Ok(());
    };
    let (h1, h2) = (&c.hosts[0], &c.hosts[1]);
    h1.ferry_ok(&["network", "create", "--driver", "overlay", "overlay-net"])?;
    h1.ferry_ok(&["network", "create", "-d", "overlay", "overlay-net2"])?;
    // Every host sees both, as global networks.
    c.wait_for(Duration::from_secs(5), "host 2 to see the overlays", |c| {
        Ok(c.hosts[1]
            .ferry_ok(&["network", "ls", "--filter", "driver=overlay", "-q"])?
            .lines()
            .count()
            == 2)
    })?;
    let scope = h2.ferry_ok(&[
        "network",
        "inspect",
        "overlay-net",
        "--format",
        "{{.Scope}} {{.Driver}}",
    ])?;
    ensure!(
        scope == "global overlay",
        "scope and driver on host 2: {scope}"
    );
    // Docker's default global pool, /24 steps, shown as dockerd shows a chosen subnet.
    let ipam = &h2.network_inspect("overlay-net")?["IPAM"]["Config"][0];
    ensure!(
        ipam["Subnet"] == "10.0.0.0/24" && ipam["Gateway"] == "10.0.0.1",
        "{ipam}"
    );
    let ipam2 = &h1.network_inspect("overlay-net2")?["IPAM"]["Config"][0];
    ensure!(ipam2["Subnet"] == "10.0.1.0/24", "{ipam2}");

    let web = h1.run_web("web", &["--network", "overlay-net"])?;
    h2.run_idle("client", &["--network", "overlay-net"])?;
    // By name, across hosts: the name resolves on host 2 and the page comes back.
    h2.expect_fetch("client", "web", &web)?;
    let web_ip = h1.ip_of("web", "overlay-net")?;
    h2.expect_fetch("client", &web_ip, &web)?;

    // overlay-net2: its own server on host 1 answers its client on host 2 (the control)...
    h1.run_server("srv2", &["--network", "overlay-net2"], "tcp", 80)?;
    h2.run_idle("stranger", &["--network", "overlay-net2"])?;
    h1.run_idle("stranger1", &["--network", "overlay-net2"])?;
    let srv2 = h1.ip_of("srv2", "overlay-net2")?;
    h2.expect_reach(At::Sandbox("stranger"), "tcp", &srv2, 80)?;
    h1.expect_reach(At::Sandbox("stranger1"), "tcp", &srv2, 80)?;
    // ...but neither reaches web, from host 2 or from web's own host.
    h2.expect_no_reach(
        At::Sandbox("stranger"),
        "tcp",
        &web_ip,
        80,
        NoReach::Timeout,
    )?;
    h1.expect_no_reach(
        At::Sandbox("stranger1"),
        "tcp",
        &web_ip,
        80,
        NoReach::Timeout,
    )?;
    // And web's name is not known on overlay-net2, while srv2's is.
    let lookup = |host: &ferry_testkit::TestHost, from: &str, name: &str| {
        host.exec(from, &[BUSYBOX, "nslookup", name])
    };
    ensure!(
        lookup(h2, "stranger", "srv2")?.success(),
        "srv2 resolves on overlay-net2"
    );
    let no = lookup(h2, "stranger", "web")?;
    ensure!(
        !no.success() || !no.out().contains(&web_ip),
        "web must not resolve on overlay-net2:\n{no}"
    );
    c.finish()
}

/// A host's kernel holds one route per remote block and one neighbour and FDB entry per
/// remote host, however many sandboxes run there: with five sandboxes on host 2 and two on
/// host 3, host 1 has three routes (host 2's two blocks of four addresses, host 3's one),
/// two neighbours and two FDB entries, and reaches every sandbox; so does a sandbox of an
/// `--internal` overlay across hosts, which still reaches nothing outside. Control for the
/// count: a sixth sandbox on host 2, inside its blocks, adds nothing.
#[test]
fn tunnel_entries_grow_with_remote_hosts_not_remote_sandboxes() -> Result<()> {
    let opts = ClusterOpts {
        hosts: 3,
        ..ClusterOpts::default()
    };
    let Some(c) = cluster("overlay-per-host", opts)? else {
        return Ok(());
    };
    // Blocks of four addresses (/30), so host 2 needs two of them.
    c.overlay_everywhere(
        "ov",
        &["--subnet", "10.63.0.0/24", "--ip-range", "10.63.0.0/28"],
    )?;
    let (h1, h2, h3) = (&c.hosts[0], &c.hosts[1], &c.hosts[2]);
    h1.run_idle("client", &["--network", "ov"])?;
    let mut far = vec![];
    for (h, n) in [(h2, 5), (h3, 2)] {
        for i in 0..n {
            let name = format!("s{i}");
            h.run_server(&name, &["--network", "ov"], "tcp", 80)?;
            far.push(h.ip_of(&name, "ov")?);
        }
    }
    for ip in &far {
        h1.expect_reach(At::Sandbox("client"), "tcp", ip, 80)?;
    }
    let dev = tunnel_dev(h1, "ov")?;
    let fdb = |h: &ferry_testkit::TestHost| -> Result<usize> {
        let out = h
            .in_host("bridge", &["fdb", "show", "dev", &dev])?
            .expect_success()?;
        Ok(out.stdout.lines().filter(|l| l.contains(" dst ")).count())
    };
    let seen = tunnel_seen(h1, "ov")?;
    ensure!(
        seen.routes.len() == 3 && seen.neighbours.len() == 2 && fdb(h1)? == 2,
        "host 1 holds {seen:?} and {} FDB entries, not 3 routes and 2 hosts",
        fdb(h1)?
    );
    h2.run_server("s9", &["--network", "ov"], "tcp", 80)?;
    let s9 = h2.ip_of("s9", "ov")?;
    h1.expect_reach(At::Sandbox("client"), "tcp", &s9, 80)?;
    let after = tunnel_seen(h1, "ov")?;
    ensure!(
        after.routes.len() == 3,
        "a fifth sandbox added a route: {after:?}"
    );

    c.overlay_everywhere("sealed", &["--internal"])?;
    h3.run_server("inner", &["--network", "sealed"], "tcp", 80)?;
    h1.run_idle("inside", &["--network", "sealed"])?;
    let inner = h3.ip_of("inner", "sealed")?;
    h1.expect_reach(At::Sandbox("inside"), "tcp", &inner, 80)?;
    h1.expect_no_reach(
        At::Sandbox("inside"),
        "tcp",
        &far[0],
        80,
        NoReach::Unreachable,
    )?;
    c.finish()
}

/// A host whose ferryd dies stops renewing its lease: within TTL + 1 s every other host
/// has removed its endpoints' tunnel entries; when it comes back they return, and traffic
/// with them.
#[test]
fn a_dead_hosts_entries_vanish_within_the_ttl_and_return_with_it() -> Result<()> {
    let Some(mut c) = cluster("overlay-dead-host", ClusterOpts::default())? else {
        return Ok(());
    };
    c.overlay_everywhere("ov", &[])?;
    let web = c.hosts[1].run_web("web2", &["--network", "ov"])?;
    c.hosts[0].run_idle("client", &["--network", "ov"])?;
    let web_ip = c.hosts[1].ip_of("web2", "ov")?;
    c.hosts[0].expect_fetch("client", &web_ip, &web)?;
    let seen = tunnel_seen(&c.hosts[0], "ov")?;
    ensure!(
        seen.via(&web_ip) == Some("172.30.0.12") && seen.neighbours == ["172.30.0.12"],
        "host 1 routes web2's address to host 2, with one neighbour entry: {seen:?}"
    );
    let nodes = c.hosts[0].ferry_ok(&["node", "ls"])?;
    ensure!(
        nodes.contains("host2") && nodes.contains("172.30.0.12"),
        "node ls:\n{nodes}"
    );

    // Kill host 2's ferryd and measure, from host 1, how long its entries outlive it.
    let ttl = Duration::from_secs(ClusterOpts::default().ttl_secs);
    let mut vanished = None;
    let (h1, rest) = c.hosts.split_at_mut(1);
    rest[0].restart_kill9_with(|| {
        let t = std::time::Instant::now();
        while t.elapsed() < ttl + Duration::from_secs(5) {
            if tunnel_seen(&h1[0], "ov").is_ok_and(|t| t.is_empty()) {
                vanished = Some(t.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })?;
    let took =
        vanished.ok_or_else(|| anyhow::anyhow!("host 2's entries never vanished from host 1"))?;
    ensure!(
        took <= ttl + Duration::from_secs(1),
        "entries vanished after {took:?}, more than TTL + 1 s"
    );
    let nodes = c.hosts[0].ferry_ok(&["node", "ls", "-q"])?;
    eprintln!("dead host's entries vanished from host 1 after {took:?} (TTL {ttl:?}); nodes now: {nodes:?}");

    // Back: host 2 republishes, host 1 reaches web2 again.
    c.hosts[0].expect_fetch("client", &web_ip, &web)?;
    let seen = tunnel_seen(&c.hosts[0], "ov")?;
    ensure!(
        seen.via(&web_ip) == Some("172.30.0.12"),
        "the route is back: {seen:?}"
    );
    c.finish()
}

/// The overlay's MTU is the underlay's less 50, seen on the sandbox's interface: a
/// don't-fragment ping of exactly that size crosses the tunnel, one byte more does not
/// leave the sandbox.
#[test]
fn the_overlay_mtu_follows_a_1400_byte_underlay() -> Result<()> {
    let opts = ClusterOpts {
        mtu: 1400,
        ..ClusterOpts::default()
    };
    let Some(c) = cluster("overlay-mtu", opts)? else {
        return Ok(());
    };
    let (h1, h2) = (&c.hosts[0], &c.hosts[1]);
    c.overlay_everywhere("ov", &[])?;
    h1.run_idle("a", &["--network", "ov"])?;
    h2.run_idle("b", &["--network", "ov"])?;
    let link = h1
        .exec("a", &[BUSYBOX, "ip", "-o", "link", "show", "eth0"])?
        .expect_success()?
        .stdout;
    ensure!(
        link.contains("mtu 1350 "),
        "eth0's MTU in the sandbox: {link}"
    );
    let b_ip = h2.ip_of("b", "ov")?;
    // 1350 - 20 (IP) - 8 (ICMP) = 1322 bytes of payload fill the MTU exactly.
    let ping = |size: &str| {
        h1.exec(
            "a",
            &["ping", "-M", "do", "-c", "1", "-W", "2", "-s", size, &b_ip],
        )
    };
    let mut fits = ping("1322")?;
    for _ in 0..20 {
        if fits.success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
        fits = ping("1322")?;
    }
    ensure!(
        fits.success(),
        "a full-size DF ping crosses the tunnel:\n{fits}"
    );
    let over = ping("1323")?;
    ensure!(!over.success(), "one byte more must not pass:\n{over}");
    ensure!(
        over.to_string().contains("mtu=1350") || over.to_string().contains("too long"),
        "refused for its size, by the sandbox:\n{over}"
    );
    c.finish()
}

/// Hosts racing to start sandboxes on one overlay get distinct addresses, each inside
/// its own host's block, and reach each other across hosts.
#[test]
fn concurrent_runs_on_every_host_get_distinct_addresses() -> Result<()> {
    let opts = ClusterOpts {
        hosts: 3,
        ..ClusterOpts::default()
    };
    let Some(c) = cluster("overlay-concurrent", opts)? else {
        return Ok(());
    };
    c.hosts[0].ferry_ok(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.40.0.0/24",
        "ov",
    ])?;
    c.wait_for(Duration::from_secs(5), "every host to see ov", |c| {
        Ok(c.hosts.iter().all(|h| {
            h.ferry(&["network", "inspect", "ov"])
                .is_ok_and(|o| o.success())
        }))
    })?;
    let per_host = 5;
    let names: Vec<Vec<String>> = std::thread::scope(|s| {
        let jobs: Vec<_> = c
            .hosts
            .iter()
            .enumerate()
            .flat_map(|(i, h)| {
                (0..per_host).map(move |j| {
                    s.spawn(move || -> Result<(usize, String)> {
                        let name = format!("s{i}x{j}");
                        h.run_idle(&name, &["--network", "ov"])?;
                        Ok((i, name))
                    })
                })
            })
            .collect();
        let mut by_host = vec![Vec::new(); 3];
        for j in jobs {
            let (i, name) = j.join().expect("no panic").expect("run -d");
            by_host[i].push(name);
        }
        by_host
    });
    let mut all = Vec::new();
    for (i, names) in names.iter().enumerate() {
        let net = c.hosts[i].network_inspect("ov")?;
        let subnet = &net["IPAM"]["Config"][0]["Subnet"];
        ensure!(
            subnet == "10.40.0.0/24",
            "the subnet as Docker shows it on host {i}: {subnet}"
        );
        for n in names {
            all.push((i, c.hosts[i].ip_of(n, "ov")?));
        }
    }
    let mut ips: Vec<&str> = all.iter().map(|(_, ip)| ip.as_str()).collect();
    ips.sort();
    ips.dedup();
    ensure!(ips.len() == 3 * per_host, "distinct addresses: {all:?}");
    // Each host's addresses lie in one /26 block of its own.
    let block_of = |ip: &str| ip.rsplit('.').next().unwrap().parse::<u32>().unwrap() / 64;
    for i in 0..3 {
        let blocks: std::collections::BTreeSet<u32> = all
            .iter()
            .filter(|(h, _)| *h == i)
            .map(|(_, ip)| block_of(ip))
            .collect();
        ensure!(
            blocks.len() == 1,
            "host {i}'s addresses span blocks: {all:?}"
        );
    }
    // And they reach each other across hosts: host 3's first sandbox pings host 1's.
    let target = &all.iter().find(|(h, _)| *h == 0).unwrap().1;
    ensure!(
        c.hosts[2].pings("s2x0", target)?,
        "s2x0 on host 3 pings {target} on host 1"
    );
    c.finish()
}

/// A static `--ip` is claimed through etcd: once in the whole cluster, never inside
/// another host's block; the sandbox holding it is reached across hosts.
#[test]
fn static_addresses_are_claimed_once_across_hosts() -> Result<()> {
    let Some(c) = cluster("overlay-static", ClusterOpts::default())? else {
        return Ok(());
    };
    let (h1, h2) = (&c.hosts[0], &c.hosts[1]);
    h1.ferry_ok(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.50.0.0/24",
        "--ip-range",
        "10.50.0.128/25",
        "ov",
    ])?;
    c.wait_for(Duration::from_secs(5), "host 2 to see ov", |c| {
        Ok(c.hosts[1].ferry(&["network", "inspect", "ov"])?.success())
    })?;
    h1.run_idle("dyn", &["--network", "ov"])?;
    let dyn_ip = h1.ip_of("dyn", "ov")?;
    ensure!(
        dyn_ip.starts_with("10.50.0.1"),
        "dynamic addresses come from the range: {dyn_ip}"
    );
    h2.run_server(
        "fixed",
        &["--network", "ov", "--ip", "10.50.0.10"],
        "tcp",
        80,
    )?;
    ensure!(h2.ip_of("fixed", "ov")? == "10.50.0.10");
    // The same address on the other host: refused, and nothing made.
    let e = h1.ferry_err(&[
        "run",
        "-d",
        "--name",
        "twin",
        "--network",
        "ov",
        "--ip",
        "10.50.0.10",
        "--",
        BUSYBOX,
        "sleep",
        "60",
    ])?;
    ensure!(
        e.to_string().contains("10.50.0.10") && e.to_string().contains("in use"),
        "{e}"
    );
    ensure!(
        !h1.ferry(&["inspect", "twin"])?.success(),
        "no sandbox left behind"
    );
    // An address in host 1's block, asked on host 2: refused, naming host 1.
    let e = h2.ferry_err(&[
        "run",
        "-d",
        "--name",
        "poach",
        "--network",
        "ov",
        "--ip",
        &dyn_ip,
        "--",
        BUSYBOX,
        "sleep",
        "60",
    ])?;
    ensure!(e.to_string().contains("host1"), "{e}");
    // The static sandbox answers across hosts (the control for both refusals).
    h1.expect_reach(At::Sandbox("dyn"), "tcp", "10.50.0.10", 80)?;
    c.finish()
}

/// etcd stops for 30 s: traffic between sandboxes goes on, what needs etcd fails at once
/// naming it, a sandbox still starts in its host's block; when etcd is back the hosts
/// resync and the sandbox started meanwhile is reached from the other host.
#[test]
fn an_etcd_outage_stops_nothing_that_runs_and_heals_on_return() -> Result<()> {
    let Some(mut c) = cluster("overlay-outage", ClusterOpts::default())? else {
        return Ok(());
    };
    c.overlay_everywhere("ov", &[])?;
    let web = c.hosts[1].run_web("web", &["--network", "ov"])?;
    c.hosts[0].run_idle("client", &["--network", "ov"])?;
    c.hosts[0].expect_fetch("client", "web", &web)?;

    c.etcd.kill();
    let t = std::time::Instant::now();
    let e = c.hosts[0].ferry_err(&["network", "create", "-d", "overlay", "late"])?;
    ensure!(
        t.elapsed() < Duration::from_secs(8),
        "the refusal took {:?}",
        t.elapsed()
    );
    ensure!(e.to_string().contains("etcd"), "the error names etcd: {e}");
    // Running traffic does not need etcd.
    c.hosts[0].expect_fetch("client", "web", &web)?;
    // A new sandbox on host 1, inside the block host 1 holds.
    let web1 = c.hosts[0].run_web("web1", &["--network", "ov"])?;
    c.hosts[1].run_idle("client2", &["--network", "ov"])?;
    std::thread::sleep(Duration::from_secs(30));
    c.hosts[0].expect_fetch("client", "web", &web)?;

    c.etcd.restart()?;
    let web1_ip = c.hosts[0].ip_of("web1", "ov")?;
    c.hosts[1].expect_fetch("client2", &web1_ip, &web1)?;
    c.hosts[1].expect_fetch("client2", "web1", &web1)?;
    c.hosts[0].ferry_ok(&["network", "create", "-d", "overlay", "late"])?;
    c.finish()
}

/// The tunnel takes VXLAN datagrams only from the cluster's hosts: a machine on the
/// underlay speaking the overlay's VNI at a sandbox is dropped; the same machine, once
/// its address is in the set by hand, gets through (the control).
#[test]
fn tunnel_packets_from_a_machine_outside_the_cluster_are_dropped() -> Result<()> {
    let Some(c) = cluster("overlay-rogue", ClusterOpts::default())? else {
        return Ok(());
    };
    let h1 = &c.hosts[0];
    h1.ferry_ok(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.60.0.0/24",
        "ov",
    ])?;
    h1.run_server("srv", &["--network", "ov"], "tcp", 80)?;
    let srv = h1.ip_of("srv", "ov")?;
    let peers = h1.nft(&["list", "set", "inet", "ferry", "tunnel_peers"])?;
    ensure!(
        peers.contains("172.30.0.11") && peers.contains("172.30.0.12"),
        "{peers}"
    );
    let ports = h1.nft(&["list", "set", "inet", "ferry", "tunnel_ports"])?;
    ensure!(ports.contains("4789"), "{ports}");

    // The rogue: the overlay's VNI, pointed at host 1, with srv's MAC known.
    let id = h1.ferry_ok(&["network", "inspect", "ov", "--format", "{{.Id}}"])?;
    let dev = format!("fv-{}", &id[..8]);
    let details = h1
        .in_host("ip", &["-d", "link", "show", &dev])?
        .expect_success()?
        .stdout;
    let vni = details
        .split_whitespace()
        .skip_while(|w| *w != "id")
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("no VNI in {details}"))?
        .to_string();
    let rogue = c.underlay_peer("172.30.0.99")?;
    rogue.ip(&[
        "link",
        "add",
        "rv",
        "type",
        "vxlan",
        "id",
        &vni,
        "local",
        "172.30.0.99",
        "dstport",
        "4789",
        "nolearning",
    ])?;
    rogue.ip(&["link", "set", "rv", "address", "02:99:00:00:00:01", "up"])?;
    rogue.ip(&["addr", "add", "10.60.0.250/24", "dev", "rv"])?;
    // Host 1's tunnel device answers to the MAC derived from its tunnel address, and
    // routes what it receives to its bridge.
    let h1_mac = "02:fe:ac:1e:00:0b";
    rogue.ip(&[
        "neigh",
        "replace",
        &srv,
        "lladdr",
        h1_mac,
        "dev",
        "rv",
        "nud",
        "permanent",
    ])?;
    let out = rogue.run(
        "bridge",
        &["fdb", "append", h1_mac, "dev", "rv", "dst", "172.30.0.11"],
    )?;
    ensure!(out.success(), "{out}");
    // Host 1 knows the way back (a route through the rogue, as to a host of the
    // cluster), so only the firewall stands between them.
    for args in [
        vec![
            "route",
            "replace",
            "10.60.0.250/32",
            "via",
            "172.30.0.99",
            "dev",
            &dev,
            "onlink",
        ],
        vec![
            "neigh",
            "replace",
            "172.30.0.99",
            "lladdr",
            "02:99:00:00:00:01",
            "dev",
            &dev,
            "nud",
            "permanent",
        ],
    ] {
        h1.in_host("ip", &args)?.expect_success()?;
    }
    h1.in_host(
        "bridge",
        &[
            "fdb",
            "append",
            "02:99:00:00:00:01",
            "dev",
            &dev,
            "dst",
            "172.30.0.99",
        ],
    )?
    .expect_success()?;

    let probe = h1.bins().probe.to_string_lossy().into_owned();
    let attempt = || rogue.run(&probe, &["tcp", &srv, "80"]);
    let refused = attempt()?;
    // Dropped, so the probe times out (ferry-probe's exit 11), rather than failing to run.
    ensure!(
        refused.status.code() == Some(11),
        "the rogue's probe must time out:\n{refused}"
    );
    h1.nft(&[
        "add",
        "element",
        "inet",
        "ferry",
        "tunnel_peers",
        "{ 172.30.0.99 }",
    ])?;
    let mut allowed = attempt()?;
    for _ in 0..10 {
        if allowed.success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
        allowed = attempt()?;
    }
    ensure!(
        allowed.success(),
        "with its address in the set, the same probe passes:\n{allowed}"
    );
    h1.nft(&[
        "delete",
        "element",
        "inet",
        "ferry",
        "tunnel_peers",
        "{ 172.30.0.99 }",
    ])?;
    // Tunnel traffic leaves no conntrack entry in host 1, nor does the flow it carried
    // (traffic within the overlay needs no state), while host 1's own flow to the same
    // sandbox does (which shows the table is host 1's and is read).
    h1.expect_reach(At::Host, "tcp", &srv, 80)?;
    let ct = h1.conntrack_table()?;
    ensure!(
        ct.contains("dport=80 "),
        "host 1's own flow is tracked:\n{ct}"
    );
    ensure!(
        !ct.contains("src=10.60.0.250"),
        "the flow the tunnel carried is not tracked:\n{ct}"
    );
    ensure!(
        !ct.contains("dport=4789"),
        "tunnel flows are not tracked:\n{ct}"
    );
    // That is the raw chain a host hooks only while it has an overlay.
    let raw = h1.nft(&["list", "chain", "inet", "ferry", "tunnel_in"])?;
    ensure!(
        raw.contains("hook prerouting priority raw") && raw.contains("@intra_dst"),
        "host 1's overlay chain before conntrack:\n{raw}"
    );
    drop(rogue);
    c.finish()
}

/// A record that goes while a host's ferryd is down leaves no entry behind: the restarted
/// ferryd reads what its devices hold and removes what the cluster no longer has. The
/// record is a static address outside every block (a route of its own), which host 2
/// removes while host 1's ferryd is down.
#[test]
fn entries_made_stale_while_ferryd_was_down_are_removed_at_restart() -> Result<()> {
    let Some(mut c) = cluster("overlay-stale", ClusterOpts::default())? else {
        return Ok(());
    };
    c.overlay_everywhere("ov", &["--subnet", "10.62.0.0/24"])?;
    c.hosts[0].run_idle("here", &["--network", "ov"])?;
    c.hosts[1].run_idle("stays", &["--network", "ov"])?;
    let gone = "10.62.0.200";
    c.hosts[1].run_idle("gone", &["--network", "ov", "--ip", gone])?;
    let stays = c.hosts[1].ip_of("stays", "ov")?;
    let own_route = |t: &TunnelSeen| t.routes.iter().any(|(d, _)| d == gone);
    c.wait_for(Duration::from_secs(5), "host 1's routes to both", |c| {
        let t = tunnel_seen(&c.hosts[0], "ov")?;
        Ok(own_route(&t) && t.via(&stays) == Some("172.30.0.12"))
    })?;
    let (h1, rest) = c.hosts.split_at_mut(1);
    let h2 = &rest[0];
    let mut stale_while_down = false;
    let dev = tunnel_dev(&h1[0], "ov")?;
    let ns = h1[0].netns()?.try_clone()?;
    h1[0].restart_kill9_with(|| {
        h2.ferry_ok(&["rm", "-f", "gone"])
            .expect("rm gone on host 2");
        // Until host 2 has withdrawn it from etcd.
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            let n = h2.ferry_ok(&["node", "inspect", "host2", "--format", "{{.Endpoints}}"]);
            if n.is_ok_and(|n| n == "1") {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Read from the kernel directly: no ferryd answers on host 1 now.
        stale_while_down = tunnel_in(&ns, &dev).is_ok_and(|t| own_route(&t));
    })?;
    ensure!(
        stale_while_down,
        "the route outlived its record while ferryd was down (the setup)"
    );
    c.wait_for(Duration::from_secs(5), "the stale route to go", |c| {
        Ok(!own_route(&tunnel_seen(&c.hosts[0], "ov")?))
    })?;
    ensure!(
        c.hosts[0].pings("here", &stays)?,
        "the route that stayed still carries traffic"
    );
    c.finish()
}

/// An overlay sandbox reaches the outside through its own host (masqueraded), answers on
/// a port published on that host, and may sit on a local bridge at the same time; an
/// `--internal` overlay reaches nothing outside.
#[test]
fn overlay_sandboxes_go_out_through_their_host_and_publish_ports_there() -> Result<()> {
    let Some(c) = cluster("overlay-outside", ClusterOpts::default())? else {
        return Ok(());
    };
    let (h1, h2) = (&c.hosts[0], &c.hosts[1]);
    h1.ferry_ok(&["network", "create", "-d", "overlay", "ov"])?;
    h1.ferry_ok(&["network", "create", "-d", "overlay", "--internal", "sealed"])?;
    h1.ferry_ok(&["network", "create", "--subnet", "10.61.0.0/24", "local"])?;
    c.wait_for(Duration::from_secs(5), "host 2 to see the overlays", |c| {
        Ok(c.hosts[1]
            .ferry(&["network", "inspect", "sealed"])?
            .success())
    })?;
    // A machine on host 1's LAN, serving.
    let mut lan = h1.add_peer("192.168.240.1/24", "192.168.240.2/24")?;
    lan.serve("tcp", 8080)?;
    h1.run_idle("out", &["--network", "ov"])?;
    let seen = h1.expect_reach(At::Sandbox("out"), "tcp", &lan.ip, 8080)?;
    ensure!(
        seen == lan.host_ip,
        "masqueraded to the host's address, seen as {seen}"
    );
    h1.run_idle("shut", &["--network", "sealed"])?;
    h1.expect_no_reach(
        At::Sandbox("shut"),
        "tcp",
        &lan.ip,
        8080,
        NoReach::Unreachable,
    )?;

    // A port published by an overlay sandbox answers on its host, from the LAN.
    h1.run_server("pub", &["--network", "ov", "-p", "8081:80"], "tcp", 80)?;
    h1.expect_reach(At::Peer(&lan), "tcp", &lan.host_ip, 8081)?;

    // On an overlay and a local bridge at once: both work.
    h1.run_server("localsrv", &["--network", "local"], "tcp", 80)?;
    h1.ferry_ok(&["network", "connect", "local", "out"])?;
    let localsrv = h1.ip_of("localsrv", "local")?;
    h1.expect_reach(At::Sandbox("out"), "tcp", &localsrv, 80)?;
    h2.run_server("far", &["--network", "ov"], "tcp", 80)?;
    let far = h2.ip_of("far", "ov")?;
    h1.expect_reach(At::Sandbox("out"), "tcp", &far, 80)?;
    // The sealed network is still one network across hosts.
    h2.run_server("sealedsrv", &["--network", "sealed"], "tcp", 80)?;
    let sealedsrv = h2.ip_of("sealedsrv", "sealed")?;
    h1.expect_reach(At::Sandbox("shut"), "tcp", &sealedsrv, 80)?;
    drop(lan);
    c.finish()
}

/// With a three-member etcd, losing one member stops nothing: the hosts go on creating
/// overlays, claiming blocks and reaching each other across hosts.
#[test]
fn a_three_member_etcd_loses_a_member_and_nothing_stops() -> Result<()> {
    let opts = ClusterOpts {
        etcd_members: 3,
        ..ClusterOpts::default()
    };
    let Some(mut c) = cluster("overlay-etcd3", opts)? else {
        return Ok(());
    };
    c.overlay_everywhere("ov", &[])?;
    let web = c.hosts[0].run_web("web", &["--network", "ov"])?;
    c.hosts[1].run_idle("client", &["--network", "ov"])?;
    c.hosts[1].expect_fetch("client", "web", &web)?;
    // The first member, which every ferryd lists first, goes.
    c.etcd.kill();
    c.hosts[1].ferry_ok(&["network", "create", "-d", "overlay", "ov2"])?;
    let web2 = c.hosts[1].run_web("web2", &["--network", "ov2"])?;
    c.wait_for(Duration::from_secs(5), "host 1 to see ov2", |c| {
        Ok(c.hosts[0].ferry(&["network", "inspect", "ov2"])?.success())
    })?;
    c.hosts[0].run_idle("client2", &["--network", "ov2"])?;
    c.hosts[0].expect_fetch("client2", "web2", &web2)?;
    c.hosts[1].expect_fetch("client", "web", &web)?;
    c.finish()
}

/// A host cut off from etcd while the cluster changes and etcd compacts its history
/// past that host's watch: when it is back, it resyncs from a fresh read — the removed
/// sandbox's entry gone, the new one's there, nothing doubled — and reaches the new one.
#[test]
fn a_host_cut_off_past_a_compaction_resyncs_without_missing_or_doubling() -> Result<()> {
    let opts = ClusterOpts {
        ttl_secs: 15,
        ..ClusterOpts::default()
    };
    let Some(c) = cluster("overlay-compacted", opts)? else {
        return Ok(());
    };
    let (h1, h2) = (&c.hosts[0], &c.hosts[1]);
    c.overlay_everywhere("ov", &[])?;
    let old = h1.run_web("old", &["--network", "ov"])?;
    h2.run_idle("client", &["--network", "ov"])?;
    let old_ip = h1.ip_of("old", "ov")?;
    h2.expect_fetch("client", "old", &old)?;

    // Cut host 2 off from etcd (its etcd traffic only).
    h2.nft(&["add", "table", "inet", "cut"])?;
    h2.nft(&[
        "add",
        "chain",
        "inet",
        "cut",
        "out",
        "{ type filter hook output priority 0; }",
    ])?;
    h2.nft(&[
        "add", "rule", "inet", "cut", "out", "tcp", "dport", "2379", "drop",
    ])?;
    h2.nft(&[
        "add",
        "chain",
        "inet",
        "cut",
        "in",
        "{ type filter hook input priority 0; }",
    ])?;
    h2.nft(&[
        "add", "rule", "inet", "cut", "in", "tcp", "sport", "2379", "drop",
    ])?;
    h1.ferry_ok(&["rm", "-f", "old"])?;
    let fresh = h1.run_web("fresh", &["--network", "ov"])?;
    let fresh_ip = h1.ip_of("fresh", "ov")?;
    ensure!(
        fresh_ip != old_ip,
        "a new address, so old and new entries differ"
    );
    // Let host 1's publication land, then compact etcd's history up to now.
    std::thread::sleep(Duration::from_secs(1));
    let status = c
        .in_underlay(
            "etcdctl",
            &[
                "--endpoints",
                "172.30.0.1:2379",
                "endpoint",
                "status",
                "-w",
                "json",
            ],
        )?
        .expect_success()?
        .stdout;
    let rev = status
        .split("\"revision\":")
        .nth(1)
        .and_then(|r| r.split(|ch: char| !ch.is_ascii_digit()).next())
        .ok_or_else(|| anyhow::anyhow!("no revision in {status}"))?
        .to_string();
    c.in_underlay(
        "etcdctl",
        &["--endpoints", "172.30.0.1:2379", "compact", &rev],
    )?
    .expect_success()?;
    let seen = tunnel_seen(h2, "ov")?;
    ensure!(
        seen.via(&old_ip) == Some("172.30.0.11"),
        "while cut off, host 2 routes the old address to host 1 (the setup): {seen:?}"
    );
    // Long enough for host 2's client to find its connection dead (keep-alive 2 s + 3 s).
    std::thread::sleep(Duration::from_secs(7));
    h2.nft(&["delete", "table", "inet", "cut"])?;

    h2.expect_fetch("client", &fresh_ip, &fresh)?;
    // fresh is in host 1's block, whose route host 2 already had: the fetch does not
    // wait for the resync, so wait for it here.
    until(Duration::from_secs(15), "host 2's watch to resync", || {
        Ok(h2.log_tail(200).contains("watch compacted"))
    })
    .with_context(|| h2.log_tail(30))?;
    h2.expect_fetch("client", "fresh", &fresh)?;
    let seen = tunnel_seen(h2, "ov")?;
    ensure!(
        seen.via(&fresh_ip) == Some("172.30.0.11") && seen.neighbours == ["172.30.0.11"],
        "host 1's block, once, through one neighbour entry: {seen:?}"
    );
    c.finish()
}

/// A host whose block is full claims another: six sandboxes on one host of an overlay
/// whose blocks hold two or four addresses each, all distinct, all in the range, all
/// reached from the other host.
#[test]
fn a_host_whose_block_fills_claims_another() -> Result<()> {
    let Some(c) = cluster("overlay-blocks", ClusterOpts::default())? else {
        return Ok(());
    };
    c.overlay_everywhere(
        "ov",
        &["--subnet", "10.70.0.0/24", "--ip-range", "10.70.0.0/28"],
    )?;
    let (h1, h2) = (&c.hosts[0], &c.hosts[1]);
    let mut ips = Vec::new();
    for i in 0..6 {
        let name = format!("s{i}");
        h1.run_server(&name, &["--network", "ov"], "tcp", 80)?;
        ips.push(h1.ip_of(&name, "ov")?);
    }
    let mut sorted = ips.clone();
    sorted.sort();
    sorted.dedup();
    ensure!(sorted.len() == 6, "distinct: {ips:?}");
    ensure!(
        ips.iter().all(|ip| ip
            .strip_prefix("10.70.0.")
            .and_then(|o| o.parse::<u8>().ok())
            .is_some_and(|o| o < 16)),
        "all inside --ip-range 10.70.0.0/28: {ips:?}"
    );
    let blocks = h1.ferry_ok(&["node", "inspect", "host1", "--format", "{{.Blocks}}"])?;
    ensure!(
        blocks.parse::<u32>()? >= 2,
        "host 1 holds more than one block: {blocks}"
    );
    h2.run_idle("client", &["--network", "ov"])?;
    h2.expect_reach(At::Sandbox("client"), "tcp", &ips[5], 80)?;
    c.finish()
}

/// Sandboxes started at once past the end of this host's block: the ones that find it
/// full between the check and the plan claim another block and go on, none is refused
/// ("no available addresses" was the answer before).
#[test]
fn concurrent_runs_past_a_blocks_end_claim_more_and_none_is_refused() -> Result<()> {
    let Some(c) = cluster("overlay-blocks-race", ClusterOpts::default())? else {
        return Ok(());
    };
    // Blocks of /30 (four addresses) in a /28 range: ten sandboxes need four blocks.
    c.overlay_everywhere(
        "ov",
        &["--subnet", "10.71.0.0/24", "--ip-range", "10.71.0.0/28"],
    )?;
    let h1 = &c.hosts[0];
    let results: Vec<Result<String>> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..10)
            .map(|i| s.spawn(move || h1.run_idle(&format!("r{i}"), &["--network", "ov"])))
            .collect();
        runs.into_iter()
            .map(|r| r.join().expect("run thread"))
            .collect()
    });
    for r in &results {
        ensure!(r.is_ok(), "a run was refused: {r:?}");
    }
    let mut ips = (0..10)
        .map(|i| h1.ip_of(&format!("r{i}"), "ov"))
        .collect::<Result<Vec<_>>>()?;
    ips.sort();
    ips.dedup();
    ensure!(ips.len() == 10, "ten distinct addresses: {ips:?}");
    c.finish()
}

/// `network prune` on one host removes the overlays no host has a sandbox on, from every
/// host; an overlay another host's sandbox is on stays everywhere (as `network rm` would
/// refuse it), and its sandbox is still reached.
#[test]
fn network_prune_removes_unused_overlays_everywhere_and_keeps_used_ones() -> Result<()> {
    let Some(c) = cluster("overlay-prune", ClusterOpts::default())? else {
        return Ok(());
    };
    c.overlay_everywhere("idle", &[])?;
    c.overlay_everywhere("busy", &[])?;
    let (h1, h2) = (&c.hosts[0], &c.hosts[1]);
    h2.run_server("user", &["--network", "busy"], "tcp", 80)?;
    let pruned = h1.ferry_ok(&["network", "prune", "-f"])?;
    let names: Vec<&str> = pruned.lines().skip(1).collect();
    ensure!(
        names == ["idle"],
        "pruned {names:?}, not [\"idle\"]:\n{pruned}"
    );
    c.wait_for(Duration::from_secs(5), "idle to leave host 2", |c| {
        Ok(!c.hosts[1].ferry(&["network", "inspect", "idle"])?.success())
    })?;
    for h in [h1, h2] {
        h.ferry_ok(&["network", "inspect", "busy"])?;
    }
    let ip = h2.ip_of("user", "busy")?;
    h1.run_idle("client", &["--network", "busy"])?;
    h1.expect_reach(At::Sandbox("client"), "tcp", &ip, 80)?;
    c.finish()
}

/// A VXLAN device deleted by hand is made again, with every route and entry it held, by
/// the periodic check without anyone asking and by `ferry system reconcile`; one set down
/// and up by hand gets its flushed routes back: traffic across hosts flows again.
#[test]
fn a_vxlan_device_deleted_by_hand_comes_back_with_its_entries() -> Result<()> {
    let Some(c) = cluster("overlay-repair", ClusterOpts::default())? else {
        return Ok(());
    };
    c.overlay_everywhere("ov", &[])?;
    let (h1, h2) = (&c.hosts[0], &c.hosts[1]);
    h2.run_server("far", &["--network", "ov"], "tcp", 80)?;
    h1.run_idle("near", &["--network", "ov"])?;
    let far = h2.ip_of("far", "ov")?;
    h1.expect_reach(At::Sandbox("near"), "tcp", &far, 80)?;
    let dev = tunnel_dev(h1, "ov")?;
    for how in ["the periodic check", "ferry system reconcile"] {
        h1.in_host("ip", &["link", "del", &dev])?.expect_success()?;
        // No refusal to probe here: the periodic check may already be repairing.
        if how == "ferry system reconcile" {
            h1.ferry_ok(&["system", "reconcile"])?;
        }
        // The check runs every 5 s; expect_reach retries for longer.
        h1.expect_reach(At::Sandbox("near"), "tcp", &far, 80)
            .with_context(|| format!("after the device was deleted, by {how}"))?;
        let seen = tunnel_seen(h1, "ov")?;
        ensure!(
            seen.via(&far) == Some("172.30.0.12"),
            "by {how}: the route is back on the new device: {seen:?}"
        );
    }
    // Set down and up by hand, the device loses its routes and neighbours (the kernel
    // flushes them) while it stays: the periodic check compares what it programmed with
    // the kernel and programs them again.
    for state in ["down", "up"] {
        h1.in_host("ip", &["link", "set", &dev, state])?
            .expect_success()?;
    }
    until(Duration::from_secs(15), "the routes to come back", || {
        Ok(tunnel_seen(h1, "ov")?.via(&far) == Some("172.30.0.12"))
    })?;
    h1.expect_reach(At::Sandbox("near"), "tcp", &far, 80)
        .context("after the device was set down and up")?;
    c.finish()
}

/// The tunnel's UDP port, or the overlay's VNI on it, held by another VXLAN device on a
/// host: first a device that cannot share the port (an external one, as a BPF data path
/// makes), then one with the next overlay's VNI (the cluster's first overlay gets 4096,
/// its second 4097). Each create is refused with an error that names the device and the
/// way out (`--vxlan-port`); once the devices are gone, the overlays come up on that host
/// and carry traffic (the control). In this order ferryd's own retry does not race the
/// test: once the external device is gone, ferryd may bring the first overlay's device up
/// on the port at any moment, and a device with another VNI shares the port with it.
#[test]
fn a_tunnel_port_held_by_another_device_is_named_and_the_overlay_comes_up_once_free() -> Result<()>
{
    let Some(c) = cluster("overlay-port-held", ClusterOpts::default())? else {
        return Ok(());
    };
    let (h1, h2) = (&c.hosts[0], &c.hosts[1]);
    let squats: [(&str, &str, &str, &str); 2] = [
        (
            "ov",
            "external",
            "",
            "UDP port 4789 is held by VXLAN device squat",
        ),
        (
            "ov2",
            "id",
            "4097",
            "VNI 4097 on UDP port 4789 is held by VXLAN device squat",
        ),
    ];
    for (net, kind, value, expected) in squats {
        let mut add = vec!["link", "add", "squat", "type", "vxlan", kind];
        add.extend([value].into_iter().filter(|v| !v.is_empty()));
        add.extend(["dstport", "4789"]);
        h1.in_host("ip", &add)?.expect_success()?;
        h1.in_host("ip", &["link", "set", "squat", "up"])?
            .expect_success()?;
        let made = h1.ferry(&["network", "create", "-d", "overlay", net])?;
        ensure!(
            !made.success(),
            "the create of {net} must fail on host 1:\n{made}"
        );
        let said = made.to_string();
        ensure!(
            said.contains(expected)
                && said.contains("--vxlan-port")
                && said.contains(&format!("overlay {net} is created in the cluster")),
            "the error names the device and the flag ({expected}):\n{made}"
        );
        h1.in_host("ip", &["link", "del", "squat"])?
            .expect_success()?;
    }
    h1.ferry_ok(&["system", "reconcile"])?;
    c.wait_for(Duration::from_secs(10), "host 2 to see the overlay", |c| {
        Ok(c.hosts[1].ferry(&["network", "inspect", "ov"])?.success())
    })?;
    h2.run_server("far", &["--network", "ov"], "tcp", 80)?;
    h1.run_idle("near", &["--network", "ov"])?;
    let far = h2.ip_of("far", "ov")?;
    h1.expect_reach(At::Sandbox("near"), "tcp", &far, 80)
        .context("once the port is free")?;
    let dev2 = tunnel_dev(h1, "ov2")?;
    let shown = h1.in_host("ip", &["-o", "link", "show", &dev2])?;
    ensure!(
        shown.success() && shown.stdout.contains(",UP"),
        "ov2's device is up on host 1 too:\n{shown}"
    );
    c.finish()
}

/// Poll `check` every 200 ms until it holds, at most `within`.
fn until(within: Duration, what: &str, check: impl Fn() -> Result<bool>) -> Result<()> {
    let t = std::time::Instant::now();
    while !check()? {
        ensure!(t.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// A host that dies holding an address block loses it to a host that has none left, once
/// its lease expired and its grace period is over; coming back, the sandbox it still runs
/// at an address of that block is not published over the new owner's.
#[test]
fn a_dead_hosts_block_goes_to_a_host_with_none_left_after_the_grace_period() -> Result<()> {
    let opts = ClusterOpts {
        block_grace_secs: Some(2),
        ..ClusterOpts::default()
    };
    let Some(mut c) = cluster("overlay-reclaim", opts)? else {
        return Ok(());
    };
    // --ip-range /28: four /30 blocks, two addresses each in the first (the gateway's).
    c.overlay_everywhere(
        "ov",
        &["--subnet", "10.71.0.0/24", "--ip-range", "10.71.0.0/28"],
    )?;
    let (left, right) = c.hosts.split_at_mut(1);
    let (h1, h2) = (&left[0], &mut right[0]);
    h1.run_idle("near0", &["--network", "ov"])?;
    h2.run_server("far", &["--network", "ov"], "tcp", 80)?;
    let far = h2.ip_of("far", "ov")?;
    // far's /30 block, by its first address.
    let block_of = |ip: std::net::Ipv4Addr| u32::from(ip) & !3;
    let far_block = block_of(far.parse()?);
    // Control: the far sandbox answers across hosts while host 2 lives.
    h1.expect_reach(At::Sandbox("near0"), "tcp", &far, 80)?;
    let mut taken = None;
    h2.restart_kill9_with(|| {
        taken = Some((|| -> Result<String> {
            until(Duration::from_secs(10), "host 2's lease to expire", || {
                Ok(!h1.ferry_ok(&["node", "ls"])?.contains("host2"))
            })?;
            // Fill host 1's blocks, then wait for host 2's to come free.
            let t = std::time::Instant::now();
            for i in 1.. {
                let name = format!("s{i}");
                let out = h1.ferry(&[
                    "run",
                    "-d",
                    "--name",
                    &name,
                    "--network",
                    "ov",
                    "--",
                    BUSYBOX,
                    "sleep",
                    "600",
                ])?;
                if !out.success() {
                    ensure!(
                        out.stderr.contains("no free address block"),
                        "run {name}: {out}"
                    );
                    ensure!(
                        t.elapsed() < Duration::from_secs(20),
                        "no block came free: {out}"
                    );
                    let _ = h1.ferry(&["rm", "-f", &name]);
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                }
                let ip: std::net::Ipv4Addr = h1.ip_of(&name, "ov")?.parse()?;
                if block_of(ip) == far_block {
                    return Ok(ip.to_string());
                }
            }
            unreachable!()
        })());
    })?;
    let taken = taken.context("the fill did not run")??;
    let blocks = h1.ferry_ok(&["node", "inspect", "host1", "--format", "{{.Blocks}}"])?;
    ensure!(
        blocks.trim() == "4",
        "host 1 holds every block now: {blocks}"
    );
    // Host 2 is back and still runs `far`: its address is host 1's to give now, so it
    // is not published, and host 2 says so.
    until(Duration::from_secs(10), "host 2 to rejoin", || {
        Ok(h1.ferry_ok(&["node", "ls"])?.contains("host2"))
    })?;
    until(
        Duration::from_secs(10),
        "host 2 to refuse far's record",
        || Ok(h2.log_tail(200).contains("is another host's now")),
    )?;
    let published = h1.ferry_ok(&["node", "inspect", "host2", "--format", "{{.Endpoints}}"])?;
    ensure!(
        published.trim() == "0",
        "host 2 published {published} endpoint(s): far's stale record is in the cluster"
    );
    // The sandbox host 1 placed in the reclaimed block is reached from host 1 by its address.
    let name = h1
        .ferry_ok(&["ps", "--format", "{{.Names}}"])?
        .lines()
        .find(|n| h1.ip_of(n, "ov").is_ok_and(|ip| ip == taken))
        .map(str::to_string)
        .context("no sandbox holds the taken address")?;
    ensure!(!name.is_empty());
    c.finish()
}

/// `count` pings from the sandbox whose namespace pin is `pin` to `ip`, 5 ms apart;
/// how many were answered.
fn pings(pin: &std::path::Path, ip: &str, count: u32) -> Result<u32> {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={}", pin.display()))
        .args([
            "ping",
            "-q",
            "-n",
            "-i",
            "0.005",
            "-W",
            "1",
            "-c",
            &count.to_string(),
            ip,
        ])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let received = text
        .split(',')
        .find_map(|part| part.trim().strip_suffix(" received")?.parse().ok())
        .with_context(|| format!("ping's summary: {text}"))?;
    Ok(received)
}

/// Between hosts of one overlay, the shortcut carries a sandbox's packets straight from
/// its veth to the overlay's VXLAN device, and from the far host's device straight into
/// the receiving sandbox: the sending host's bridge takes in nothing and the receiving
/// bridge hands the server nothing while 200 pings cross. Controls, on the same
/// sandboxes: with a rule in `user` (which closes the gate) both bridges carry every one
/// of them. With the receiving host's ferryd killed the pings still cross; the next ferryd
/// replaces the programs the dead one left (the kernel's, not the process's) with its
/// own, which carry the pings and which a rule in `user` closes again.
#[test]
fn overlay_traffic_between_hosts_takes_the_shortcut_and_the_bridge_when_it_must() -> Result<()> {
    let opts = ClusterOpts {
        hosts: 2,
        ..ClusterOpts::default()
    };
    let Some(mut c) = cluster("overlay-shortcut", opts)? else {
        return Ok(());
    };
    c.overlay_everywhere("fast", &["--subnet", "10.77.0.0/24"])?;
    let srv_id = c.hosts[0].run_idle("srv", &["--network", "fast"])?;
    let cli_id = c.hosts[1].run_idle("cli", &["--network", "fast"])?;
    let srv = c.hosts[0].ip_of("srv", "fast")?;
    let cli_pin = c.hosts[1].exec_root().join("netns").join(&cli_id[..12]);
    let port = PortCounter::of(&c.hosts[0], &srv_id)?;
    // On the sending host, what the overlay's bridge takes in to route: the pings, when
    // the host routes them into the tunnel.
    let id = c.hosts[1].ferry_ok(&["network", "inspect", "fast", "--format", "{{.Id}}"])?;
    let routed = PortCounter::received_by(&c.hosts[1], &format!("fo-{}", &id[..8]))?;
    const N: u32 = 200;
    let crossed = |port: &PortCounter| -> Result<u64> {
        let (bridged, answered) = port.during(|| pings(&cli_pin, &srv, N))?;
        ensure!(answered == N, "{answered} of {N} pings answered");
        Ok(bridged)
    };
    // The first pings may wait for the routes; then a batch to measure.
    c.wait_for(Duration::from_secs(5), "pings to cross", |_| {
        Ok(pings(&cli_pin, &srv, 3)? == 3)
    })?;
    let (taken_in, bridged) = routed.during(|| crossed(&port))?;
    ensure!(
        bridged < 10,
        "the shortcut did not carry the pings: the bridge sent srv {bridged} packets"
    );
    ensure!(
        taken_in < 10,
        "the shortcut did not send the pings: the sender's bridge took in {taken_in} packets"
    );

    for h in &c.hosts {
        h.nft(&[
            "add", "rule", "inet", "ferry", "user", "meta", "mark", "0x7e57", "counter",
        ])?;
    }
    std::thread::sleep(Duration::from_millis(500));
    let (taken_in, bridged) = routed.during(|| crossed(&port))?;
    ensure!(
        bridged >= u64::from(N) && taken_in >= u64::from(N),
        "with a rule in `user`, the bridge sent srv only {bridged} packets and the sender's \
         bridge took in {taken_in}"
    );
    for h in &c.hosts {
        h.nft(&["flush", "chain", "inet", "ferry", "user"])?;
    }
    std::thread::sleep(Duration::from_millis(500));
    ensure!(
        crossed(&port)? < 10,
        "the shortcut did not come back with `user` empty"
    );

    // srv's ferryd killed: the programs are the kernel's and go on (the pings cross
    // either way); the next ferryd replaces them with its own, which a rule in `user`
    // closes, and opens them again once `user` is empty.
    let mut meanwhile = None;
    c.hosts[0].restart_kill9_with(|| meanwhile = Some(crossed(&port)))?;
    meanwhile.context("the kill's meanwhile did not run")??;
    c.wait_for(
        Duration::from_secs(10),
        "the shortcut after the restart",
        |_| Ok(crossed(&port).is_ok_and(|bridged| bridged < 10)),
    )?;
    for h in &c.hosts {
        h.nft(&[
            "add", "rule", "inet", "ferry", "user", "meta", "mark", "0x7e57", "counter",
        ])?;
    }
    std::thread::sleep(Duration::from_millis(500));
    let bridged = crossed(&port)?;
    ensure!(
        bridged >= u64::from(N),
        "after the restart, a rule in `user` left the shortcut open on srv's host ({bridged} packets by its bridge)"
    );
    for h in &c.hosts {
        h.nft(&["flush", "chain", "inet", "ferry", "user"])?;
    }
    c.finish()
}

/// `system cleanup` on one host takes that host out of the cluster, not the cluster's
/// overlays: the other host keeps the network and its sandbox; the departed host's
/// record and address block leave etcd at once and its tunnel entries leave the other
/// host well inside the lease's TTL (30 s here, so expiry cannot explain it); nothing of
/// the overlay stays in its kernel; at its next start it joins again and its sandboxes
/// reach the other host's over the same network.
#[test]
fn system_cleanup_takes_the_host_out_of_the_cluster_and_leaves_the_overlays() -> Result<()> {
    let opts = ClusterOpts {
        ttl_secs: 30,
        ..ClusterOpts::default()
    };
    let Some(mut c) = cluster("overlay-cleanup", opts)? else {
        return Ok(());
    };
    c.overlay_everywhere("ov", &[])?;
    let web = c.hosts[1].run_web("web2", &["--network", "ov"])?;
    c.hosts[0].run_idle("client", &["--network", "ov"])?;
    let web_ip = c.hosts[1].ip_of("web2", "ov")?;
    let client_ip = c.hosts[0].ip_of("client", "ov")?;
    c.hosts[0].expect_fetch("client", &web_ip, &web)?;
    ensure!(
        tunnel_seen(&c.hosts[1], "ov")?.via(&client_ip) == Some("172.30.0.11"),
        "control: host 2 routes the client's address to host 1"
    );
    let id = c.hosts[0].ferry_ok(&["network", "inspect", "ov", "--format", "{{.Id}}"])?;
    let blocks = |c: &TestCluster| -> Result<String> {
        Ok(c.in_underlay(
            "etcdctl",
            &[
                "--endpoints",
                "172.30.0.1:2379",
                "get",
                "--prefix",
                "/ferry/ov/blk/",
                "--print-value-only",
            ],
        )?
        .expect_success()?
        .stdout)
    };
    ensure!(
        blocks(&c)?.lines().any(|l| l == "host1"),
        "control: host 1 holds a block:\n{}",
        blocks(&c)?
    );

    c.hosts[0].ferry_ok(&["system", "cleanup"])?;
    let left = c.wait_for(Duration::from_secs(10), "host 1 to leave", |c| {
        Ok(!c.hosts[1].ferry_ok(&["node", "ls"])?.contains("host1")
            && tunnel_seen(&c.hosts[1], "ov")?.is_empty())
    })?;
    eprintln!("host 1 gone from host 2's node list and tunnel after {left:?} (TTL 30 s)");
    let held = blocks(&c)?;
    ensure!(
        held.lines().filter(|l| !l.is_empty()).all(|l| l == "host2"),
        "host 1's block is free at once:\n{held}"
    );
    c.hosts[1].run_idle("near", &["--network", "ov"])?;
    c.hosts[1].expect_fetch("near", &web_ip, &web)?;
    let links = c.hosts[0].links()?;
    ensure!(
        !links
            .iter()
            .any(|l| l.ends_with(&id[..8]) || l.starts_with("fy") || l == "ferry0"),
        "links left on host 1: {links:?}"
    );

    c.hosts[0].restart_after_exit()?;
    c.wait_for(Duration::from_secs(10), "host 1 to join again", |c| {
        Ok(c.hosts[0].ferry(&["network", "inspect", "ov"])?.success())
    })?;
    c.hosts[0].run_idle("again", &["--network", "ov"])?;
    c.hosts[0].expect_fetch("again", &web_ip, &web)?;
    c.finish()
}
