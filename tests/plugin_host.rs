//! ferryd hosting third-party libnetwork plugins (issue 16): discovery as dockerd's, a
//! remote network driver driven through its calls in dockerd's order, dockerd's half of
//! Join done by ferryd, and rollback when the plugin fails.
//!
//! The plugin is a real process: `tests/plugins/seed_driver.py`, written the way the seed
//! article's plugin is (`-o bridge=BR` must name an existing bridge; each endpoint is a
//! veth pair with one end on it). It runs in the test host's network namespace, listens
//! on TCP or a unix socket of the test's own directory, and records every call it gets.
//! ferryd is pointed at the test's own plugin directories with `--plugin-sockets` and
//! `--plugin-specs`, never /run/docker/plugins or /etc/docker/plugins.

#![allow(clippy::unwrap_used, clippy::too_many_lines)] // test code: a failed unwrap is a failed test

use anyhow::{ensure, Context, Result};
use ferry_testkit::{At, NoReach, TestHost};
use std::time::{Duration, Instant};

#[path = "plugins/harness.rs"]
mod harness;
use harness::*;

const SEED_CREATE: [&str; 9] = [
    "network",
    "create",
    "-d",
    "mynetwork",
    "mynet",
    "-o",
    "bridge=br1",
    "--ip-range=10.0.1.1/24",
    "--subnet=10.0.1.1/24",
];

fn seed_create(host: &TestHost) -> Result<ferry_testkit::Output> {
    host.ferry(&SEED_CREATE)
}

/// The end of a scenario: nothing attached to `net`, the network removed, the plugin's
/// bridge deleted, and nothing of ferry's left in the kernel.
fn remove_and_check(host: &TestHost, net: &str, bridge: &str) -> Result<()> {
    expect_nothing_attached(host, net)?;
    host.ferry_ok(&["network", "rm", net])?;
    if host.user_networks()?.iter().any(|n| n == "docker_gwbridge") {
        host.ferry_ok(&["network", "rm", "docker_gwbridge"])?;
    }
    host.in_host("ip", &["link", "del", bridge])?
        .expect_success()?;
    expect_no_leftovers(host)?;
    Ok(())
}

#[test]
fn the_seed_scenario_over_tcp_through_a_json_spec_file() -> Result<()> {
    let dirs = PluginDirs::new()?;
    let Some(host) = start_host(ferry_testkit::scenario_name!(), &dirs, 5, 0)? else {
        return Ok(());
    };
    std::fs::write(
        dirs.etc().join("mynetwork.json"),
        r#"{"Name": "mynetwork", "Addr": "tcp://127.0.0.1:8010"}"#,
    )?;
    let plugin = SeedPlugin::start(&host, &dirs.root, &["--tcp", "127.0.0.1:8010"], &[])?;

    // br1 does not exist yet: the plugin refuses, ferry says so and keeps nothing.
    let out = seed_create(&host)?.expect_failure()?;
    ensure!(
        out.stderr.contains("bridge br1 does not exist") && out.stderr.contains("mynetwork"),
        "the refusal does not name the plugin and its reason:\n{out}"
    );
    ensure!(
        !host.user_networks()?.contains(&"mynet".to_string()),
        "a refused create left mynet in the store"
    );
    let first = plugin.methods()?;
    ensure!(
        first == ["Activate", "GetCapabilities", "CreateNetwork"],
        "first use: {first:?}"
    );

    // The control: with br1 there, the same command works.
    make_bridge(&host, "br1", "10.0.1.1/24")?;
    plugin.clear()?;
    seed_create(&host)?.expect_success()?;
    let calls = plugin.calls()?;
    ensure!(
        calls.len() == 1,
        "a second create re-activated the plugin: {calls:?}"
    );
    let body = &calls[0].1;
    // The fields dockerd sends (fixture P:p24), with the seed's values.
    ensure!(
        keys(body) == ["IPv4Data", "IPv6Data", "NetworkID", "Options"],
        "CreateNetwork fields: {body}"
    );
    ensure!(body["Options"]["com.docker.network.generic"] == serde_json::json!({"bridge": "br1"}));
    ensure!(body["Options"]["com.docker.network.enable_ipv6"] == false);
    ensure!(
        body["IPv4Data"]
            == serde_json::json!([{"AddressSpace": "LocalDefault", "Pool": "10.0.1.0/24", "Gateway": "10.0.1.1/24"}]),
        "IPv4Data: {}",
        body["IPv4Data"]
    );
    let net = host.network_inspect("mynet")?;
    ensure!(
        net["Driver"] == "mynetwork",
        "inspect shows Driver {}",
        net["Driver"]
    );

    // The seed's plugin names no gateway, so s1's way out is docker_gwbridge; made
    // beforehand, as dockerd's users do to choose its subnet, it is used as it is.
    host.ferry_ok(&[
        "network",
        "create",
        "--subnet",
        "10.13.0.0/24",
        "docker_gwbridge",
    ])?;
    plugin.clear()?;
    host.run_server("s1", &["--network", "mynet"], "tcp", 8080)?;
    let ip = host.ip_of("s1", "mynet")?;
    ensure!(ip == "10.0.1.2", "s1 got {ip}, not the seed's 10.0.1.2");
    let addrs = host.sandbox_ipv4("s1")?;
    ensure!(
        addrs.contains(&("eth0".to_string(), "10.0.1.2/24".to_string())),
        "s1's addresses: {addrs:?}"
    );
    expect_default_route(&host, "s1", "10.13.0.1", "eth1")?;
    // The plugin chose no MAC: ferry's (02:42 + the address), as inspect says.
    let mac = host.inspect("s1")?["NetworkSettings"]["Networks"]["mynet"]["MacAddress"].clone();
    ensure!(mac == "02:42:0a:00:01:02", "inspect shows MAC {mac}");
    let link = host
        .exec(
            "s1",
            &[ferry_testkit::BUSYBOX, "ip", "link", "show", "eth0"],
        )?
        .expect_success()?;
    ensure!(
        link.stdout.contains("02:42:0a:00:01:02"),
        "eth0 is not 02:42:0a:00:01:02:\n{link}"
    );
    let on_br1 = host
        .in_host("ip", &["-o", "link", "show", "master", "br1"])?
        .expect_success()?;
    ensure!(
        on_br1.stdout.contains("veth-"),
        "br1 holds no veth:\n{on_br1}"
    );
    let run = plugin.calls()?;
    let methods: Vec<String> = run.iter().map(|(m, _)| short(m)).collect();
    // The seed's plugin names no gateway in Join: the endpoint is not the gateway
    // endpoint, and s1's way out is docker_gwbridge, as dockerd gives it (P:p27).
    ensure!(methods == ["CreateEndpoint", "Join"], "run: {methods:?}");
    // The fields dockerd sends (fixture P:p25).
    ensure!(keys(&run[0].1) == ["EndpointID", "Interface", "NetworkID", "Options"]);
    ensure!(
        run[0].1["Interface"]
            == serde_json::json!({"Address": "10.0.1.2/24", "AddressIPv6": "", "MacAddress": ""})
    );
    ensure!(keys(&run[1].1) == ["EndpointID", "NetworkID", "Options", "SandboxKey"]);

    // Real TCP: the host side reaches s1, and a second sandbox on mynet does too.
    host.expect_reach(At::Host, "tcp", "10.0.1.2", 8080)?;
    host.run_idle("s2", &["--network", "mynet"])?;
    ensure!(host.ip_of("s2", "mynet")? == "10.0.1.3");
    host.expect_reach(At::Sandbox("s2"), "tcp", "10.0.1.2", 8080)?;
    // Names on the plugin's network, as dockerd gives them: br1 holds the gateway in
    // ferryd's namespace, so the responder listens there and s2 is pointed at it.
    let resolv = host
        .exec("s2", &["cat", "/etc/resolv.conf"])?
        .expect_success()?;
    ensure!(
        resolv.stdout.contains("nameserver 10.0.1.1"),
        "s2's resolv.conf:\n{resolv}"
    );
    let found = host.exec("s2", &[ferry_testkit::BUSYBOX, "nslookup", "s1"])?;
    ensure!(
        found.success() && found.stdout.contains("10.0.1.2"),
        "s2 cannot resolve s1 on mynet:\n{found}"
    );
    // The control: a plugin network whose gateway this namespace does not hold (its
    // bridge has no address) cannot have the responder, so its sandbox keeps the host's
    // resolvers rather than a name server nobody answers at.
    for args in [
        vec!["link", "add", "br9", "type", "bridge"],
        vec!["link", "set", "br9", "up"],
    ] {
        host.in_host("ip", &args)?.expect_success()?;
    }
    host.ferry_ok(&[
        "network",
        "create",
        "-d",
        "mynetwork",
        "--subnet",
        "10.0.9.0/24",
        "-o",
        "bridge=br9",
        "bare",
    ])?;
    host.run_idle("s9", &["--network", "bare"])?;
    let resolv = host
        .exec("s9", &["cat", "/etc/resolv.conf"])?
        .expect_success()?;
    ensure!(
        !resolv.stdout.contains("10.0.9.1"),
        "s9 is pointed at a gateway no one answers at:\n{resolv}"
    );
    host.ferry_ok(&["rm", "-f", "s9"])?;
    host.ferry_ok(&["network", "rm", "bare"])?;
    host.in_host("ip", &["link", "del", "br9"])?
        .expect_success()?;
    // The seed's "a sandbox on the default network cannot reach it", with its control:
    // the same sandbox reaches a server on its own network.
    host.run_server("d1", &[], "tcp", 8080)?;
    host.run_idle("d2", &[])?;
    let d1 = host.ip_of("d1", "bridge")?;
    host.expect_reach(At::Sandbox("d2"), "tcp", &d1, 8080)?;
    host.expect_no_reach(At::Sandbox("d2"), "tcp", "10.0.1.2", 8080, NoReach::Timeout)?;
    host.ferry_ok(&["rm", "-f", "d1", "d2"])?;

    plugin.clear()?;
    host.ferry_ok(&["rm", "-f", "s1"])?;
    let methods = plugin.methods()?;
    // Not the gateway endpoint: no RevokeExternalConnectivity (P:p28).
    ensure!(methods == ["Leave", "DeleteEndpoint"], "rm -f: {methods:?}");
    host.ferry_ok(&["rm", "-f", "s2"])?;
    plugin.clear()?;
    host.ferry_ok(&["network", "rm", "mynet"])?;
    ensure!(
        plugin.methods()? == ["DeleteNetwork"],
        "network rm: {:?}",
        plugin.methods()?
    );
    let left = host_links(&host, "veth-")?;
    ensure!(left.is_empty(), "the plugin's veths are left: {left:?}");
    host.in_host("ip", &["link", "del", "br1"])?
        .expect_success()?;
    // docker_gwbridge stays, as dockerd keeps it, until someone removes it.
    host.ferry_ok(&["network", "rm", "docker_gwbridge"])?;
    expect_no_leftovers(&host)?;
    drop(plugin);
    host.finish()
}

