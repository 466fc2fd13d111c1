//! Bad input: each case is refused with a non-zero exit and a message naming the problem (not
//! only quoting the input back), and changes nothing — `ferry network ls`, `ferry ps -a` and
//! the host's links read the same after.

#![allow(clippy::unwrap_used, clippy::too_many_lines)] // test code: a failed unwrap is a failed test

use anyhow::{ensure, Result};
use ferry_testkit::{host_or_skip, unique, Output, TestHost, BUSYBOX};

/// Run `ferry ARGS…`, which must be refused. Every entry of `mentions` must appear in its
/// stderr (case-insensitive; `a|b` means either).
fn assert_refused(host: &TestHost, args: &[&str], mentions: &[&str]) -> Result<Output> {
    let networks = host.ferry_ok(&["network", "ls"])?;
    let sandboxes = host.ferry_ok(&["ps", "-aq"])?;
    let mut links = host.links()?;
    links.sort();

    let out = host.ferry_err(args)?;
    let message = out.stderr.to_lowercase();
    for m in mentions {
        ensure!(
            m.split('|')
                .any(|alt| message.contains(&alt.to_lowercase())),
            "the error does not name the problem (expected {m:?} in stderr):\n{out}"
        );
    }

    let after = host.ferry_ok(&["network", "ls"])?;
    ensure!(
        after == networks,
        "a refused command changed `ferry network ls`:\nbefore:\n{networks}\nafter:\n{after}"
    );
    let after = host.ferry_ok(&["ps", "-aq"])?;
    ensure!(
        after == sandboxes,
        "a refused command changed `ferry ps -aq`: {sandboxes:?} → {after:?}"
    );
    let mut after = host.links()?;
    after.sort();
    ensure!(
        after == links,
        "a refused command changed the host's links: {links:?} → {after:?}"
    );
    Ok(out)
}

#[test]
fn create_fails_with_subnet_overlapping_another_network() -> Result<()> {
    let host = host_or_skip!();
    host.create_network(&unique("net"), &["--subnet", "10.20.0.0/16"])?;
    assert_refused(
        &host,
        &[
            "network",
            "create",
            "--subnet",
            "10.20.5.0/24",
            &unique("over"),
        ],
        &["overlap"],
    )?;
    host.finish()
}

#[test]
fn create_fails_with_subnet_overlapping_the_default_bridge() -> Result<()> {
    let host = host_or_skip!();
    assert_refused(
        &host,
        &[
            "network",
            "create",
            "--subnet",
            "172.17.8.0/24",
            &unique("over"),
        ],
        &["overlap"],
    )?;
    host.finish()
}

#[test]
fn create_fails_with_gateway_outside_subnet() -> Result<()> {
    let host = host_or_skip!();
    let args = [
        "network",
        "create",
        "--subnet",
        "10.88.0.0/24",
        "--gateway",
        "10.89.0.1",
        "badgw",
    ];
    assert_refused(&host, &args, &["gateway", "10.89.0.1", "out of range"])?;
    host.finish()
}

#[test]
fn create_fails_with_ip_range_outside_subnet() -> Result<()> {
    let host = host_or_skip!();
    let args = [
        "network",
        "create",
        "--subnet",
        "10.88.0.0/24",
        "--ip-range",
        "10.89.0.0/25",
        "badrange",
    ];
    assert_refused(
        &host,
        &args,
        &["10.89.0.0/25", "is not inside subnet 10.88.0.0/24"],
    )?;
    host.finish()
}

#[test]
fn create_fails_with_malformed_subnet() -> Result<()> {
    let host = host_or_skip!();
    assert_refused(
        &host,
        &["network", "create", "--subnet", "10.77.0.300/24", "badcidr"],
        &["10.77.0.300/24", "invalid cidr"],
    )?;
    host.finish()
}

#[test]
fn create_fails_with_unknown_driver() -> Result<()> {
    let host = host_or_skip!();
    assert_refused(
        &host,
        &["network", "create", "--driver", "nosuchdriver", "nodrv"],
        &["plugin \"nosuchdriver\" not found"],
    )?;
    host.finish()
}

#[test]
fn create_fails_with_duplicate_network_name() -> Result<()> {
    let host = host_or_skip!();
    let net = unique("net");
    host.create_network(&net, &["--subnet", "10.23.0.0/24"])?;
    let out = assert_refused(
        &host,
        &["network", "create", "--subnet", "10.24.0.0/24", &net],
        &[&net, "exists"],
    )?;
    ensure!(
        out.stderr.contains("Error response from daemon:"),
        "not an API error:\n{out}"
    );
    host.finish()
}

#[test]
fn create_fails_with_bridge_name_longer_than_15_bytes() -> Result<()> {
    let host = host_or_skip!();
    let long = "fyabcdefghijklmn"; // 16 bytes
    let opt = format!("com.docker.network.bridge.name={long}");
    assert_refused(
        &host,
        &[
            "network",
            "create",
            "--subnet",
            "10.25.0.0/24",
            "--opt",
            &opt,
            &unique("net"),
        ],
        &[long],
    )?;
    host.finish()
}

