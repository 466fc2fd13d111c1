//! Networks across hosts: overlays on etcd. Each scenario builds a [`TestCluster`]: host
//! namespaces on an underlay bridge, a real etcd on it, one ferryd per host.

use std::time::Duration;

use anyhow::{ensure, Result};
use ferry_testkit::cluster::{ClusterOpts, TestCluster};
use ferry_testkit::{At, BUSYBOX};

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
    h2.expect_no_reach(At::Sandbox("stranger"), "tcp", &web_ip, 80)?;
    h1.expect_no_reach(At::Sandbox("stranger1"), "tcp", &web_ip, 80)?;
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