#[test]
fn plugin_failures_in_run_are_undone_in_reverse_and_a_restarted_plugin_answers_again_with_routes(
) -> Result<()> {
    let dirs = PluginDirs::new()?;
    let Some(host) = start_host(ferry_testkit::scenario_name!(), &dirs, 5, 0)? else {
        return Ok(());
    };
    // Found as a socket in the sockets directory (NAME.sock).
    let sock = dirs.sockets().join("seed.sock");
    let sock_s = sock.display().to_string();
    let listen = ["--unix", sock_s.as_str()];
    let plugin = SeedPlugin::start(
        &host,
        &dirs.root,
        &listen,
        &["--fail", "NetworkDriver.Join"],
    )?;
    plugin_network(&host, "seed", "pnet", "br7", "10.7.0.0/24")?;

    plugin.clear()?;
    let out = host.ferry(&[
        "run",
        "-d",
        "--name",
        "s1",
        "--network",
        "pnet",
        "--",
        "true",
    ])?;
    let out = out.expect_failure()?;
    ensure!(
        out.stderr.contains("\"seed\"")
            && out.stderr.contains("NetworkDriver.Join")
            && out.stderr.contains("injected"),
        "the error does not name the plugin and the call:\n{out}"
    );
    let m = plugin.methods()?;
    ensure!(
        m == ["CreateEndpoint", "Join", "DeleteEndpoint"],
        "failed Join: {m:?}"
    );
    expect_nothing_attached(&host, "pnet")?;
    host.ferry_ok(&["rm", "-f", "s1"])?;
    drop(plugin);

    // The plugin comes back on the same socket, now failing after the link moved in
    // (ProgramExternalConnectivity goes to the gateway endpoint: Join names one).
    let plugin = SeedPlugin::start(
        &host,
        &dirs.root,
        &listen,
        &[
            "--fail",
            "NetworkDriver.ProgramExternalConnectivity",
            "--join-gateway",
            "10.7.0.1",
        ],
    )?;
    let out = host.ferry(&[
        "run",
        "-d",
        "--name",
        "s2",
        "--network",
        "pnet",
        "--",
        "true",
    ])?;
    let out = out.expect_failure()?;
    ensure!(
        out.stderr
            .contains("NetworkDriver.ProgramExternalConnectivity"),
        "the error does not name the call:\n{out}"
    );
    let m = plugin.methods()?;
    ensure!(
        m == [
            "CreateEndpoint",
            "Join",
            "ProgramExternalConnectivity",
            "Leave",
            "DeleteEndpoint"
        ],
        "failed ProgramExternalConnectivity: {m:?}"
    );
    expect_nothing_attached(&host, "pnet")?;
    host.ferry_ok(&["rm", "-f", "s2"])?;
    drop(plugin);

    // The control: a plugin that fails nothing; the first address was given back. This
    // one answers Join with a gateway and both kinds of static route.
    let plugin = SeedPlugin::start(
        &host,
        &dirs.root,
        &listen,
        &[
            "--join-gateway",
            "10.7.0.1",
            "--onlink-route",
            "192.0.2.0/24",
            "--via-route",
            "198.51.100.0/24=10.7.0.1",
        ],
    )?;
    host.run_server("s3", &["--network", "pnet"], "tcp", 8080)?;
    let ip = host.ip_of("s3", "pnet")?;
    ensure!(
        ip == "10.7.0.2",
        "after two undone starts s3 got {ip}, not 10.7.0.2"
    );
    host.expect_reach(At::Host, "tcp", &ip, 8080)?;
    let routes = host
        .exec("s3", &[ferry_testkit::BUSYBOX, "ip", "route"])?
        .expect_success()?
        .stdout;
    for want in [
        "default via 10.7.0.1 dev eth0",
        "192.0.2.0/24 dev eth0",
        "198.51.100.0/24 via 10.7.0.1 dev eth0",
    ] {
        ensure!(
            routes.contains(want),
            "no `{want}` in s3's routes:\n{routes}"
        );
    }
    host.ferry_ok(&["rm", "-f", "s3"])?;
    remove_and_check(&host, "pnet", "br7")?;
    drop(plugin);
    host.finish()
}