#[test]
fn create_accepts_a_bridge_name_of_exactly_15_bytes() -> Result<()> {
    let host = host_or_skip!();
    let name = "fyabcdefghijklm"; // 15 bytes
    let opt = format!("com.docker.network.bridge.name={name}");
    host.create_network(&unique("net"), &["--subnet", "10.25.0.0/24", "--opt", &opt])?;
    ensure!(
        host.links()?.iter().any(|l| l == name),
        "no bridge {name} in the host: {:?}",
        host.links()?
    );
    host.finish()
}

#[test]
fn run_fails_with_ip_on_the_default_bridge() -> Result<()> {
    let host = host_or_skip!();
    let args = [
        "run",
        "-d",
        "--name",
        "pinned",
        "--ip",
        "172.17.0.50",
        "--",
        BUSYBOX,
        "sleep",
        "3600",
    ];
    assert_refused(&host, &args, &["user defined|user-defined"])?;
    let left = host.leftovers()?;
    ensure!(
        left.netns_files.is_empty() && left.ip_netns_links.is_empty(),
        "a refused run left namespace files: {left}"
    );
    host.finish()
}

#[test]
fn run_fails_with_ip_already_taken() -> Result<()> {
    let host = host_or_skip!();
    let net = unique("net");
    host.create_network(&net, &["--subnet", "10.22.0.0/24"])?;
    host.run_idle("first", &["--network", &net, "--ip", "10.22.0.9"])?;
    let args = [
        "run",
        "-d",
        "--name",
        "second",
        "--network",
        &net,
        "--ip",
        "10.22.0.9",
        "--",
        BUSYBOX,
        "sleep",
        "3600",
    ];
    assert_refused(&host, &args, &["in use|taken|allocated"])?;
    let left = host.leftovers()?;
    ensure!(
        left.netns_files.len() == 1 && left.ip_netns_links == ["ferry-first"],
        "a refused run left namespace files: {left}"
    );
    host.finish()
}

#[test]
fn run_fails_with_ip_outside_the_subnet() -> Result<()> {
    let host = host_or_skip!();
    let net = unique("net");
    host.create_network(&net, &["--subnet", "10.22.0.0/24"])?;
    let args = [
        "run",
        "-d",
        "--name",
        "stray",
        "--network",
        &net,
        "--ip",
        "10.99.0.5",
        "--",
        BUSYBOX,
        "sleep",
        "3600",
    ];
    assert_refused(
        &host,
        &args,
        &[
            "10.99.0.5",
            "does not belong to any of this network's subnets",
        ],
    )?;
    host.finish()
}

#[test]
fn run_fails_with_duplicate_sandbox_name() -> Result<()> {
    let host = host_or_skip!();
    host.run_idle("web", &[])?;
    let args = ["run", "-d", "--name", "web", "--", BUSYBOX, "sleep", "3600"];
    assert_refused(&host, &args, &["web", "in use|exists|conflict"])?;
    host.finish()
}

#[test]
fn network_rm_fails_while_a_sandbox_is_attached() -> Result<()> {
    let host = host_or_skip!();
    let net = unique("net");
    host.create_network(&net, &["--subnet", "10.26.0.0/24"])?;
    host.run_idle("user", &["--network", &net])?;
    let out = assert_refused(&host, &["network", "rm", &net], &["endpoint|in use"])?;
    ensure!(
        out.stderr.contains("Error response from daemon:"),
        "not an API error:\n{out}"
    );
    let state = host.inspect("user")?["State"].clone();
    ensure!(
        state["Running"] == true,
        "the attached sandbox stopped: {state}"
    );
    host.finish()
}

#[test]
fn network_rm_fails_for_a_predefined_network() -> Result<()> {
    let host = host_or_skip!();
    assert_refused(
        &host,
        &["network", "rm", "bridge"],
        &["pre-defined|predefined"],
    )?;
    host.finish()
}

#[test]
fn run_of_a_command_that_cannot_start_rolls_back_the_sandbox_network() -> Result<()> {
    let host = host_or_skip!();
    let net = unique("net");
    host.create_network(&net, &["--subnet", "10.26.0.0/24"])?;
    let args = [
        "run",
        "-d",
        "--rm",
        "--name",
        "nostart",
        "--network",
        &net,
        "--",
        "/nonexistent/cmd",
    ];
    assert_refused(
        &host,
        &args,
        &["/nonexistent/cmd", "no such file or directory|not found"],
    )?;
    // The address went back to the pool: the next sandbox gets the first one.
    host.run_idle("next", &["--network", &net])?;
    let ip = host.ip_of("next", &net)?;
    ensure!(
        ip == "10.26.0.2",
        "the failed start kept its address: the next sandbox got {ip}"
    );
    ensure!(
        host.netns_files()?.len() <= 2,
        "namespaces left: {:?}",
        host.netns_files()?
    );
    host.finish()
}
