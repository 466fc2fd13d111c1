//! The Docker plugin across two hosts: two dockerd 20.10 (Debian's docker.io), each in its
//! own host namespace of a [`TestCluster`] with that host's ferryd as its plugin, all
//! ferryds on one etcd. Each dockerd makes its own Docker network with
//! `-o ferry.overlay=NAME`, and both are the one ferry overlay NAME: no Swarm, no
//! `--cluster-store` on dockerd.

#![allow(clippy::unwrap_used, clippy::too_many_lines)] // test code: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use ferry_testkit::cluster::{ClusterOpts, TestCluster};
use ferry_testkit::{find_dockerd_or_skip, DockerCli, Dockerd, IMAGE};

/// The two overlays' subnets (unique to this file among the tests).
const SUBNET: &str = "10.213.0.0/24";
const SUBNET2: &str = "10.214.0.0/24";

/// `docker network create` of a Docker network that is this host's view of overlay `name`.
fn overlay_network(d: &Dockerd, name: &str, subnet: &str) -> Result<()> {
    d.ok(&[
        "network",
        "create",
        "-d",
        "ferry",
        "--ipam-driver",
        "ferry",
        "--subnet",
        subnet,
        "-o",
        &format!("ferry.overlay={name}"),
        name,
    ])?;
    Ok(())
}