#[test]
fn a_plugin_that_hangs_crashes_or_answers_garbage_fails_the_call_within_the_timeout_and_ferryd_stays_up(
) -> Result<()> {
    let dirs = PluginDirs::new()?;
    let Some(host) = start_host(ferry_testkit::scenario_name!(), &dirs, 2, 0)? else {
        return Ok(());
    };
    // Found through a .spec file in the second spec directory, in a subdirectory.
    let sock = dirs.root.join("hang.sock");
    std::fs::create_dir_all(dirs.lib().join("slow"))?;
    std::fs::write(
        dirs.lib().join("slow").join("slow.spec"),
        format!("unix://{}\n", sock.display()),
    )?;
    let sock_s = sock.display().to_string();
    let listen = ["--unix", sock_s.as_str()];
    let plugin = SeedPlugin::start(
        &host,
        &dirs.root,
        &listen,
        &["--hang", "NetworkDriver.CreateEndpoint"],
    )?;
    plugin_network(&host, "slow", "snet", "br8", "10.8.0.0/24")?;
    let t = Instant::now();
    let out = host.ferry(&[
        "run",
        "-d",
        "--name",
        "h1",
        "--network",
        "snet",
        "--",
        "true",
    ])?;
    let out = out.expect_failure()?;
    let took = t.elapsed();
    ensure!(
        out.stderr.contains("\"slow\"")
            && out.stderr.contains("NetworkDriver.CreateEndpoint")
            && out.stderr.contains("within 2 s"),
        "the error does not name the plugin, the call and the timeout:\n{out}"
    );
    ensure!(took < Duration::from_secs(8), "a 2 s timeout took {took:?}");
    // ferryd still answers.
    host.ferry_ok(&["network", "ls"])?;
    expect_nothing_attached(&host, "snet")?;
    host.ferry_ok(&["rm", "-f", "h1"])?;
    drop(plugin);

    // A plugin that dies in the middle of Join.
    let plugin = SeedPlugin::start(
        &host,
        &dirs.root,
        &listen,
        &["--crash", "NetworkDriver.Join"],
    )?;
    let out = host.ferry(&[
        "run",
        "-d",
        "--name",
        "h2",
        "--network",
        "snet",
        "--",
        "true",
    ])?;
    let out = out.expect_failure()?;
    ensure!(
        out.stderr.contains("\"slow\"") && out.stderr.contains("NetworkDriver.Join"),
        "the error does not name the plugin and the call:\n{out}"
    );
    host.ferry_ok(&["network", "ls"])?;
    expect_nothing_attached(&host, "snet")?;
    host.ferry_ok(&["rm", "-f", "h2"])?;
    drop(plugin);
    // A plugin that answers Join with something that is not JSON: undone as a refusal.
    let plugin = SeedPlugin::start(
        &host,
        &dirs.root,
        &listen,
        &["--garbage", "NetworkDriver.Join"],
    )?;
    let out = host.ferry(&[
        "run",
        "-d",
        "--name",
        "h3",
        "--network",
        "snet",
        "--",
        "true",
    ])?;
    let out = out.expect_failure()?;
    ensure!(
        out.stderr.contains("\"slow\"")
            && out.stderr.contains("NetworkDriver.Join")
            && out.stderr.contains("not JSON"),
        "a garbage answer:\n{out}"
    );
    ensure!(
        plugin.methods()?
            == [
                "Activate",
                "GetCapabilities",
                "CreateEndpoint",
                "Join",
                "DeleteEndpoint"
            ],
        "garbage Join: {:?}",
        plugin.methods()?
    );
    host.ferry_ok(&["rm", "-f", "h3"])?;
    // The seed plugin made its veth before answering: DeleteEndpoint took it away.
    expect_nothing_attached(&host, "snet")?;
    drop(plugin);
    // The plugin is gone for good: network rm still removes the network (a driver
    // cannot veto), and says nothing is left.
    host.ferry_ok(&["network", "rm", "snet"])?;
    ensure!(!host.user_networks()?.contains(&"snet".to_string()));
    host.in_host("ip", &["link", "del", "br8"])?
        .expect_success()?;
    expect_no_leftovers(&host)?;
    host.finish()
}

#[test]
fn an_unknown_driver_is_a_404_naming_the_plugin_ferrys_own_socket_is_never_one_and_plugin_ls_shows_what_is_found(
) -> Result<()> {
    let dirs = PluginDirs::new()?;
    let Some(host) = start_host(ferry_testkit::scenario_name!(), &dirs, 2, 0)? else {
        return Ok(());
    };
    let out = host.ferry(&["network", "create", "-d", "nosuch", "n1"])?;
    let out = out.expect_failure()?;
    ensure!(
        out.stderr.contains("plugin \"nosuch\" not found"),
        "unknown driver:\n{out}"
    );
    // A spec file pointing at ferryd's own Docker-plugin socket is skipped.
    let own = host.plugin_dir().join("ferry.sock");
    ensure!(
        own.exists(),
        "ferryd's plugin socket {} is missing",
        own.display()
    );
    std::fs::write(
        dirs.etc().join("ferry.spec"),
        format!("unix://{}", own.display()),
    )?;
    let out = host.ferry(&["network", "create", "-d", "ferry", "n2"])?;
    let out = out.expect_failure()?;
    ensure!(
        out.stderr.contains("plugin \"ferry\" not found"),
        "ferryd's own socket was used as a plugin:\n{out}"
    );
    // A bad spec file is named.
    std::fs::write(dirs.etc().join("broken.json"), "{\"Addr\": 7}")?;
    let out = host.ferry(&["network", "create", "-d", "broken", "n3"])?;
    let out = out.expect_failure()?;
    ensure!(out.stderr.contains("broken.json"), "bad spec:\n{out}");
    ensure!(
        host.user_networks()?.is_empty(),
        "refused creates left networks: {:?}",
        host.user_networks()?
    );
    // The control: the same kind of spec file naming a live plugin works.
    let sock = dirs.root.join("p.sock");
    let sock_s = sock.display().to_string();
    let plugin = SeedPlugin::start(&host, &dirs.root, &["--unix", &sock_s], &[])?;
    std::fs::write(dirs.etc().join("good.spec"), format!("unix://{sock_s}"))?;
    plugin_network(&host, "good", "n4", "br9", "10.9.0.0/24")?;
    ensure!(host.network_inspect("n4")?["Driver"] == "good");
    // `ferry plugin ls`: what was found, where, and whether it answers.
    std::fs::write(
        dirs.lib().join("dead.spec"),
        "unix:///nonexistent/dead.sock",
    )?;
    let ls = host.ferry_ok(&[
        "plugin",
        "ls",
        "--format",
        "{{.Name}}|{{.Kind}}|{{.Answered}}|{{.Source}}|{{.Error}}",
    ])?;
    let lines: Vec<&str> = ls.lines().collect();
    let good = format!(
        "good|NetworkDriver|true|{}|",
        dirs.etc().join("good.spec").display()
    );
    ensure!(
        lines.contains(&good.as_str()),
        "plugin ls has no {good:?}:\n{ls}"
    );
    ensure!(
        lines
            .iter()
            .any(|l| l.starts_with("dead||false|") && l.contains("cannot connect")),
        "plugin ls does not show dead as not answering:\n{ls}"
    );
    ensure!(
        lines
            .iter()
            .any(|l| l.contains("broken.json") && l.contains("false")),
        "plugin ls does not show the broken spec:\n{ls}"
    );
    ensure!(
        !lines.iter().any(|l| l.starts_with("ferry|")),
        "plugin ls lists ferryd's own socket:\n{ls}"
    );
    host.ferry_ok(&["network", "rm", "n4"])?;
    host.in_host("ip", &["link", "del", "br9"])?
        .expect_success()?;
    drop(plugin);
    host.finish()
}

