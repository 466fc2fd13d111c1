//! ferry as Docker's network plugin, against the real dockerd (Debian's docker.io 20.10):
//! dockerd runs in the test host's network namespace with the host's plugin directory as
//! its /run/docker/plugins (ferry-testkit's Dockerd), and `docker network create -d ferry`
//! reaches ferryd's plugin socket. Containers run a local image imported from Debian's
//! static busybox.

#![allow(clippy::unwrap_used, clippy::too_many_lines)] // test code: a failed unwrap is a failed test

use anyhow::{ensure, Context, Result};
use ferry_testkit::{
    find_dockerd_or_skip, host_or_skip, scenario_name, unique, DockerCli, Dockerd, TestHost, IMAGE,
};
use std::time::{Duration, Instant};

fn expect_fetch(
    dockerd: &Dockerd,
    host: &TestHost,
    from: &str,
    ip: &str,
    want: &str,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if dockerd.fetch(from, ip, 80)?.as_deref() == Some(want) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{from} did not get {want:?} from http://{ip}/ within 15 s\n{}\n{}",
            dockerd.log_tail(20),
            host.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// From the host itself, `127.0.0.1:port` serves `want` (retrying for 10 s).
fn expect_published(host: &TestHost, port: u16, want: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = host.in_host(
            "/bin/busybox",
            &[
                "sh",
                "-c",
                &ferry_testkit::http_get_script("127.0.0.1", port),
            ],
        )?;
        if out.success() && out.out() == want {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "published port {port} did not answer {want:?}:\n{out}\n{}",
            host.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn ferry_network_ids(host: &TestHost) -> Result<Vec<String>> {
    Ok(host
        .ferry_ok(&["network", "ls", "-q", "--no-trunc"])?
        .split_whitespace()
        .map(str::to_string)
        .collect())
}

#[test]
fn docker_runs_containers_on_ferry_networks_through_the_plugin() -> Result<()> {
    let Some(cli) = DockerCli::find_or_skip(scenario_name!()) else {
        return Ok(());
    };
    let Some(dockerd_bin) = find_dockerd_or_skip(scenario_name!()) else {
        return Ok(());
    };
    let mut host = host_or_skip!();
    let dockerd = Dockerd::start(&host, &dockerd_bin, &cli)?;
    dockerd.import_busybox()?;
    let predefined = ferry_network_ids(&host)?;

    // A bad option is refused with ferry's message, and nothing is left behind.
    let bad = dockerd.docker(&[
        "network",
        "create",
        "-d",
        "ferry",
        "--ipam-driver",
        "ferry",
        "--subnet",
        "10.74.0.0/24",
        "-o",
        "com.docker.network.driver.mtu=lots",
        &unique("bad"),
    ])?;
    ensure!(
        !bad.success() && bad.stderr.contains("MTU must be 68..65535"),
        "a bad MTU must fail with ferry's message:\n{bad}"
    );
    let missing = dockerd.docker(&[
        "network",
        "create",
        "-d",
        "ferry",
        "-o",
        "bridge=nosuchbr0",
        &unique("bad"),
    ])?;
    ensure!(
        !missing.success() && missing.stderr.contains("bridge nosuchbr0 does not exist"),
        "-o bridge= of a missing bridge must fail clearly:\n{missing}"
    );
    ensure!(
        ferry_network_ids(&host)? == predefined,
        "a refused create left a network in ferry"
    );

    // Two containers on a ferry network (ferry's IPAM) talk over TCP.
    let (net1, net2) = (unique("fnet"), unique("fnet"));
    let id1 = dockerd.ok(&[
        "network",
        "create",
        "-d",
        "ferry",
        "--ipam-driver",
        "ferry",
        "--subnet",
        "10.71.0.0/24",
        &net1,
    ])?;
    let seen = host.network_inspect(&id1)?;
    ensure!(
        seen["Id"] == id1.as_str() && seen["IPAM"]["Config"][0]["Subnet"] == "10.71.0.0/24",
        "ferry network inspect of Docker's network: {seen}"
    );
    let refused = host.ferry_err(&["network", "rm", &id1])?;
    ensure!(
        refused.stderr.contains("remove it with docker network rm"),
        "ferry network rm of Docker's network:\n{refused}"
    );
    let refused =
        host.ferry_err(&["run", "-d", "--network", &id1, "--", "/bin/busybox", "true"])?;
    ensure!(
        refused
            .stderr
            .contains("only Docker containers can join it"),
        "ferry run on Docker's network:\n{refused}"
    );
    let page = unique("page");
    dockerd.run_web("web", &net1, &page, &["-p", "18080:80"])?;
    dockerd.run_idle("client", &net1)?;
    let web_ip = dockerd.ip_of("web", &net1)?;
    ensure!(web_ip.starts_with("10.71.0."), "web got {web_ip}");
    let seen = host.network_inspect(&id1)?;
    let addrs: Vec<&str> = seen["Containers"]
        .as_object()
        .map(|m| {
            m.values()
                .filter_map(|c| c["IPv4Address"].as_str())
                .collect()
        })
        .unwrap_or_default();
    ensure!(
        addrs.contains(&format!("{web_ip}/24").as_str()) && addrs.len() == 2,
        "ferry network inspect lists Docker's endpoints: {}",
        seen["Containers"]
    );
    expect_fetch(&dockerd, &host, "client", &web_ip, &page)?;

    // A static --ip comes from ferry's IPAM; asking for it again is refused by ferry.
    dockerd.ok(&[
        "run",
        "-d",
        "--name",
        "fixed",
        "--network",
        &net1,
        "--ip",
        "10.71.0.50",
        IMAGE,
        "/bin/busybox",
        "sleep",
        "3600",
    ])?;
    ensure!(
        dockerd.ip_of("fixed", &net1)? == "10.71.0.50",
        "--ip was not honoured"
    );
    let taken = dockerd.docker(&[
        "run",
        "-d",
        "--name",
        "fixed2",
        "--network",
        &net1,
        "--ip",
        "10.71.0.50",
        IMAGE,
        "/bin/busybox",
        "sleep",
        "3600",
    ])?;
    ensure!(
        !taken.success() && taken.stderr.contains("Address already in use"),
        "a second --ip 10.71.0.50 must be refused by ferry:\n{taken}"
    );
    dockerd.ok(&["rm", "-f", "fixed", "fixed2"])?;

    // A second network with Docker's own IPAM, on a bridge the user made (the seed
    // article's -o bridge=NAME).
    host.host_ip(&["link", "add", "br-seed", "type", "bridge"])?;
    host.host_ip(&["addr", "add", "10.72.0.1/24", "dev", "br-seed"])?;
    host.host_ip(&["link", "set", "br-seed", "up"])?;
    dockerd.ok(&[
        "network",
        "create",
        "-d",
        "ferry",
        "-o",
        "bridge=br-seed",
        "--subnet",
        "10.72.0.0/24",
        &net2,
    ])?;
    let page2 = unique("page");
    dockerd.run_web("web2", &net2, &page2, &[])?;
    dockerd.run_idle("client2", &net2)?;
    let web2_ip = dockerd.ip_of("web2", &net2)?;
    expect_fetch(&dockerd, &host, "client2", &web2_ip, &page2)?;

    // ferry's firewall: the other network cannot reach web (dropped); its published port
    // answers, and client2 reaches web2 on its own network (the controls).
    dockerd.expect_dropped("client2", &web_ip, 80)?;
    expect_fetch(&dockerd, &host, "client2", &web2_ip, &page2)?;
    expect_published(&host, 18080, &page)?;
    // Hairpin: web reaches its own published port through its gateway.
    ensure!(
        dockerd.fetch("web", "10.71.0.1", 18080)?.as_deref() == Some(page.as_str()),
        "web did not reach its own published port through 10.71.0.1:18080"
    );

    // ferryd restarts while dockerd runs: connectivity stays, later calls still work.
    host.restart_kill9()?;
    expect_fetch(&dockerd, &host, "client", &web_ip, &page)?;
    dockerd.ok(&["network", "connect", &net2, "client"])?;
    expect_fetch(&dockerd, &host, "client", &web2_ip, &page2)?;
    dockerd.ok(&["network", "disconnect", &net2, "client"])?;
    dockerd.ok(&["restart", "-t", "1", "web"])?;
    let web_ip = dockerd.ip_of("web", &net1)?;
    expect_fetch(&dockerd, &host, "client", &web_ip, &page)?;
    expect_published(&host, 18080, &page)?;

    // An internal network: Join gives no gateway and DisableGatewayService, so the
    // container has no default route and dockerd adds no docker_gwbridge.
    let net3 = unique("inet");
    dockerd.ok(&[
        "network",
        "create",
        "-d",
        "ferry",
        "--internal",
        "--subnet",
        "10.76.0.0/24",
        &net3,
    ])?;
    dockerd.run_idle("lonely", &net3)?;
    let routes = dockerd.ok(&["exec", "lonely", "/bin/busybox", "ip", "route"])?;
    ensure!(
        routes.contains("10.76.0.0/24") && !routes.contains("default"),
        "routes on an internal network:\n{routes}"
    );
    let nets = dockerd.ok(&["network", "ls", "--format", "{{.Name}}"])?;
    ensure!(
        !nets.contains("docker_gwbridge"),
        "dockerd made docker_gwbridge:\n{nets}"
    );

    // docker rm -f and network rm leave nothing of ferry's in the kernel or the store.
    dockerd.ok(&["rm", "-f", "web", "client", "web2", "client2", "lonely"])?;
    dockerd.ok(&["network", "rm", &net1, &net2, &net3])?;
    ensure!(
        ferry_network_ids(&host)? == predefined,
        "ferry still has Docker's networks: {:?}",
        host.user_networks()?
    );
    let links = host.links()?;
    ensure!(
        links.iter().any(|l| l == "br-seed"),
        "ferry removed the user's bridge br-seed: {links:?}"
    );
    let localnet = host.in_host("cat", &["/proc/sys/net/ipv4/conf/br-seed/route_localnet"])?;
    ensure!(
        localnet.out() == "0",
        "ferry left route_localnet={} on the user's bridge",
        localnet.out()
    );
    host.host_ip(&["link", "del", "br-seed"])?;
    let left = host.leftovers()?;
    ensure!(left.is_empty(), "left in the kernel:\n{left}");
    let data_root = host.data_root().to_path_buf();
    let mut stored = None;
    host.restart_kill9_with(|| stored = Some(stored_plugin_state(&data_root)))?;
    let stored = stored.context("store not read")??;
    ensure!(stored.is_empty(), "left in ferry's store: {stored:?}");

    dockerd.stop()?;
    host.finish()
}

/// The plugin's records and Docker networks in the store (read while ferryd is down).
fn stored_plugin_state(data_root: &std::path::Path) -> Result<Vec<String>> {
    let store = ferry_store::RedbStore::open(&data_root.join("ferry.redb"))?;
    let st = ferryd::state::State::load(&store)?;
    let mut left: Vec<String> = st
        .plugin
        .pools
        .keys()
        .map(|k| format!("pool {k}"))
        .chain(st.plugin.networks.keys().map(|k| format!("network {k}")))
        .chain(st.plugin.endpoints.keys().map(|k| format!("endpoint {k}")))
        .collect();
    left.extend(
        st.networks
            .values()
            .filter(|n| !n.predefined)
            .map(|n| format!("ferry network {}", n.name)),
    );
    Ok(left)
}
