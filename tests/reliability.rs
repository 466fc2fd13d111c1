//! Reliability (issue 17): what a name given by hand, a hand-deleted bridge or veth, or a
//! half-done attach leaves behind. Each scenario breaks something the way a user or a crash
//! would, then proves with real traffic (not by listing rules) that ferry repairs it, or
//! that ferry refuses what it must and leaves what it did not make alone.

use anyhow::{ensure, Result};
use ferry_testkit::{host_or_skip, unique, TestHost};

const BRIDGE_NAME: &str = "com.docker.network.bridge.name";

fn ip(host: &TestHost, args: &[&str]) -> Result<()> {
    host.in_host("ip", args)?.expect_success()?;
    Ok(())
}

fn has_link(host: &TestHost, name: &str) -> Result<bool> {
    Ok(host.links()?.iter().any(|l| l == name))
}

/// The IPv4 addresses of `link` in the host's namespace.
fn addresses_of(host: &TestHost, link: &str) -> Result<Vec<String>> {
    Ok(host
        .addresses()?
        .into_iter()
        .filter(|(l, a)| l == link && a.contains('.'))
        .map(|(_, a)| a)
        .collect())
}

/// `network create -o com.docker.network.bridge.name=DEV` for a device that is not a bridge
/// is refused with a 4xx naming the option and the device, and the device keeps its
/// addresses and is still there after; the control, a name no device has, makes a bridge
/// that `network rm` deletes.
#[test]
fn bridge_name_of_lo_or_a_veth_is_refused_and_the_device_is_left_alone() -> Result<()> {
    let host = host_or_skip!();
    ip(
        &host,
        &[
            "link", "add", "admveth0", "type", "veth", "peer", "name", "admveth1",
        ],
    )?;
    for dev in ["lo", "admveth0"] {
        let before = addresses_of(&host, dev)?;
        let opt = format!("{BRIDGE_NAME}={dev}");
        let out = host.ferry_err(&[
            "network",
            "create",
            "--subnet",
            "10.81.0.0/24",
            "-o",
            &opt,
            &unique("steal"),
        ])?;
        let msg = out.stderr.to_lowercase();
        ensure!(
            msg.contains(BRIDGE_NAME) && msg.contains(dev) && msg.contains("not a bridge"),
            "the refusal does not name the option and the device {dev}:\n{out}"
        );
        ensure!(
            !msg.contains("500") && !msg.contains("internal"),
            "refusing {dev} is not a client error:\n{out}"
        );
        ensure!(has_link(&host, dev)?, "{dev} is gone after the refusal");
        ensure!(
            addresses_of(&host, dev)? == before,
            "{dev}'s addresses changed: {before:?} → {:?}",
            addresses_of(&host, dev)?
        );
        ensure!(
            host.user_networks()?.is_empty(),
            "a refused create left a network"
        );
    }
    ensure!(has_link(&host, "admveth1")?, "the veth's peer is gone");

    // Control: a free name is made into ferry's bridge, and ferry deletes what it made.
    let net = unique("own");
    host.create_network(
        &net,
        &[
            "--subnet",
            "10.81.0.0/24",
            "-o",
            &format!("{BRIDGE_NAME}=fyt-own0"),
        ],
    )?;
    ensure!(
        has_link(&host, "fyt-own0")?,
        "the named bridge was not made"
    );
    host.ferry_ok(&["network", "rm", &net])?;
    ensure!(
        !has_link(&host, "fyt-own0")?,
        "network rm left the bridge ferry made"
    );
    host.finish()
}

/// An administrator's own bridge named by `com.docker.network.bridge.name` carries the
/// network's traffic, but `network rm` (and a restart's reconcile before it) leave it in
/// place, without ferry's gateway address, with what the administrator had put on it.
#[test]
fn an_administrators_bridge_is_used_but_never_deleted() -> Result<()> {
    let mut host = host_or_skip!();
    ip(&host, &["link", "add", "admbr0", "type", "bridge"])?;
    ip(&host, &["addr", "add", "192.0.2.1/24", "dev", "admbr0"])?;
    let net = unique("adm");
    host.create_network(
        &net,
        &[
            "--subnet",
            "10.82.0.0/24",
            "-o",
            &format!("{BRIDGE_NAME}=admbr0"),
        ],
    )?;
    let web = host.run_web("web", &["--network", &net])?;
    host.run_idle("client", &["--network", &net])?;
    let web_ip = host.ip_of("web", &net)?;
    host.expect_fetch("client", &web_ip, &web)?;
    ensure!(
        addresses_of(&host, "admbr0")?.contains(&"10.82.0.1/24".to_string()),
        "the gateway is not on the adopted bridge"
    );

    // A restart reconciles; the adopted bridge is the network's, still in use.
    host.restart_kill9()?;
    host.expect_fetch("client", &web_ip, &web)?;

    host.ferry_ok(&["rm", "-f", "web", "client"])?;
    host.ferry_ok(&["network", "rm", &net])?;
    ensure!(
        has_link(&host, "admbr0")?,
        "network rm deleted the administrator's bridge"
    );
    let left = addresses_of(&host, "admbr0")?;
    ensure!(
        left == vec!["192.0.2.1/24".to_string()],
        "the administrator's bridge should keep only its own address, has {left:?}"
    );
    host.finish()
}