#[test]
fn connect_and_disconnect_join_and_leave_a_plugin_network_and_the_gateway_role_moves_to_it(
) -> Result<()> {
    let dirs = PluginDirs::new()?;
    let Some(host) = start_host(ferry_testkit::scenario_name!(), &dirs, 5, 0)? else {
        return Ok(());
    };
    let sock = dirs.sockets().join("seed").join("seed.sock");
    std::fs::create_dir_all(sock.parent().unwrap())?;
    let sock_s = sock.display().to_string();
    // This plugin chooses the endpoints' MAC in CreateEndpoint.
    let plugin = SeedPlugin::start(
        &host,
        &dirs.root,
        &["--unix", &sock_s],
        &["--mac", "02:aa:bb:cc:dd:ee", "--join-gateway", "10.6.0.1"],
    )?;
    plugin_network(&host, "seed", "cnet", "br6", "10.6.0.0/24")?;
    host.run_server("c1", &[], "tcp", 8080)?;
    plugin.clear()?;
    host.ferry_ok(&["network", "connect", "cnet", "c1"])?;
    let m = plugin.methods()?;
    // Not the gateway endpoint (c1's default route stays on the default bridge): no
    // ProgramExternalConnectivity, as dockerd (P:p07).
    ensure!(
        m == [
            "CreateEndpoint",
            "Join",
            "EndpointOperInfo",
            "EndpointOperInfo"
        ],
        "connect: {m:?}"
    );
    let addrs = host.sandbox_ipv4("c1")?;
    ensure!(
        addrs.contains(&("eth1".to_string(), "10.6.0.2/24".to_string())),
        "c1's addresses: {addrs:?}"
    );
    let link = host
        .exec(
            "c1",
            &[ferry_testkit::BUSYBOX, "ip", "link", "show", "eth1"],
        )?
        .expect_success()?;
    ensure!(
        link.stdout.contains("02:aa:bb:cc:dd:ee"),
        "eth1 has not the plugin's MAC:\n{link}"
    );
    let mac = host.inspect("c1")?["NetworkSettings"]["Networks"]["cnet"]["MacAddress"].clone();
    ensure!(mac == "02:aa:bb:cc:dd:ee", "inspect shows MAC {mac}");
    host.expect_reach(At::Host, "tcp", "10.6.0.2", 8080)?;
    plugin.clear()?;
    host.ferry_ok(&["network", "disconnect", "cnet", "c1"])?;
    let m = plugin.methods()?;
    ensure!(m == ["Leave", "DeleteEndpoint"], "disconnect: {m:?}");
    let links = host.sandbox_links("c1")?;
    ensure!(
        !links.iter().any(|l| l == "eth1"),
        "eth1 is still in c1: {links:?}"
    );
    expect_nothing_attached(&host, "cnet")?;

    // Back on cnet, then off the default bridge: the plugin endpoint takes the gateway
    // role, as dockerd hands it over (P:p45): ProgramExternalConnectivity, and the
    // default route via the gateway its Join answered.
    host.ferry_ok(&["network", "connect", "cnet", "c1"])?;
    plugin.clear()?;
    host.ferry_ok(&["network", "disconnect", "bridge", "c1"])?;
    let m = plugin.methods()?;
    ensure!(m == ["ProgramExternalConnectivity"], "gateway moved: {m:?}");
    let routes = host
        .exec("c1", &[ferry_testkit::BUSYBOX, "ip", "route"])?
        .expect_success()?
        .stdout;
    ensure!(
        routes.contains("default via 10.6.0.1 dev eth1"),
        "c1's routes after the gateway moved:\n{routes}"
    );
    // A network whose name sorts before cnet takes the role on connect, as in dockerd's
    // order: the plugin hears RevokeExternalConnectivity then, not at c1's end; leaving it
    // hands the role back (ProgramExternalConnectivity again).
    host.create_network("aa-net", &["--subnet", "10.7.0.0/24"])?;
    plugin.clear()?;
    host.ferry_ok(&["network", "connect", "aa-net", "c1"])?;
    let m = plugin.methods()?;
    ensure!(
        m == ["RevokeExternalConnectivity"],
        "aa-net took the role: {m:?}"
    );
    let routes = host
        .exec("c1", &[ferry_testkit::BUSYBOX, "ip", "route"])?
        .expect_success()?
        .stdout;
    ensure!(
        routes.contains("default via 10.7.0.1"),
        "c1's routes after aa-net took the role:\n{routes}"
    );
    plugin.clear()?;
    host.ferry_ok(&["network", "disconnect", "aa-net", "c1"])?;
    let m = plugin.methods()?;
    ensure!(
        m == ["ProgramExternalConnectivity"],
        "the role came back: {m:?}"
    );
    host.ferry_ok(&["network", "rm", "aa-net"])?;
    plugin.clear()?;
    host.ferry_ok(&["rm", "-f", "c1"])?;
    let m = plugin.methods()?;
    ensure!(
        m == ["RevokeExternalConnectivity", "Leave", "DeleteEndpoint"],
        "rm of the new gateway endpoint: {m:?}"
    );
    // Ports published on a plugin's network are the plugin's to publish, as with dockerd:
    // sent with CreateEndpoint, Join and ProgramExternalConnectivity (P:p10), published
    // by ferry nowhere, shown nowhere (P:p11, P:p12).
    plugin.clear()?;
    host.run_idle("p1", &["-p", "8081:80", "--network", "cnet"])?;
    let calls = plugin.calls()?;
    let m: Vec<String> = calls.iter().map(|(m, _)| short(m)).collect();
    ensure!(
        m[..3] == ["CreateEndpoint", "Join", "ProgramExternalConnectivity"],
        "{m:?}"
    );
    let want = serde_json::json!([{"Proto": 6, "IP": "", "Port": 80, "HostIP": "",
                                   "HostPort": 8081, "HostPortEnd": 8081}]);
    for (method, body) in &calls[..3] {
        let sent = &body["Options"]["com.docker.network.portmap"];
        ensure!(*sent == want, "{method}'s port map: {sent}");
    }
    let ports = &host.inspect("p1")?["NetworkSettings"]["Ports"];
    ensure!(
        ports.as_object().is_none_or(|o| o.is_empty()),
        "inspect shows {ports}"
    );
    ensure!(host.ferry_ok(&["port", "p1"])?.trim().is_empty());
    host.ferry_ok(&["rm", "-f", "p1"])?;
    remove_and_check(&host, "cnet", "br6")?;
    drop(plugin);
    host.finish()
}

#[test]
fn after_a_ferryd_restart_a_plugin_network_and_its_endpoints_are_kept_and_torn_down_through_the_plugin(
) -> Result<()> {
    let dirs = PluginDirs::new()?;
    let Some(mut host) = start_host(ferry_testkit::scenario_name!(), &dirs, 5, 0)? else {
        return Ok(());
    };
    let sock = dirs.sockets().join("seed.sock");
    let sock_s = sock.display().to_string();
    let plugin = SeedPlugin::start(&host, &dirs.root, &["--unix", &sock_s], &[])?;
    plugin_network(&host, "seed", "rnet", "br5", "10.5.0.0/24")?;
    host.run_server("r1", &["--network", "rnet"], "tcp", 8080)?;
    host.expect_reach(At::Host, "tcp", "10.5.0.2", 8080)?;
    plugin.clear()?;
    host.restart_kill9()?;
    // ferryd re-sends nothing at start (as dockerd): the endpoint is the kernel's and
    // the plugin's already, and reconcile leaves it alone.
    ensure!(
        plugin.methods()?.is_empty(),
        "a restart sent {:?}",
        plugin.methods()?
    );
    ensure!(host.network_inspect("rnet")?["Driver"] == "seed");
    host.expect_reach(At::Host, "tcp", "10.5.0.2", 8080)?;
    // Its way out, docker_gwbridge (the plugin names no gateway), is ferry's own
    // endpoint: kept and verified by reconcile like any other.
    let gw = gateway_bridge_gateway(&host)?;
    expect_default_route(&host, "r1", &gw, "eth1")?;
    host.ferry_ok(&["rm", "-f", "r1"])?;
    let m = plugin.methods()?;
    ensure!(
        m == ["Activate", "GetCapabilities", "Leave", "DeleteEndpoint"],
        "rm -f after a restart: {m:?}"
    );
    remove_and_check(&host, "rnet", "br5")?;
    drop(plugin);
    host.finish()
}