/// `from` gets `want` from http://ip/ within 15 s (the first packets across the tunnel
/// may race the other host's entries).
fn expect_fetch(d: &Dockerd, c: &TestCluster, from: &str, ip: &str, want: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if d.fetch(from, ip, 80)?.as_deref() == Some(want) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let logs: Vec<String> = c.hosts.iter().map(|h| h.log_tail(15)).collect();
            anyhow::bail!(
                "{from} did not get {want:?} from http://{ip}/ within 15 s\n{}\n{}",
                d.log_tail(20),
                logs.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn the_docker_plugin_across_two_hosts_shares_one_overlay_and_keeps_other_networks_out() -> Result<()>
{
    let scenario = "docker-overlay";
    if !ferry_testkit::privileged(scenario) || !ferry_testkit::etcd::etcd_or_skip(scenario) {
        return Ok(());
    }
    let Some(cli) = DockerCli::find_or_skip(scenario) else {
        return Ok(());
    };
    let Some(dockerd_bin) = find_dockerd_or_skip(scenario) else {
        return Ok(());
    };
    // Dropped in reverse: the dockerds (containers, Docker networks) before the cluster
    // (overlays, etcd, namespaces), on failure too.
    let mut c = TestCluster::start(scenario, ClusterOpts::default())?;
    let (h1, h2) = (&c.hosts[0], &c.hosts[1]);
    let a = Dockerd::start(h1, &dockerd_bin, &cli)?;
    let b = Dockerd::start(h2, &dockerd_bin, &cli)?;
    a.import_busybox()?;
    b.import_busybox()?;

    // Docker's own IPAM would hand out the same addresses on both hosts: refused.
    let own_ipam = a.docker(&[
        "network",
        "create",
        "-d",
        "ferry",
        "--subnet",
        SUBNET,
        "-o",
        "ferry.overlay=dov-net",
        "dov-bad",
    ])?;
    ensure!(
        !own_ipam.success() && own_ipam.stderr.contains("needs ferry's IPAM"),
        "an overlay with Docker's IPAM must be refused:\n{own_ipam}"
    );

    // A global network needs a cluster store or Swarm in dockerd: not the way.
    let global = a.docker(&[
        "network", "create", "-d", "ferry", "--scope", "global", "dov-g",
    ])?;
    ensure!(
        !global.success() && global.stderr.contains("This node is not a swarm manager"),
        "dockerd without a cluster store refuses a global network:\n{global}"
    );

    // The same command on each host; the first made the overlay, the second joined it.
    for d in [&a, &b] {
        overlay_network(d, "dov-net", SUBNET)?;
        overlay_network(d, "dov-net2", SUBNET2)?;
    }
    for h in [h1, h2] {
        let overlays = h.ferry_ok(&["network", "ls", "--filter", "driver=overlay"])?;
        ensure!(
            overlays.contains("dov-net ") && overlays.contains("dov-net2 "),
            "{}: ferry's overlays:\n{overlays}",
            h.scenario()
        );
    }
    // A subnet other than the overlay's is refused, naming the right one.
    let wrong = b.docker(&[
        "network",
        "create",
        "-d",
        "ferry",
        "--ipam-driver",
        "ferry",
        "--subnet",
        "10.215.0.0/24",
        "-o",
        "ferry.overlay=dov-net",
        "dov-wrong",
    ])?;
    ensure!(
        !wrong.success() && wrong.stderr.contains(&format!("--subnet {SUBNET}")),
        "a Docker network with another subnet than the overlay's must be refused:\n{wrong}"
    );

    // web on host 1, client on host 2: TCP across the overlay.
    a.run_web("web", "dov-net", "web", &[])?;
    b.run_idle("client", "dov-net")?;
    let web_ip = a.ip_of("web", "dov-net")?;
    let client_ip = b.ip_of("client", "dov-net")?;
    ensure!(
        web_ip != client_ip,
        "both hosts gave {web_ip}: addresses must come from each host's own block"
    );
    expect_fetch(&b, &c, "client", &web_ip, "web")?;
    // The container's interface has the overlay's MTU (underlay 1500 less VXLAN's 50).
    let link = b.ok(&[
        "exec",
        "client",
        "/bin/busybox",
        "ip",
        "-o",
        "link",
        "show",
        "eth0",
    ])?;
    ensure!(link.contains("mtu 1450"), "client's eth0: {link}");

    // A static --ip outside both hosts' blocks is claimed in etcd: host 2 cannot take it
    // again, and reaches the container holding it.
    let pinned = "10.213.0.200";
    a.run_web("pinned", "dov-net", "pinned", &["--ip", pinned])?;
    let dup = b.docker(&[
        "run",
        "-d",
        "--name",
        "dup",
        "--network",
        "dov-net",
        "--ip",
        pinned,
        IMAGE,
        "/bin/busybox",
        "sleep",
        "3600",
    ])?;
    ensure!(
        !dup.success()
            && dup
                .stderr
                .contains(&format!("Address already in use: {pinned}")),
        "host 2 must not take host 1's static address:\n{dup}"
    );
    expect_fetch(&b, &c, "client", pinned, "pinned")?;

    // A ferry sandbox on host 2 shares the overlay with dockerd's containers.
    h2.run_idle("fclient", &["--network", "dov-net"])?;
    c.wait_for(
        Duration::from_secs(15),
        "the ferry sandbox on host 2 to get web's page",
        |_| {
            let page = h2.fetch("fclient", &web_ip)?;
            Ok(page.success() && page.out() == "web")
        },
    )?;

    // dov-net2: its server on host 1 answers strangers on both hosts (the control)...
    a.run_web("srv2", "dov-net2", "srv2", &[])?;
    b.run_idle("stranger", "dov-net2")?;
    a.run_idle("stranger1", "dov-net2")?;
    let srv2_ip = a.ip_of("srv2", "dov-net2")?;
    expect_fetch(&b, &c, "stranger", &srv2_ip, "srv2")?;
    expect_fetch(&a, &c, "stranger1", &srv2_ip, "srv2")?;
    // ...but neither reaches web, from the other host or from web's own.
    b.expect_dropped("stranger", &web_ip, 80)?;
    a.expect_dropped("stranger1", &web_ip, 80)?;

    // ferryd on host 1 killed under its dockerd and started again: from its store and
    // etcd it still serves web across hosts, and dockerd's next container runs.
    c.hosts[0].restart_kill9()?;
    expect_fetch(&b, &c, "client", &web_ip, "web")?;
    a.run_idle("late", "dov-net")?;
    let late_ip = a.ip_of("late", "dov-net")?;
    ensure!(
        ![&web_ip, &client_ip, pinned].contains(&late_ip.as_str()),
        "the restarted ferryd gave out {late_ip} again"
    );
    let (h1, h2) = (&c.hosts[0], &c.hosts[1]);

    // The end: containers and Docker networks go with the dockerds; then no host has an
    // endpoint left in etcd, so ferry removes the overlays (each host's dockerd only
    // forgot its mapping).
    h2.ferry_ok(&["rm", "-f", "fclient"])?;
    a.stop()?;
    b.stop()?;
    for net in ["dov-net", "dov-net2"] {
        c.wait_for(
            Duration::from_secs(10),
            &format!("{net}'s Docker endpoints to leave etcd"),
            |_| Ok(h1.ferry(&["network", "rm", net])?.success()),
        )?;
    }
    c.finish()
}