#[test]
fn an_ipam_plugin_gives_the_pool_and_the_addresses_of_a_ferry_bridge_network() -> Result<()> {
    let dirs = PluginDirs::new()?;
    let Some(host) = start_host(ferry_testkit::scenario_name!(), &dirs, 5, 0)? else {
        return Ok(());
    };
    let ipam = PerlPlugin::start(&host, &dirs.sockets().join("pipam.sock"), &dirs.root)?;
    host.ferry_ok(&["network", "create", "--ipam-driver", "pipam", "inet"])?;
    let calls = ipam.calls()?;
    let m: Vec<&str> = calls.iter().map(|(m, _)| m.as_str()).collect();
    // The plugin is a network driver too: on activation dockerd asks both roles for
    // their capabilities, the network driver's first (P:p01), and uses it as IPAM only.
    ensure!(
        m == [
            "Plugin.Activate",
            "NetworkDriver.GetCapabilities",
            "IpamDriver.GetCapabilities",
            "IpamDriver.GetDefaultAddressSpaces",
            "IpamDriver.RequestPool",
            "IpamDriver.RequestAddress"
        ],
        "create: {m:?}"
    );
    let calls = &calls[1..];
    // As dockerd sends them (P:p01): the plugin's address space, no pool asked for.
    ensure!(
        calls[3].1
            == serde_json::json!({"AddressSpace": "PerlLocal", "Pool": "", "SubPool": "", "Options": {}, "V6": false}),
        "RequestPool: {}",
        calls[3].1
    );
    ensure!(
        calls[4].1
            == serde_json::json!({"PoolID": "PerlLocal/10.66.0.0/24", "Address": "",
                                   "Options": {"RequestAddressType": "com.docker.network.gateway"}}),
        "gateway RequestAddress: {}",
        calls[4].1
    );
    let net = host.network_inspect("inet")?;
    ensure!(net["IPAM"]["Driver"] == "pipam", "IPAM: {}", net["IPAM"]);
    ensure!(
        net["IPAM"]["Config"][0]["Subnet"] == "10.66.0.0/24",
        "IPAM: {}",
        net["IPAM"]
    );

    ipam.clear()?;
    host.run_server("a1", &["--network", "inet"], "tcp", 8080)?;
    host.run_idle("a2", &["--network", "inet"])?;
    // The plugin's choices (it starts at .10), not ferry's (.2).
    ensure!(host.ip_of("a1", "inet")? == "10.66.0.10");
    ensure!(host.ip_of("a2", "inet")? == "10.66.0.11");
    let calls = ipam.calls()?;
    // It requires MACs: ferryd makes each endpoint's first and tells it, and ferry's
    // bridge driver gives the endpoint that MAC (P:p35).
    let told = calls[0].1["Options"]["com.docker.network.endpoint.macaddress"].clone();
    ensure!(
        calls.len() == 2
            && calls[0].1
                == serde_json::json!({"PoolID": "PerlLocal/10.66.0.0/24", "Address": "",
                                      "Options": {"com.docker.network.endpoint.macaddress": told}}),
        "run: {calls:?}"
    );
    let mac = &host.inspect("a1")?["NetworkSettings"]["Networks"]["inet"]["MacAddress"];
    ensure!(
        *mac == told,
        "a1's MAC is {mac}, the plugin was told {told}"
    );
    host.expect_reach(At::Sandbox("a2"), "tcp", "10.66.0.10", 8080)?;

    // A refused address: the run fails naming the plugin and the call, keeps nothing.
    std::fs::write(&ipam.failfile, "IpamDriver.RequestAddress")?;
    ipam.clear()?;
    let out = host.ferry(&[
        "run",
        "-d",
        "--name",
        "a3",
        "--network",
        "inet",
        "--",
        "true",
    ])?;
    let out = out.expect_failure()?;
    ensure!(
        out.stderr.contains("\"pipam\"")
            && out.stderr.contains("IpamDriver.RequestAddress")
            && out.stderr.contains("refused by test"),
        "refused address:\n{out}"
    );
    ipam.expect_methods(&["RequestAddress"], "refused address")?;
    host.ferry_ok(&["rm", "-f", "a3"])?;
    std::fs::remove_file(&ipam.failfile)?;

    ipam.clear()?;
    host.ferry_ok(&["rm", "-f", "a1"])?;
    ipam.expect_methods(&["ReleaseAddress"], "rm -f a1")?;
    ensure!(
        ipam.calls()?[0].1
            == serde_json::json!({"PoolID": "PerlLocal/10.66.0.0/24", "Address": "10.66.0.10"})
    );
    // The released address is the plugin's to hand out again: the control for a3.
    ipam.clear()?;
    host.run_idle("a4", &["--network", "inet"])?;
    ensure!(host.ip_of("a4", "inet")? == "10.66.0.10");
    host.ferry_ok(&["rm", "-f", "a2", "a4"])?;
    ipam.expect_methods(
        &["RequestAddress", "ReleaseAddress", "ReleaseAddress"],
        "a4, rm",
    )?;
    ipam.clear()?;
    host.ferry_ok(&["network", "rm", "inet"])?;
    ipam.expect_methods(&["ReleaseAddress", "ReleasePool"], "network rm")?;
    expect_no_leftovers(&host)?;
    drop(ipam);
    host.finish()
}

#[test]
fn an_ipam_plugin_and_a_network_plugin_together_as_dockerd_drives_them() -> Result<()> {
    let dirs = PluginDirs::new()?;
    let Some(host) = start_host(ferry_testkit::scenario_name!(), &dirs, 5, 0)? else {
        return Ok(());
    };
    let ipam = PerlPlugin::start(&host, &dirs.sockets().join("pipam.sock"), &dirs.root)?;
    let sock = dirs.sockets().join("seed.sock");
    let sock_s = sock.display().to_string();
    // With a gateway in Join: the endpoint is the gateway endpoint, as in P:p02/p13.
    let driver = SeedPlugin::start(
        &host,
        &dirs.root,
        &["--unix", &sock_s],
        &["--join-gateway", "10.66.0.1"],
    )?;
    make_bridge(&host, "br4", "10.66.0.1/24")?;
    host.ferry_ok(&[
        "network",
        "create",
        "-d",
        "seed",
        "--ipam-driver",
        "pipam",
        "-o",
        "bridge=br4",
        "both",
    ])?;
    let create = driver.calls()?;
    let (m, body) = create
        .last()
        .context("no call reached the network plugin")?;
    ensure!(
        short(m) == "CreateNetwork",
        "network plugin calls: {create:?}"
    );
    // The IPAM plugin's address space and pool, as dockerd passes them on (P:p01).
    ensure!(
        body["IPv4Data"]
            == serde_json::json!([{"AddressSpace": "PerlLocal", "Pool": "10.66.0.0/24", "Gateway": "10.66.0.1/24"}]),
        "IPv4Data: {}",
        body["IPv4Data"]
    );
    let net = host.network_inspect("both")?;
    ensure!(
        net["Driver"] == "seed" && net["IPAM"]["Driver"] == "pipam",
        "{net}"
    );
    driver.clear()?;
    ipam.clear()?;
    host.run_server("b1", &["--network", "both"], "tcp", 8080)?;
    ensure!(host.ip_of("b1", "both")? == "10.66.0.10");
    ipam.expect_methods(&["RequestAddress"], "run")?;
    let calls = driver.calls()?;
    ensure!(
        calls[0].1["Interface"]["Address"] == "10.66.0.10/24",
        "CreateEndpoint: {}",
        calls[0].1
    );
    host.expect_reach(At::Host, "tcp", "10.66.0.10", 8080)?;
    driver.clear()?;
    ipam.clear()?;
    host.ferry_ok(&["rm", "-f", "b1"])?;
    ipam.expect_methods(&["ReleaseAddress"], "rm -f")?;
    ensure!(
        driver.methods()? == ["RevokeExternalConnectivity", "Leave", "DeleteEndpoint"],
        "rm -f: {:?}",
        driver.methods()?
    );
    ipam.clear()?;
    driver.clear()?;
    host.ferry_ok(&["network", "rm", "both"])?;
    ipam.expect_methods(&["ReleaseAddress", "ReleasePool"], "network rm")?;
    ensure!(driver.methods()? == ["DeleteNetwork"]);
    ensure!(host_links(&host, "veth-")?.is_empty());
    host.in_host("ip", &["link", "del", "br4"])?
        .expect_success()?;
    expect_no_leftovers(&host)?;
    drop((ipam, driver));
    host.finish()
}

#[test]
fn a_plugin_named_late_is_found_within_the_retry_budget_as_dockerd_retries() -> Result<()> {
    let dirs = PluginDirs::new()?;
    let Some(host) = start_host(ferry_testkit::scenario_name!(), &dirs, 5, 5)? else {
        return Ok(());
    };
    // Nothing ever names it: tries at 0, 1 and 3 s; the next wait (4 s) would end past
    // the 5 s budget, so "not found" comes after about 3 s, not at once and not later.
    let t = Instant::now();
    let out = host.ferry(&["network", "create", "-d", "never", "n0"])?;
    let out = out.expect_failure()?;
    let took = t.elapsed();
    ensure!(out.stderr.contains("plugin \"never\" not found"), "{out}");
    ensure!(
        took >= Duration::from_millis(2800) && took < Duration::from_secs(5),
        "gave up after {took:?}, not after the tries at 0, 1 and 3 s"
    );
    // The control: the plugin listens, and its spec file appears 1.5 s after the
    // create started; the retry at 3 s finds it.
    let sock = dirs.root.join("late.sock");
    let sock_s = sock.display().to_string();
    let plugin = SeedPlugin::start(&host, &dirs.root, &["--unix", &sock_s], &[])?;
    make_bridge(&host, "br3", "10.3.0.1/24")?;
    let spec = dirs.etc().join("late.spec");
    let url = format!("unix://{sock_s}");
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        std::fs::write(spec, url)
    });
    let t = Instant::now();
    let out = host.ferry(&[
        "network",
        "create",
        "-d",
        "late",
        "--subnet",
        "10.3.0.0/24",
        "-o",
        "bridge=br3",
        "n1",
    ])?;
    writer.join().expect("the writer thread")?;
    out.expect_success()?;
    let took = t.elapsed();
    ensure!(
        took >= Duration::from_millis(2800),
        "created after {took:?}: before the spec file was there to find?"
    );
    ensure!(plugin.methods()? == ["Activate", "GetCapabilities", "CreateNetwork"]);
    host.ferry_ok(&["network", "rm", "n1"])?;
    host.in_host("ip", &["link", "del", "br3"])?
        .expect_success()?;
    drop(plugin);
    host.finish()
}

#[test]
fn the_docker_cli_against_ferryd_creates_and_uses_a_plugin_network() -> Result<()> {
    let Some(bin) = ferry_testkit::DockerCli::find_or_skip(ferry_testkit::scenario_name!()) else {
        return Ok(());
    };
    let dirs = PluginDirs::new()?;
    let Some(host) = start_host(ferry_testkit::scenario_name!(), &dirs, 5, 0)? else {
        return Ok(());
    };
    let docker = ferry_testkit::DockerCli::new(&host, &bin)?;
    std::fs::write(
        dirs.etc().join("mynetwork.json"),
        r#"{"Name": "mynetwork", "Addr": "tcp://127.0.0.1:8010"}"#,
    )?;
    let plugin = SeedPlugin::start(&host, &dirs.root, &["--tcp", "127.0.0.1:8010"], &[])?;
    make_bridge(&host, "br1", "10.0.1.1/24")?;
    // The seed's command, through the docker CLI (the Engine API).
    docker.ok(&[
        "network",
        "create",
        "-d",
        "mynetwork",
        "mynet",
        "-o",
        "bridge=br1",
        "--ip-range=10.0.1.1/24",
        "--subnet=10.0.1.1/24",
    ])?;
    let ls = docker.ok(&["network", "ls", "--format", "{{.Name}} {{.Driver}}"])?;
    ensure!(
        ls.lines().any(|l| l == "mynet mynetwork"),
        "docker network ls:\n{ls}"
    );
    // A refusal through the same door: a driver nobody provides.
    let out = docker.run(&["network", "create", "-d", "nosuch", "x"])?;
    ensure!(
        !out.success() && out.stderr.contains("plugin \"nosuch\" not found"),
        "docker network create -d nosuch:\n{out}"
    );
    host.run_server("s1", &["--network", "mynet"], "tcp", 8080)?;
    host.expect_reach(At::Host, "tcp", "10.0.1.2", 8080)?;
    host.ferry_ok(&["rm", "-f", "s1"])?;
    docker.ok(&["network", "rm", "mynet"])?;
    let m = plugin.methods()?;
    ensure!(
        m.first().map(String::as_str) == Some("Activate")
            && m.last().map(String::as_str) == Some("DeleteNetwork"),
        "calls: {m:?}"
    );
    host.in_host("ip", &["link", "del", "br1"])?
        .expect_success()?;
    drop(plugin);
    host.finish()
}

/// A plugin whose Join names no gateway: the sandbox gets a second endpoint on
/// docker_gwbridge, made on first need as dockerd makes it (ICC off, masquerade on),
/// which carries its default route out through the host (P:p27); the plugin hears no
/// ProgramExternalConnectivity, nor Revoke at the end (P:p28). A network that gives a
/// gateway makes it unneeded and it goes; leaving that network brings it back. The
/// control: a plugin that says DisableGatewayService gets none, and its sandbox has no
/// way out (P:p29).
#[test]
fn a_join_without_a_gateway_gets_docker_gwbridge_as_its_way_out_as_dockerd_gives_it() -> Result<()>
{
    let dirs = PluginDirs::new()?;
    let Some(host) = start_host(ferry_testkit::scenario_name!(), &dirs, 5, 0)? else {
        return Ok(());
    };
    let mut peer = host.add_peer("10.251.0.1/24", "10.251.0.2/24")?;
    peer.serve("tcp", 7070)?;
    let sock = dirs.sockets().join("nogw.sock");
    let sock_s = sock.display().to_string();
    let plugin = SeedPlugin::start(&host, &dirs.root, &["--unix", &sock_s], &[])?;
    plugin_network(&host, "nogw", "gnet", "brg", "10.8.0.0/24")?;
    plugin.clear()?;
    let g1 = host.run_idle("g1", &["--network", "gnet"])?;
    ensure!(
        plugin.methods()? == ["CreateEndpoint", "Join"],
        "run: {:?}",
        plugin.methods()?
    );
    let gwnet = host.network_inspect("docker_gwbridge")?;
    let opts = &gwnet["Options"];
    ensure!(
        gwnet["Driver"] == "bridge"
            && opts["com.docker.network.bridge.enable_icc"] == "false"
            && opts["com.docker.network.bridge.enable_ip_masquerade"] == "true",
        "docker_gwbridge is not dockerd's: {gwnet}"
    );
    let entry = &gwnet["Containers"][&g1];
    ensure!(
        entry["Name"] == format!("gateway_{}", &g1[..12]),
        "docker_gwbridge lists g1 as {entry}"
    );
    let shown = host.inspect("g1")?["NetworkSettings"]["Networks"].clone();
    let names: Vec<&String> = shown
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    ensure!(names == ["gnet"], "g1's inspect shows {names:?}");
    let gw = gateway_bridge_gateway(&host)?;
    expect_default_route(&host, "g1", &gw, "eth1")?;
    // Not the user's to take away: g1 is not connected to it, as its inspect says.
    let out = host.ferry_err(&["network", "disconnect", "docker_gwbridge", "g1"])?;
    ensure!(out.stderr.contains("is not connected"), "{out}");
    expect_default_route(&host, "g1", &gw, "eth1")?;
    // Out through the host, masqueraded: the peer sees the host's own address.
    let from = host.expect_reach(At::Sandbox("g1"), "tcp", &peer.ip, 7070)?;
    ensure!(from == "10.251.0.1", "the peer saw {from}, not the host");

    // A ferry bridge gives a gateway: docker_gwbridge's endpoint goes, its route with it.
    host.create_network("fb", &["--subnet", "10.9.0.0/24"])?;
    host.ferry_ok(&["network", "connect", "fb", "g1"])?;
    ensure!(
        expect_nothing_on_gateway_bridge(&host).is_ok(),
        "connected to fb, g1 keeps docker_gwbridge"
    );
    // fb came while docker_gwbridge held eth1.
    expect_default_route(&host, "g1", "10.9.0.1", "eth2")?;
    host.expect_reach(At::Sandbox("g1"), "tcp", &peer.ip, 7070)?;
    // Leaving fb brings it back.
    host.ferry_ok(&["network", "disconnect", "fb", "g1"])?;
    expect_default_route(&host, "g1", &gw, "eth1")?;
    host.expect_reach(At::Sandbox("g1"), "tcp", &peer.ip, 7070)?;
    // It goes with a stop and comes back with the next start (Engine API, as `docker
    // stop` / `docker start`).
    for what in ["stop", "start"] {
        let sock = host.sock().display().to_string();
        let url = format!("http://ferry/containers/g1/{what}");
        let out = host.in_host("curl", &["-sf", "--unix-socket", &sock, "-X", "POST", &url])?;
        out.expect_success()?;
        if what == "stop" {
            wait_until(Duration::from_secs(10), "g1 stopped", || {
                expect_nothing_on_gateway_bridge(&host).is_ok()
            })?;
        }
    }
    expect_default_route(&host, "g1", &gw, "eth1")?;
    host.expect_reach(At::Sandbox("g1"), "tcp", &peer.ip, 7070)?;
    plugin.clear()?;
    host.ferry_ok(&["rm", "-f", "g1"])?;
    ensure!(
        plugin.methods()? == ["Leave", "DeleteEndpoint"],
        "rm -f: {:?}",
        plugin.methods()?
    );
    expect_nothing_on_gateway_bridge(&host)?;

    // Ports published on the plugin's network go to the plugin with its calls, as dockerd
    // sends them (P:p10); without a gateway they are published on docker_gwbridge, as
    // dockerd publishes them on its endpoint there: a peer reaches g3 through the host.
    plugin.clear()?;
    host.run_server(
        "g3",
        &["--network", "gnet", "-p", "18080:8080"],
        "tcp",
        8080,
    )?;
    let calls = plugin.calls()?;
    let sent = &calls[0].1["Options"]["com.docker.network.portmap"];
    ensure!(
        *sent
            == serde_json::json!([{"Proto": 6, "IP": "", "Port": 8080, "HostIP": "",
                                   "HostPort": 18080, "HostPortEnd": 18080}]),
        "CreateEndpoint's port map: {sent}"
    );
    host.expect_reach(At::Peer(&peer), "tcp", "10.251.0.1", 18080)?;
    host.ferry_ok(&["rm", "-f", "g3"])?;

    // The control: DisableGatewayService asks for no way out, and gets none.
    let sock2 = dirs.sockets().join("nosvc.sock");
    let sock2_s = sock2.display().to_string();
    let waived = SeedPlugin::start(
        &host,
        &dirs.root,
        &["--unix", &sock2_s],
        &["--disable-gateway-service"],
    )?;
    plugin_network(&host, "nosvc", "wnet", "brw", "10.10.0.0/24")?;
    waived.clear()?;
    host.run_idle("w1", &["--network", "wnet"])?;
    let m = waived.methods()?;
    ensure!(
        m == [
            "CreateEndpoint",
            "Join",
            "EndpointOperInfo",
            "EndpointOperInfo"
        ],
        "run with DisableGatewayService: {m:?}"
    );
    expect_nothing_on_gateway_bridge(&host)?;
    let routes = host
        .exec("w1", &[ferry_testkit::BUSYBOX, "ip", "route"])?
        .expect_success()?;
    ensure!(
        !routes.stdout.contains("default"),
        "w1 has a default route:\n{routes}"
    );
    host.expect_no_reach(
        At::Sandbox("w1"),
        "tcp",
        &peer.ip,
        7070,
        NoReach::Unreachable,
    )?;
    // Its ports are the plugin's to publish: sent along, not published by ferry.
    waived.clear()?;
    host.run_server(
        "w2",
        &["--network", "wnet", "-p", "18082:8080"],
        "tcp",
        8080,
    )?;
    let calls = waived.calls()?;
    let sent = &calls[0].1["Options"]["com.docker.network.portmap"][0]["HostPort"];
    ensure!(*sent == 18082, "CreateEndpoint's port map: {}", calls[0].1);
    let w2 = host.ip_of("w2", "wnet")?;
    host.expect_reach(At::Host, "tcp", &w2, 8080)?;
    host.expect_no_reach(
        At::Peer(&peer),
        "tcp",
        "10.251.0.1",
        18082,
        NoReach::Refused,
    )?;
    host.ferry_ok(&["rm", "-f", "w1", "w2"])?;
    host.ferry_ok(&["network", "rm", "fb"])?;
    for (net, br) in [("wnet", "brw"), ("gnet", "brg")] {
        expect_nothing_attached(&host, net)?;
        host.ferry_ok(&["network", "rm", net])?;
        host.in_host("ip", &["link", "del", br])?.expect_success()?;
    }
    host.ferry_ok(&["network", "rm", "docker_gwbridge"])?;
    drop(peer);
    expect_no_leftovers(&host)?;
    drop((plugin, waived));
    host.finish()
}

/// No sandbox is on docker_gwbridge (it exists, as dockerd keeps it).
fn expect_nothing_on_gateway_bridge(host: &TestHost) -> Result<()> {
    let net = host.network_inspect("docker_gwbridge")?;
    let c = &net["Containers"];
    ensure!(
        c.as_object().is_none_or(|o| o.is_empty()),
        "docker_gwbridge lists {c}"
    );
    Ok(())
}

/// Poll `ok` every 100 ms until it holds, or fail naming `what` after `within`.
fn wait_until(within: Duration, what: &str, ok: impl Fn() -> bool) -> Result<()> {
    let deadline = Instant::now() + within;
    while !ok() {
        ensure!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// The second, independent plugin (Perl, written from the protocol notes and fixtures)
/// as network *and* IPAM driver at once, as the capture plugin was when dockerd's calls
/// were recorded: for the same commands, ferryd sends it exactly the calls dockerd sent,
/// in dockerd's order (P:p01 create, P:p02 run, P:p20 rm -f, P:p23 network rm), and the
/// sandboxes it joins talk over its bridge.
#[test]
fn an_independent_perl_plugin_as_network_and_ipam_driver_gets_dockerds_calls_in_dockerds_order(
) -> Result<()> {
    let dirs = PluginDirs::new()?;
    let Some(host) = start_host(ferry_testkit::scenario_name!(), &dirs, 5, 0)? else {
        return Ok(());
    };
    let plugin = PerlPlugin::start(&host, &dirs.sockets().join("perl.sock"), &dirs.root)?;
    host.ferry_ok(&[
        "network",
        "create",
        "-d",
        "perl",
        "--ipam-driver",
        "perl",
        "--subnet",
        "10.78.0.0/24",
        "capnet",
    ])?;
    plugin.expect_recorded("p01-create-capnet")?;
    let br = host_links(&host, "pl")?;
    ensure!(br.len() == 1, "the plugin's bridge: {br:?}");
    let net = host.network_inspect("capnet")?;
    ensure!(
        net["Driver"] == "perl" && net["IPAM"]["Driver"] == "perl",
        "{net}"
    );

    plugin.clear()?;
    host.run_server("c1", &["--network", "capnet"], "tcp", 8080)?;
    plugin.expect_recorded("p02-run-c1")?;
    // The plugin's address (from .10 up) and gateway.
    ensure!(host.ip_of("c1", "capnet")? == "10.78.0.10");
    // The plugin requires MACs (as the capture plugin did): ferryd made c1's first,
    // told the IPAM driver, gave it to the network driver, and c1 has it.
    let run = plugin.calls()?;
    let told = run[0].1["Options"]["com.docker.network.endpoint.macaddress"].clone();
    ensure!(
        told.as_str().is_some_and(|m| m.starts_with("02:42:")),
        "RequestAddress was told {told}"
    );
    ensure!(
        run[1].1["Interface"]["MacAddress"] == told,
        "CreateEndpoint: {}",
        run[1].1
    );
    let ep = &host.network_inspect("capnet")?["Containers"];
    let ep = ep
        .as_object()
        .and_then(|o| o.values().next())
        .context("c1 not listed")?;
    ensure!(
        ep["MacAddress"] == told,
        "c1's MAC {} is not {told}",
        ep["MacAddress"]
    );
    let link = host
        .exec(
            "c1",
            &[ferry_testkit::BUSYBOX, "ip", "link", "show", "eth0"],
        )?
        .expect_success()?;
    ensure!(
        link.stdout.contains(told.as_str().unwrap_or_default()),
        "c1's eth0:\n{link}"
    );
    expect_default_route(&host, "c1", "10.78.0.1", "eth0")?;
    // Real TCP over the plugin's bridge: from the host, and from a second sandbox.
    host.expect_reach(At::Host, "tcp", "10.78.0.10", 8080)?;
    host.run_idle("c3", &["--network", "capnet"])?;
    host.expect_reach(At::Sandbox("c3"), "tcp", "10.78.0.10", 8080)?;
    // c3's address is released after its `rm` returns: wait for every call of that
    // `rm` (dockerd's for c1's, P:p20), so none lands among c1's.
    plugin.clear()?;
    host.ferry_ok(&["rm", "-f", "c3"])?;
    plugin.expect_recorded("p20-rm-f-c1")?;

    plugin.clear()?;
    host.ferry_ok(&["rm", "-f", "c1"])?;
    plugin.expect_recorded("p20-rm-f-c1")?;
    plugin.clear()?;
    host.ferry_ok(&["network", "rm", "capnet"])?;
    plugin.expect_recorded("p23-network-rm-capnet")?;
    let left = host_links(&host, "p")?;
    ensure!(left.is_empty(), "the plugin's links are left: {left:?}");
    expect_no_leftovers(&host)?;
    drop(plugin);
    host.finish()
}

/// ferryd driving ferryd: a second ferryd in the same network namespace (its own state,
/// its own plugin socket, `--instance fz` so that its links and tables are its own) is
/// the first one's remote network and IPAM plugin. The network, its addresses and its
/// bridge are the second's; the sandboxes, their namespaces and the links moved into
/// them are the first's; they talk over the second's bridge, and a sandbox on the
/// first's own default bridge cannot reach them (the control reaches them from beside).
#[test]
fn ferryd_drives_a_second_ferryd_as_its_network_and_ipam_plugin() -> Result<()> {
    let dirs = PluginDirs::new()?;
    let Some(host) = start_host(ferry_testkit::scenario_name!(), &dirs, 5, 0)? else {
        return Ok(());
    };
    let b = SecondFerryd::start(&host, &dirs.root.join("second"))?;
    let url = format!("unix://{}", b.plugin_socket().display());
    std::fs::write(dirs.etc().join("ferryb.spec"), url)?;
    host.ferry_ok(&[
        "network",
        "create",
        "-d",
        "ferryb",
        "--ipam-driver",
        "ferryb",
        "--subnet",
        "10.82.0.0/24",
        "fnet",
    ])?;
    // The second ferryd made the network: its bridge (its own link prefix) holds the
    // gateway, and its own `network ls` shows Docker's network.
    let bridges = host_links(&host, "fz-")?;
    ensure!(
        bridges.len() == 1,
        "the second ferryd's bridges: {bridges:?}"
    );
    let tables = host.nft(&["list", "tables"])?;
    for t in [
        "inet ferry\n",
        "inet ferry_fz\n",
        "bridge ferry\n",
        "bridge ferry_fz\n",
    ] {
        ensure!(
            tables.contains(&format!("table {t}")),
            "no table {t} in:\n{tables}"
        );
    }
    let net = host.network_inspect("fnet")?;
    ensure!(
        net["Driver"] == "ferryb" && net["IPAM"]["Driver"] == "ferryb",
        "{net}"
    );
    let id = net["Id"].as_str().context("fnet has no ID")?;
    let theirs = b
        .ferry(&host, &["network", "ls", "--no-trunc"])?
        .expect_success()?;
    ensure!(
        theirs.stdout.contains(id),
        "the second ferryd does not list Docker's network {id}:\n{theirs}"
    );

    host.run_server("s1", &["--network", "fnet"], "tcp", 8080)?;
    host.run_idle("s2", &["--network", "fnet"])?;
    let ip1 = host.ip_of("s1", "fnet")?;
    ensure!(ip1.starts_with("10.82.0."), "s1 got {ip1}");
    // The link in s1 is the second ferryd's pair, moved in by the first (renamed eth0),
    // with the gateway its Join gave.
    expect_default_route(&host, "s1", "10.82.0.1", "eth0")?;
    let theirs_links = host_links(&host, "fz")?;
    ensure!(
        theirs_links
            .iter()
            .filter(|l| !l.starts_with("fz-"))
            .count()
            == 2,
        "the host ends of s1's and s2's pairs on the second's bridge: {theirs_links:?}"
    );
    host.expect_reach(At::Sandbox("s2"), "tcp", &ip1, 8080)?;
    host.expect_reach(At::Host, "tcp", &ip1, 8080)?;
    // Names on the network are the first ferryd's to answer (the sandboxes are its), also
    // once the second has opened its sockets anew after the first's: it serves no names
    // on a network Docker's API made (dockerd answers its containers' names itself).
    let b = b.restart(&host)?;
    let found = host.exec("s2", &[ferry_testkit::BUSYBOX, "nslookup", "s1"])?;
    ensure!(
        found.success() && found.stdout.contains(&ip1),
        "s2 resolves s1 on fnet after the second ferryd restarted:\n{found}"
    );
    host.run_idle("d1", &[])?;
    host.expect_no_reach(At::Sandbox("d1"), "tcp", &ip1, 8080, NoReach::Timeout)?;

    host.ferry_ok(&["rm", "-f", "s1", "s2", "d1"])?;
    host.ferry_ok(&["network", "rm", "fnet"])?;
    ensure!(
        host_links(&host, "fz-")?.is_empty(),
        "the second's bridge is left"
    );
    b.stop(&host)?;
    expect_no_leftovers(&host)?;
    host.finish()
}

/// A sandbox left without a way out gets it at ferryd's next start, as reconcile
/// verifies what the store calls for. Made deterministic: g1 is on a plugin's network
/// whose Join names no gateway and on a ferry bridge; while a veth holds the name
/// docker_gwbridge, leaving the bridge cannot give g1 the gateway bridge (the disconnect
/// stands, the failure is logged: no default route). With the name free again, a ferryd
/// SIGKILLed and restarted gives it docker_gwbridge and its route; the control is the
/// same sandbox, reaching a peer through it afterwards.
#[test]
fn a_sandbox_left_without_a_way_out_gets_it_when_ferryd_starts_again() -> Result<()> {
    let dirs = PluginDirs::new()?;
    let Some(mut host) = start_host(ferry_testkit::scenario_name!(), &dirs, 5, 0)? else {
        return Ok(());
    };
    let mut peer = host.add_peer("10.252.0.1/24", "10.252.0.2/24")?;
    peer.serve("tcp", 7070)?;
    let sock = dirs.sockets().join("nogw.sock");
    let sock_s = sock.display().to_string();
    let plugin = SeedPlugin::start(&host, &dirs.root, &["--unix", &sock_s], &[])?;
    plugin_network(&host, "nogw", "gnet", "brh", "10.11.0.0/24")?;
    host.create_network("fb", &["--subnet", "10.12.0.0/24"])?;
    host.run_idle("g1", &["--network", "fb"])?;
    host.ferry_ok(&["network", "connect", "gnet", "g1"])?;
    ensure!(
        !host
            .user_networks()?
            .contains(&"docker_gwbridge".to_string()),
        "fb gives g1 a gateway: no docker_gwbridge yet"
    );
    let squat = [
        "link",
        "add",
        "docker_gwbridge",
        "type",
        "veth",
        "peer",
        "name",
        "gwsquat",
    ];
    host.in_host("ip", &squat)?.expect_success()?;
    host.ferry_ok(&["network", "disconnect", "fb", "g1"])?;
    let routes = host
        .exec("g1", &[ferry_testkit::BUSYBOX, "ip", "route"])?
        .expect_success()?;
    ensure!(
        !routes.stdout.contains("default"),
        "g1 kept a default route:\n{routes}"
    );
    host.in_host("ip", &["link", "del", "docker_gwbridge"])?
        .expect_success()?;
    host.restart_kill9()?;
    let gw = gateway_bridge_gateway(&host)?;
    // eth0 is free again (fb's), eth1 is the plugin's.
    expect_default_route(&host, "g1", &gw, "eth0")?;
    host.expect_reach(At::Sandbox("g1"), "tcp", &peer.ip, 7070)?;
    host.ferry_ok(&["rm", "-f", "g1"])?;
    host.ferry_ok(&["network", "rm", "fb"])?;
    drop(peer);
    remove_and_check(&host, "gnet", "brh")?;
    drop(plugin);
    host.finish()
}
