//! Reliability (issue 17): what a name given by hand, a hand-deleted bridge or veth, or a
//! half-done attach leaves behind. Each scenario breaks something the way a user or a crash
//! would, then proves with real traffic (not by listing rules) that ferry repairs it, or
//! that ferry refuses what it must and leaves what it did not make alone.

#![allow(clippy::unwrap_used, clippy::too_many_lines)] // test code: a failed unwrap is a failed test

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
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
    remove_all_and_check_leaks(&host, &["admveth0", "admveth1"])?;
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
    remove_all_and_check_leaks(&host, &["admbr0"])?;
    host.finish()
}

/// The leak check after a scenario that crashed or broke something: first, as things
/// stand, every ferry-owned link, address, namespace and mount is the store's and every
/// endpoint the store records is in the kernel ([`TestHost::accounted`]); then every
/// sandbox and user network is removed through the CLI and nothing ferry made may be left:
/// links, addresses, namespaces, mounts, nftables elements. `keep`: links the test made.
fn remove_all_and_check_leaks(host: &TestHost, keep: &[&str]) -> Result<()> {
    host.accounted_keeping(keep)?;
    for id in host.ferry_ok(&["ps", "-aq"])?.split_whitespace() {
        host.ferry_ok(&["rm", "-f", id])?;
    }
    for net in host.user_networks()? {
        host.ferry_ok(&["network", "rm", &net])?;
    }
    let left = host.leftovers()?.except_links(keep);
    ensure!(
        left.is_empty(),
        "left behind after removing everything:\n{left}"
    );
    Ok(())
}

// ---- hostile and mistaken requests (item 5) ----

/// One request on a unix socket (`Connection: close`); the status and the whole answer.
fn http(sock: &Path, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String)> {
    let mut s = UnixStream::connect(sock)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: ferry\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    // A server that refuses an oversized body answers and closes before reading it all:
    // the write then fails, and the answer is still there to read.
    if let Err(e) = s.write_all(request.as_bytes()) {
        ensure!(
            matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ),
            "send {method} {path}: {e}"
        );
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let answer = String::from_utf8_lossy(&raw).into_owned();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no status in {answer:?}"))?;
    Ok((status, answer))
}

/// The store's records, networks, sandboxes, links and addresses, as they read now.
type World = (
    Vec<(String, Vec<u8>)>,
    String,
    String,
    Vec<String>,
    Vec<(String, String)>,
);

/// What a refused request must leave as it was. Not the IPv6 link-local addresses: the
/// kernel gives a bridge one when its carrier comes up, which the link watcher reports up
/// to a second after the first port joined (on a busy machine, after the test's next
/// request), and ferry neither makes nor removes them.
fn world(host: &TestHost) -> Result<World> {
    let mut links = host.links()?;
    links.sort();
    let mut addrs: Vec<(String, String)> = host
        .addresses()?
        .into_iter()
        .filter(|(_, a)| !a.starts_with("fe80:"))
        .collect();
    addrs.sort();
    Ok((
        stored(host)?,
        host.ferry_ok(&["network", "ls", "-q"])?,
        host.ferry_ok(&["ps", "-aq"])?,
        links,
        addrs,
    ))
}

/// Which parts of the world differ, and how (the lists in full: they are short).
fn what_changed(a: &World, b: &World) -> String {
    let mut d = vec![];
    if a.0 != b.0 {
        let keys = |w: &World| w.0.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
        d.push(format!("store keys {:?} → {:?}", keys(a), keys(b)));
    }
    if a.1 != b.1 {
        d.push(format!("networks {:?} → {:?}", a.1, b.1));
    }
    if a.2 != b.2 {
        d.push(format!("sandboxes {:?} → {:?}", a.2, b.2));
    }
    if a.3 != b.3 {
        d.push(format!("links {:?} → {:?}", a.3, b.3));
    }
    if a.4 != b.4 {
        d.push(format!("addresses {:?} → {:?}", a.4, b.4));
    }
    d.join("; ")
}

fn net_body(name: &str, ipam: &str) -> String {
    format!(r#"{{"Name":"{name}","IPAM":{{"Config":[{ipam}]}}}}"#)
}

/// Every record of the running ferryd's store, read from a copy of its file (ferryd holds
/// the file itself open).
fn stored(host: &TestHost) -> Result<Vec<(String, Vec<u8>)>> {
    use ferry_store::Store;
    let copy = host.root().join("store-copy.redb");
    std::fs::copy(host.data_root().join("ferry.redb"), &copy)?;
    let all = ferry_store::RedbStore::open(&copy)?.list("")?;
    std::fs::remove_file(&copy)?;
    Ok(all)
}

/// Every kind of client mistake that used to answer 500, and subnets that can never work,
/// each answered with a 4xx whose message names the field or object, changing nothing;
/// each has a control, the same request made right, that succeeds.
#[test]
fn client_mistakes_answer_4xx_naming_the_problem_and_change_nothing() -> Result<()> {
    let host = host_or_skip!();
    let sock = host.sock().to_path_buf();
    host.create_network(
        "n1",
        &["--subnet", "10.83.0.0/24", "--ip-range", "10.83.0.128/25"],
    )?;
    host.create_network("n3", &["--subnet", "10.87.0.0/24"])?;
    host.run_idle("sb", &["--network", "n1"])?;
    // A sandbox created, never started: the disconnect control's.
    let (status, answer) = http(
        &sock,
        "POST",
        "/containers/create?name=idle",
        Some(r#"{"Cmd":["/bin/true"]}"#),
    )?;
    ensure!(status == 201, "create idle: {answer}");
    let connect = |ip: &str| {
        format!(
            r#"{{"Container":"sb","EndpointConfig":{{"IPAMConfig":{{"IPv4Address":"{ip}"}}}}}}"#
        )
    };
    let n2 = r#""Subnet":"10.84.0.0/24""#;
    #[rustfmt::skip]
    let cases: Vec<(&str, String, String, u16, &str)> = vec![
        ("POST", "/networks/create".into(), net_body("b", r#"{"Subnet":"10.84.0.300/24"}"#), 400, "subnet"),
        ("POST", "/networks/create".into(), net_body("b", r#"{"Subnet":"127.0.0.0/24"}"#), 400, "subnet 127.0.0.0/24"),
        ("POST", "/networks/create".into(), net_body("b", r#"{"Subnet":"0.0.0.0/8"}"#), 400, "subnet 0.0.0.0/8"),
        ("POST", "/networks/create".into(), net_body("b", r#"{"Subnet":"224.0.0.0/24"}"#), 400, "subnet 224.0.0.0/24"),
        ("POST", "/networks/create".into(), net_body("b", r#"{"Subnet":"255.255.255.0/24"}"#), 400, "subnet 255.255.255.0/24"),
        ("POST", "/networks/create".into(), net_body("b", r#"{"Subnet":"240.1.0.0/16"}"#), 400, "subnet 240.1.0.0/16"),
        ("POST", "/networks/create".into(), net_body("b", &format!(r#"{{{n2},"Gateway":"10.85.0.1"}}"#)), 400, "gateway (10.85.0.1)"),
        ("POST", "/networks/create".into(), net_body("b", &format!(r#"{{{n2},"Gateway":"10.84.0.0"}}"#)), 400, "gateway (10.84.0.0)"),
        ("POST", "/networks/create".into(), net_body("b", &format!(r#"{{{n2},"Gateway":"10.84.0.255"}}"#)), 400, "gateway (10.84.0.255)"),
        ("POST", "/networks/n3/connect".into(), connect("10.87.0.1"), 400, "10.87.0.1: it is the gateway"),
        ("POST", "/networks/n3/connect".into(), connect("10.86.0.5"), 400, "10.86.0.5: it does not belong"),
        ("POST", "/networks/n3/connect".into(), connect("10.87.0.0"), 400, "10.87.0.0: it is the network address"),
        ("POST", "/networks/n3/connect".into(), connect("10.87.0.255"), 400, "10.87.0.255: it is the broadcast"),
        ("POST", "/networks/bridge/disconnect".into(), r#"{"Container":"sb"}"#.into(), 404, "not connected to network bridge"),
        ("POST", "/containers/create?name=nocmd".into(), r#"{"Image":"busybox"}"#.into(), 400, "no command"),
        ("POST", "/containers/create?name=nocmd".into(), r#"{"Cmd":[]}"#.into(), 400, "no command"),
        ("POST", "/containers/create?name=bad".into(), r#"{"Cmd":["/bin/true"],"HostConfig":{"Dns":["nope"]}}"#.into(), 400, "invalid Dns"),
        ("POST", "/containers/create?name=bad".into(), r#"{"Cmd":["/bin/true"],"Hostname":"x\n6.6.6.6 bank"}"#.into(), 400, "invalid Hostname"),
        ("POST", "/containers/create?name=bad".into(), r#"{"Cmd":["/bin/true"],"HostConfig":{"DnsSearch":["a b"]}}"#.into(), 400, "invalid DnsSearch"),
        // Already 4xx before issue 17; kept in the table so that each stays so.
        ("POST", "/networks/create".into(), net_body("b", &format!(r#"{{{n2},"IPRange":"bad"}}"#)), 400, "ip-range bad"),
        ("POST", "/networks/create".into(), net_body("b", &format!(r#"{{{n2},"IPRange":"10.85.0.0/25"}}"#)), 400, "not inside subnet"),
        ("POST", "/networks/create".into(), net_body("b", r#"{"Subnet":"10.84.0.0/31"}"#), 400, "room for no host"),
        ("POST", "/networks/create".into(), net_body("b", r#"{"Gateway":"10.84.0.1"}"#), 400, "--subnet"),
        ("POST", "/networks/create".into(), net_body("b", &format!(r#"{{{n2}}},{{"Subnet":"10.85.0.0/24"}}"#)), 400, "one IPv4 subnet"),
        ("POST", "/networks/create".into(), net_body("b", r#"{"Subnet":"fd00::/64"}"#), 400, "IPv6"),
        ("POST", "/networks/create".into(), net_body("n1", r#"{"Subnet":"10.85.0.0/24"}"#), 409, "already exists"),
        ("POST", "/networks/create".into(), net_body("b", r#"{"Subnet":"10.83.0.0/25"}"#), 403, "overlaps"),
        ("POST", "/networks/create".into(), r#"{"Name":"b","Options":{"com.docker.network.driver.mtu":"abc"}}"#.into(), 400, "com.docker.network.driver.mtu=abc"),
        ("POST", "/networks/create".into(), r#"{"Name":"b","Options":{"com.docker.network.bridge.enable_icc":"maybe"}}"#.into(), 400, "enable_icc=maybe"),
        ("POST", "/networks/create".into(), r#"{"Name":"b","Options":{"com.docker.network.bridge.name":"a-name-over-15-bytes"}}"#.into(), 400, "longer than 15 bytes"),
        ("POST", "/networks/create".into(), r#"{"Name":"b","Options":{"com.docker.network.bridge.name":"lo"}}"#.into(), 400, "lo exists and is not a bridge"),
        ("POST", "/networks/create".into(), r#"{"Name":"b","Options":{"com.docker.network.bridge.name":"ferry0"}}"#.into(), 400, "ferry0"),
        ("POST", "/networks/create".into(), r#"{"Name":"b","Driver":"overlay"}"#.into(), 400, "--cluster-store"),
        ("POST", "/networks/create".into(), r#"{"Name":"b","IPAM":{"Driver":"nope"}}"#.into(), 404, "nope"),
        ("POST", "/networks/create".into(), r#"{"Name":"b","EnableIPv6":true}"#.into(), 400, "IPv6"),
        ("POST", "/networks/create".into(), r#"{"Name":"bad name"}"#.into(), 400, "bad name"),
        ("POST", "/networks/create".into(), r#"{"Name":5}"#.into(), 400, "invalid JSON"),
        ("POST", "/networks/create".into(), "not json".into(), 400, "invalid JSON"),
        ("POST", "/networks/create".into(), "".into(), 400, "Name"),
        ("POST", "/networks/n1/connect".into(), r#"{"Container":"sb"}"#.into(), 403, "already exists"),
        ("POST", "/networks/n1/connect".into(), r#"{"Container":"nosuch"}"#.into(), 404, "nosuch"),
        ("POST", "/networks/nosuch/connect".into(), r#"{"Container":"sb"}"#.into(), 404, "nosuch"),
        ("POST", "/networks/n3/connect".into(), connect("bad"), 400, "bad"),
        ("POST", "/networks/bridge/connect".into(), connect("172.17.0.9"), 400, "user defined networks"),
        ("POST", "/networks/host/connect".into(), r#"{"Container":"sb"}"#.into(), 400, "host network"),
        ("POST", "/networks/n3/connect".into(), r#"{"Container":"sb","EndpointConfig":{"FerryPortBindings":{"80/tcp":[{"HostPort":"70000"}]}}}"#.into(), 400, "70000"),
        ("POST", "/networks/n1/disconnect".into(), r#"{"Container":"nosuch"}"#.into(), 404, "nosuch"),
        ("POST", "/containers/create?name=bad".into(), r#"{"Cmd":["/bin/true"],"HostConfig":{"NetworkMode":"nosuch"}}"#.into(), 404, "nosuch"),
        ("POST", "/containers/create?name=bad".into(), r#"{"Cmd":["/bin/true"],"HostConfig":{"PortBindings":{"80/xyz":[{"HostPort":"1"}]}}}"#.into(), 400, "xyz"),
        ("POST", "/containers/create?name=bad".into(), r#"{"Cmd":["/bin/true"],"HostConfig":{"PortBindings":{"80/tcp":[{"HostIp":"nope","HostPort":"1"}]}}}"#.into(), 400, "nope"),
        ("POST", "/containers/create?name=bad".into(), r#"{"Cmd":["/bin/true"],"HostConfig":{"NetworkMode":"n1"},"NetworkingConfig":{"EndpointsConfig":{"n1":{"IPAMConfig":{"IPv4Address":"10.83.0.1"}}}}}"#.into(), 400, "gateway"),
        ("POST", "/containers/create?name=bad%2Fname".into(), r#"{"Cmd":["/bin/true"]}"#.into(), 400, "bad/name"),
        ("POST", "/containers/create?name=sb".into(), r#"{"Cmd":["/bin/true"]}"#.into(), 409, "already in use"),
        ("POST", "/containers/create?name=bad".into(), "garbage".into(), 400, "invalid JSON"),
        ("POST", "/containers/nosuch/start".into(), "".into(), 404, "nosuch"),
        ("POST", "/containers/idle/stop".into(), "".into(), 409, "not running"),
        ("DELETE", "/containers/sb".into(), "".into(), 409, "running container"),
        ("DELETE", "/containers/nosuch".into(), "".into(), 404, "nosuch"),
        ("DELETE", "/networks/nosuch".into(), "".into(), 404, "nosuch"),
        ("DELETE", "/networks/bridge".into(), "".into(), 403, "pre-defined"),
        ("DELETE", "/networks/n1".into(), "".into(), 403, "active endpoints"),
        ("GET", "/networks/nosuch".into(), "".into(), 404, "nosuch"),
        ("GET", "/containers/nosuch/json".into(), "".into(), 404, "nosuch"),
        ("GET", "/networks?filters=garbage".into(), "".into(), 400, "filters"),
        ("POST", "/networks/prune?filters=garbage".into(), "".into(), 400, "filters"),
    ];
    for (method, path, body, want, mention) in &cases {
        let before = world(&host)?;
        let (status, answer) = http(&sock, method, path, Some(body))?;
        ensure!(
            status == *want,
            "{method} {path} {body} answered {status}, not {want}:\n{answer}"
        );
        ensure!(
            answer.to_lowercase().contains(&mention.to_lowercase()),
            "{method} {path} {body}: the message does not name {mention:?}:\n{answer}"
        );
        let after = world(&host)?;
        ensure!(
            after == before,
            "{method} {path} {body} was refused but changed something: {}",
            what_changed(&before, &after)
        );
        ensure!(
            http(&sock, "GET", "/_ping", None)?.0 == 200,
            "ferryd stopped answering after {method} {path}"
        );
    }

    // Controls: the same requests, made right, succeed.
    #[rustfmt::skip]
    let controls: Vec<(&str, String, String)> = vec![
        ("POST", "/networks/create".into(), net_body("c1", &format!(r#"{{{n2},"Gateway":"10.84.0.254"}}"#))),
        ("POST", "/networks/create".into(), net_body("c2", r#"{"Subnet":"126.255.255.0/24"}"#)),
        ("POST", "/networks/create".into(), net_body("c3", r#"{"Subnet":"223.255.255.0/24"}"#)),
        ("POST", "/networks/n1/connect".into(), r#"{"Container":"idle"}"#.into()),
        ("POST", "/networks/n1/disconnect".into(), r#"{"Container":"idle"}"#.into()),
        ("POST", "/networks/c1/connect".into(), r#"{"Container":"sb","EndpointConfig":{"IPAMConfig":{"IPv4Address":"10.84.0.9"}}}"#.into()),
        ("POST", "/containers/create?name=withcmd".into(), r#"{"Cmd":["/bin/true"]}"#.into()),
        ("POST", "/containers/create?name=good".into(), r#"{"Cmd":["/bin/true"],"Hostname":"web-1.example","HostConfig":{"Dns":["10.0.0.53"],"DnsSearch":["example.com"],"DnsOptions":["ndots:2"]}}"#.into()),
    ];
    for (method, path, body) in &controls {
        let (status, answer) = http(&sock, method, path, Some(body))?;
        ensure!(
            (200..300).contains(&status),
            "control {method} {path} {body} answered {status}:\n{answer}"
        );
    }
    remove_all_and_check_leaks(&host, &[])?;
    host.finish()
}

fn mode_of(p: &Path) -> Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(p)
        .with_context(|| format!("stat {}", p.display()))?
        .permissions()
        .mode()
        & 0o777)
}

/// The store and a sandbox's log are not world-readable; both sockets are root's and its
/// group's only.
#[test]
fn the_store_logs_and_sockets_are_not_open_to_everyone() -> Result<()> {
    let host = host_or_skip!();
    let id = host.run_idle("sb", &[])?;
    let want = [
        (host.data_root().join("ferry.redb"), 0o600),
        (
            host.exec_root().join("sandboxes").join(&id).join("log"),
            0o640,
        ),
        (host.sock().to_path_buf(), 0o660),
        (host.plugin_dir().join("ferry.sock"), 0o660),
    ];
    for (path, mode) in &want {
        let got = mode_of(path)?;
        ensure!(
            got == *mode,
            "{} has mode {got:o}, not {mode:o}",
            path.display()
        );
    }
    host.finish()
}

/// `GET /_ping` with curl as uid `nobody` and group `gid`, bounded; its output.
fn ping_as_nobody(sock: &Path, gid: u32) -> Result<ferry_testkit::Output> {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sSv", "--max-time", "5", "--unix-socket"])
        .arg(sock)
        .arg("http://ferry/_ping")
        .uid(65534)
        .gid(gid);
    ferry_testkit::run_bounded(&mut cmd, Duration::from_secs(10))
}

/// `-G GROUP`: the API socket belongs to the group; a member (uid nobody, group
/// nogroup) drives ferryd, anyone else (the same uid in group daemon) gets EACCES.
#[test]
fn members_of_the_sockets_group_connect_and_others_are_refused() -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !ferry_testkit::privileged(ferry_testkit::scenario_name!()) {
        return Ok(());
    }
    let host = TestHost::start_with_args(ferry_testkit::scenario_name!(), &["-G", "nogroup"])?;
    // The test's root is 0700: let others reach the socket, so only its mode decides.
    std::fs::set_permissions(host.root(), std::fs::Permissions::from_mode(0o711))?;
    let meta = std::fs::metadata(host.sock())?;
    ensure!(
        meta.gid() == 65534 && meta.mode() & 0o777 == 0o660,
        "socket gid {} mode {:o}",
        meta.gid(),
        meta.mode() & 0o777
    );
    let member = ping_as_nobody(host.sock(), 65534)?;
    ensure!(
        member.success() && member.stdout.trim() == "OK",
        "a member of the socket's group was not let in:\n{member}"
    );
    let stranger = ping_as_nobody(host.sock(), 1)?;
    ensure!(
        !stranger.success() && stranger.stderr.contains("Permission denied"),
        "a user outside the socket's group got in:\n{stranger}"
    );
    host.finish()
}

/// curl to `path` on unix socket `sock`, bounded; `-w` prints the HTTP status (000: no
/// answer).
fn curl_socket(sock: &Path, path: &str) -> Vec<String> {
    let url = format!("http://ferry{path}");
    let sock = sock.to_string_lossy().into_owned();
    [
        "curl",
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "5",
    ]
    .into_iter()
    .map(String::from)
    .chain(["--unix-socket".into(), sock, url])
    .collect()
}

/// Sandboxes run on the host's filesystem, where ferryd's sockets are: root in a sandbox
/// must still not drive ferryd, nor speak to its plugin socket as dockerd. ferryd closes
/// a connection from a sandbox's namespace unanswered. Control: the same request from
/// ferryd's namespace (and the test's own) is answered.
#[test]
fn a_sandbox_cannot_drive_ferryd_through_its_sockets() -> Result<()> {
    let host = host_or_skip!();
    host.run_idle("inside", &[])?;
    let plugin = host.plugin_dir().join("ferry.sock");
    for (sock, path) in [
        (host.sock(), "/_ping"),
        (plugin.as_path(), "/Plugin.Activate"),
    ] {
        let cmd = curl_socket(sock, path);
        let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
        let inside = host.exec("inside", &cmd)?;
        ensure!(
            !inside.success() && inside.stdout.trim() == "000",
            "a sandbox got an answer from {}:\n{inside}",
            sock.display()
        );
        let mut outside = std::process::Command::new("nsenter");
        outside.arg(format!(
            "--net=/proc/{}/ns/net",
            host.ferryd_pid().context("pid")?
        ));
        outside.args(&cmd);
        let outside = ferry_testkit::run_bounded(&mut outside, Duration::from_secs(10))?;
        ensure!(
            outside.success() && outside.stdout.trim() != "000",
            "the control from ferryd's namespace got no answer from {}:\n{outside}",
            sock.display()
        );
    }
    ensure!(
        host.log_tail(100)
            .contains("refused a connection from inside sandbox namespace"),
        "ferryd did not log the refusal:\n{}",
        host.log_tail(20)
    );
    remove_all_and_check_leaks(&host, &[])
}

/// Send `partial` and wait for ferryd to answer or close; how long that took and what it
/// sent.
fn held_open(sock: &Path, partial: &[u8]) -> Result<(Duration, String)> {
    let mut s = UnixStream::connect(sock)?;
    s.set_read_timeout(Some(Duration::from_secs(40)))?;
    let t = std::time::Instant::now();
    s.write_all(partial)?;
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    Ok((t.elapsed(), String::from_utf8_lossy(&answer).into_owned()))
}

/// A client that connects and sends nothing, half a request head, or half a body is cut
/// off within the timeouts (10 s, with a margin), on both sockets; a body over the limit
/// is refused with 413; ferryd answers as before after all of it.
#[test]
fn half_sent_requests_are_cut_off_and_oversized_bodies_refused() -> Result<()> {
    let host = host_or_skip!();
    let api = host.sock().to_path_buf();
    let plugin = host.plugin_dir().join("ferry.sock");
    let half_body = b"POST /networks/create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"Na";
    let partials: [(&str, &[u8]); 3] = [
        ("nothing", b""),
        ("half a head", b"GET /_ping HTTP/1.1\r\nHost: x\r\n"),
        ("half a body", half_body),
    ];
    let results = std::thread::scope(|scope| {
        let handles: Vec<_> = [&api, &plugin]
            .into_iter()
            .flat_map(|sock| {
                partials.iter().map(move |(what, bytes)| {
                    (sock, *what, scope.spawn(move || held_open(sock, bytes)))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|(sock, what, h)| (sock.clone(), what, h.join().expect("thread")))
            .collect::<Vec<_>>()
    });
    for (sock, what, r) in results {
        let (took, answer) = r?;
        ensure!(
            took < Duration::from_secs(20),
            "{}: a client that sent {what} was held for {took:?}",
            sock.display()
        );
        if what == "half a body" {
            ensure!(
                answer.starts_with("HTTP/1.1 408"),
                "{}: half a body was not answered 408: {answer:?}",
                sock.display()
            );
        }
    }

    let big = format!(r#"{{"Name":"{}"}}"#, "a".repeat(2 << 20));
    for (sock, path) in [
        (&api, "/networks/create"),
        (&plugin, "/IpamDriver.RequestPool"),
    ] {
        let (status, answer) = http(sock, "POST", path, Some(&big))?;
        ensure!(
            status == 413,
            "{}: a 2 MiB body answered {status}: {}",
            sock.display(),
            &answer[..answer.len().min(300)]
        );
    }
    // Control: ferryd still answers, and a request sent whole is served.
    let (status, answer) = http(
        &api,
        "POST",
        "/networks/create",
        Some(&net_body("after", r#"{"Subnet":"10.88.0.0/24"}"#)),
    )?;
    ensure!(status == 201, "a whole request afterwards: {answer}");
    let (status, _) = http(&plugin, "POST", "/Plugin.Activate", Some(""))?;
    ensure!(status == 200, "the plugin socket stopped answering");
    remove_all_and_check_leaks(&host, &[])?;
    host.finish()
}

/// `ferry system cleanup` returns once ferryd has exited, not while it still runs.
#[test]
fn system_cleanup_returns_only_after_ferryd_has_exited() -> Result<()> {
    let host = host_or_skip!();
    host.create_network(&unique("net"), &["--subnet", "10.89.0.0/24"])?;
    host.run_idle("sb", &[])?;
    let pid = host.ferryd_pid().context("ferryd runs")?;
    host.ferry_ok(&["system", "cleanup"])?;
    // Every thread, not only the leader: /proc/PID/stat reads `Z` as soon as ferryd's main
    // thread has exited, while its other threads may still hold what it opened.
    let live = live_threads(pid);
    ensure!(
        live.is_empty(),
        "ferry system cleanup returned while ferryd (pid {pid}) still runs (threads {live:?})"
    );
    host.finish()
}

/// The threads of process `pid` that have not exited (none once it is gone or a zombie).
fn live_threads(pid: u32) -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| {
            let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
            let state = stat.rfind(')').and_then(|i| stat.get(i + 2..i + 3))?;
            (state != "Z" && state != "X")
                .then(|| format!("{} {state}", t.file_name().to_string_lossy()))
        })
        .collect()
}

// ---- endpoints the store records but the kernel lost (items 1 and 3) ----

/// `ip ARGS…` inside sandbox `name`'s network namespace (linked in `netns_dir`); must
/// succeed.
fn ip_in(netns_dir: &Path, name: &str, args: &[&str]) -> Result<()> {
    let ns = netns_dir.join(format!("ferry-{name}"));
    let ns = format!("--net={}", ns.display());
    let mut a = vec![ns.as_str(), "ip"];
    a.extend(args);
    let out = std::process::Command::new("nsenter").args(&a).output()?;
    ensure!(
        out.status.success(),
        "nsenter {a:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// `web`'s page cannot be fetched from `from` at `addr` (one attempt).
fn expect_no_fetch(host: &TestHost, from: &str, addr: &str) -> Result<()> {
    let out = host.fetch(from, addr)?;
    ensure!(
        !out.success(),
        "{from} still fetched from {addr} after the break:\n{out}"
    );
    Ok(())
}

/// The state a SIGKILL during `network connect` leaves (the store records the endpoint;
/// in the kernel the interface is down without its address, or missing altogether) is
/// made by hand on an endpoint added by `network connect`; `ferry system reconcile` and a
/// restart wire it again, proven by fetching a page over it.
#[test]
fn reconcile_rewires_an_endpoint_the_store_records_but_the_kernel_lost() -> Result<()> {
    let mut host = host_or_skip!();
    let (a, b) = (unique("a"), unique("b"));
    host.create_network(&a, &["--subnet", "10.97.0.0/24"])?;
    host.create_network(&b, &["--subnet", "10.98.0.0/24"])?;
    let web = host.run_web("web", &["--network", &a])?;
    host.run_idle("client", &["--network", &b])?;
    host.ferry_ok(&["network", "connect", &b, "web"])?;
    let ip = host.ip_of("web", &b)?;
    host.expect_fetch("client", &ip, &web)?;
    let nsdir = host.netns_dir().to_path_buf();

    // 1. Down, without its address (what a kill 1–2 ms into the connect left).
    ip_in(&nsdir, "web", &["addr", "flush", "dev", "eth1"])?;
    ip_in(&nsdir, "web", &["link", "set", "eth1", "down"])?;
    expect_no_fetch(&host, "client", &ip)?;
    host.ferry_ok(&["system", "reconcile"])?;
    host.expect_fetch("client", &ip, &web)?;

    // 2. The pair gone altogether while ferryd is down, found by a restart's reconcile.
    let mut broke = Ok(());
    host.restart_kill9_with(|| {
        broke = ip_in(&nsdir, "web", &["link", "del", "eth1"]);
    })?;
    broke?;
    host.expect_fetch("client", &ip, &web)?;

    // 3. The default route gone from the first endpoint, its address kept: web answers
    // its own network again only once the route is back (the client on `a` is off-link
    // for nothing, so check the route through the kernel instead).
    ip_in(&nsdir, "web", &["route", "del", "default"])?;
    host.ferry_ok(&["system", "reconcile"])?;
    let routes = host.exec("web", &[ferry_testkit::BUSYBOX, "ip", "route"])?;
    ensure!(
        routes.out().contains("default via 10.97.0.1"),
        "reconcile did not put the default route back:\n{routes}"
    );
    // Control: nothing else changed; the same address on both networks.
    ensure!(host.ip_of("web", &b)? == ip, "the address on {b} changed");
    remove_all_and_check_leaks(&host, &[])?;
    host.finish()
}

/// A ferry bridge deleted by hand: its sandboxes' endpoints come back with it (the veths
/// made again, on the new bridge), and a published port answers again — by the periodic
/// check without anyone asking, and by `ferry system reconcile`.
#[test]
fn a_bridge_deleted_by_hand_comes_back_with_its_endpoints_and_published_ports() -> Result<()> {
    let host = host_or_skip!();
    let net = unique("n");
    let id = host.create_network(&net, &["--subnet", "10.99.0.0/24"])?;
    let bridge = format!("fy-{}", &id[..8]);
    ensure!(has_link(&host, &bridge)?, "no bridge {bridge}");
    let web = host.run_web("web", &["--network", &net, "-p", "8089:80"])?;
    host.run_idle("client", &["--network", &net])?;
    let web_ip = host.ip_of("web", &net)?;
    host.expect_fetch("client", &web_ip, &web)?;
    // Through the published port (DNAT at the gateway, hairpin back onto the bridge).
    host.expect_fetch("client", "10.99.0.1:8089", &web)?;

    for how in ["the periodic check", "ferry system reconcile"] {
        ip(&host, &["link", "del", &bridge])?;
        // Not a fetch that must fail here: the periodic check may already be repairing.
        ensure!(!has_link(&host, &bridge)?, "{bridge} was not deleted");
        if how == "ferry system reconcile" {
            host.ferry_ok(&["system", "reconcile"])?;
        }
        // The periodic check runs every 5 s; expect_fetch retries for 15 s.
        host.expect_fetch("client", &web_ip, &web)
            .with_context(|| format!("after the bridge was deleted, by {how}"))?;
        host.expect_fetch("client", "10.99.0.1:8089", &web)
            .with_context(|| format!("the published port, by {how}"))?;
        // By name: the embedded DNS answers on the recreated bridge's gateway.
        host.expect_fetch("client", "web", &web)
            .with_context(|| format!("by name, by {how}"))?;
    }
    remove_all_and_check_leaks(&host, &[])?;
    host.finish()
}

/// With ferryd running, a sandbox's host veth deleted by hand, then the bridge's gateway
/// address: the periodic check (a link dump and a route dump every 5 s) notices each and
/// wires it again without anyone asking, proven by fetching the page directly, through the
/// published port at the gateway, and by name (the DNS answers on the gateway).
#[test]
fn a_veth_or_a_bridges_address_deleted_by_hand_comes_back_by_the_periodic_check() -> Result<()> {
    let host = host_or_skip!();
    let net = unique("n");
    let id = host.create_network(&net, &["--subnet", "10.99.0.0/24"])?;
    let bridge = format!("fy-{}", &id[..8]);
    let web = host.run_web("web", &["--network", &net, "-p", "8089:80"])?;
    host.run_idle("client", &["--network", &net])?;
    let web_ip = host.ip_of("web", &net)?;
    host.expect_fetch("client", "10.99.0.1:8089", &web)?;
    let endpoint = host.ferry_ok(&[
        "inspect",
        "web",
        "--format",
        &format!("{{{{(index .NetworkSettings.Networks \"{net}\").EndpointID}}}}"),
    ])?;
    let veth = format!("fy{}", &endpoint.trim()[..11]);
    ensure!(has_link(&host, &veth)?, "no veth {veth} for web");
    ip(&host, &["link", "del", &veth])?;
    // Not a fetch that must fail here: the periodic check may already be repairing.
    host.expect_fetch("client", &web_ip, &web)
        .context("after web's veth was deleted")?;
    ensure!(has_link(&host, &veth)?, "{veth} is not back");
    ip(&host, &["addr", "del", "10.99.0.1/24", "dev", &bridge])?;
    host.expect_fetch("client", "10.99.0.1:8089", &web)
        .context("the published port after the bridge's address was deleted")?;
    host.expect_fetch("client", "web", &web)
        .context("by name after the bridge's address was deleted")?;
    ensure!(
        addresses_of(&host, &bridge)?.contains(&"10.99.0.1/24".to_string()),
        "{bridge} has not its address back"
    );
    let log = host.log_tail(300);
    ensure!(
        log.contains(&format!("link {veth} is gone"))
            && log.contains(&format!("the address of bridge {bridge} is gone")),
        "ferryd did not say what it restored:\n{}",
        host.log_tail(40)
    );
    remove_all_and_check_leaks(&host, &[])?;
    host.finish()
}

// ---- a process whose pid never reached the store (item 2) ----

/// Rewrite sandbox `id`'s record in the store (ferryd must be down) to what a SIGKILL
/// between the spawn of its process and the commit of its pid leaves: running, pid 0.
fn forget_pid(data_root: &Path, id: &str) -> Result<()> {
    use ferry_store::{Op, RedbStore, Store};
    let store = RedbStore::open(&data_root.join("ferry.redb"))?;
    let key = format!("sbx/{id}");
    let (_, raw) = store
        .list(&key)?
        .into_iter()
        .find(|(k, _)| *k == key)
        .with_context(|| format!("no {key} in the store"))?;
    let mut v: serde_json::Value = serde_json::from_slice(&raw)?;
    ensure!(
        v["state"]["status"] == "running",
        "{key} is not running: {}",
        v["state"]
    );
    v["state"] = serde_json::json!({"status": "running", "pid": 0, "start_time": 0});
    store.commit(&[Op::Put(key, serde_json::to_vec(&v)?)])?;
    Ok(())
}

/// A sandbox whose process runs but whose pid the store never got (ferryd SIGKILLed
/// between the spawn and the commit): the restart's reconcile finds the process in the
/// sandbox's namespace and kills it by its pid, and the sandbox is exited, removable, with
/// nothing left; the control, a sandbox recorded whole, still runs and answers.
#[test]
fn a_process_whose_pid_never_reached_the_store_is_killed_by_reconcile() -> Result<()> {
    let mut host = host_or_skip!();
    let net = unique("n");
    host.create_network(&net, &["--subnet", "10.100.0.0/24"])?;
    let lost = host.run_idle("lost", &["--network", &net])?;
    let web = host.run_web("web", &["--network", &net])?;
    host.run_idle("client", &["--network", &net])?;
    let pid = host.inspect("lost")?["State"]["Pid"].as_i64().unwrap_or(0) as i32;
    ensure!(pid > 0, "lost has no pid");
    let data_root = host.data_root().to_path_buf();
    let mut rewritten = Ok(());
    host.restart_kill9_with(|| rewritten = forget_pid(&data_root, &lost))?;
    rewritten?;
    ensure!(
        ferry_testkit::process_gone(pid, Duration::from_secs(5)),
        "the process {pid} of the sandbox whose pid the store lacked still runs after reconcile"
    );
    let state = host.inspect("lost")?["State"]["Status"].clone();
    ensure!(state == "exited", "lost is {state}, not exited");
    host.ferry_ok(&["rm", "-f", "lost"])?;
    // Control: the sandbox recorded whole was left running and reachable.
    let web_ip = host.ip_of("web", &net)?;
    host.expect_fetch("client", &web_ip, &web)?;
    remove_all_and_check_leaks(&host, &[])?;
    host.finish()
}

/// SIGKILL ferryd at several points of a `network connect` (a few milliseconds apart, so
/// some land between the store's commit and the end of the kernel work, as in issue 17):
/// after each restart the connect is wholly done (the sandbox answers on the network's
/// address) or wholly undone (not connected), never recorded but dead.
#[test]
fn a_sigkill_during_network_connect_leaves_it_wholly_done_or_undone() -> Result<()> {
    let mut host = host_or_skip!();
    let (a, b) = (unique("a"), unique("b"));
    host.create_network(&a, &["--subnet", "10.101.0.0/24"])?;
    host.create_network(&b, &["--subnet", "10.102.0.0/24"])?;
    let web = host.run_web("web", &["--network", &a])?;
    host.run_idle("client", &["--network", &b])?;
    let (mut done, mut undone) = (0, 0);
    for delay_us in [0u64, 500, 1000, 1500, 2000, 3000, 5000, 8000] {
        let mut connect = std::process::Command::new(&host.bins().ferry)
            .args(["-H", &host.host_url(), "network", "connect", &b, "web"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        std::thread::sleep(Duration::from_micros(delay_us));
        host.restart_kill9()?;
        let _ = connect.wait();
        if host.networks_of("web")?.contains(&b) {
            let ip = host.ip_of("web", &b)?;
            host.expect_fetch("client", &ip, &web).with_context(|| {
                format!("killed {delay_us} µs into the connect: recorded but not reachable")
            })?;
            host.ferry_ok(&["network", "disconnect", &b, "web"])?;
            done += 1;
        } else {
            undone += 1;
        }
    }
    eprintln!("connect killed 8 times: {done} wholly done, {undone} wholly undone");
    remove_all_and_check_leaks(&host, &[])?;
    host.finish()
}

/// The Docker plugin's socket: a request ferry refuses (bad JSON, a bad pool, a gateway
/// outside the pool, a bridge that is not a bridge, an address outside the network, an
/// unknown endpoint) is a 4xx with `Err` naming the problem (dockerd takes any non-200
/// as the failure and shows `Err`), ferryd stays up; the controls succeed.
#[test]
fn bad_plugin_calls_answer_4xx_naming_the_problem() -> Result<()> {
    let host = host_or_skip!();
    let sock = host.plugin_dir().join("ferry.sock");
    let (n, e) = ("a".repeat(64), "b".repeat(64));
    let create = |pool: &str, gw: &str, opts: &str| {
        format!(
            r#"{{"NetworkID":"{n}","IPv4Data":[{{"Pool":"{pool}","Gateway":"{gw}"}}],"Options":{{"com.docker.network.generic":{{{opts}}}}}}}"#
        )
    };
    let endpoint = |addr: &str| {
        format!(r#"{{"NetworkID":"{n}","EndpointID":"{e}","Interface":{{"Address":"{addr}"}}}}"#)
    };
    #[rustfmt::skip]
    let cases: Vec<(&str, String, &str)> = vec![
        ("/IpamDriver.RequestPool", "garbage".into(), "invalid JSON"),
        ("/IpamDriver.RequestPool", r#"{"AddressSpace":"LocalDefault","Pool":"10.103.0.300/24"}"#.into(), "subnet"),
        ("/IpamDriver.RequestPool", r#"{"AddressSpace":"LocalDefault","Pool":"127.0.0.0/24"}"#.into(), "subnet 127.0.0.0/24"),
        ("/NetworkDriver.CreateNetwork", r#"{"NetworkID":"x","IPv4Data":[]}"#.into(), "network ID x"),
        ("/NetworkDriver.CreateNetwork", create("10.104.0.0/24", "10.105.0.1/24", ""), "gateway (10.105.0.1/24)"),
        ("/NetworkDriver.CreateNetwork", create("10.104.0.0/24", "10.104.0.0/24", ""), "gateway (10.104.0.0/24)"),
        ("/NetworkDriver.CreateNetwork", create("10.104.0.0/24", "10.104.0.1/24", r#""com.docker.network.bridge.name":"lo""#), "lo is not a bridge"),
        ("/NetworkDriver.Join", format!(r#"{{"NetworkID":"{n}","EndpointID":"{e}","SandboxKey":"/x"}}"#), "not found"),
        ("/IpamDriver.RequestPool", r#"{"AddressSpace":"LocalDefault","Pool":"10.103.0.0/24","SubPool":"10.107.0.0/25"}"#.into(), "ip-range"),
        ("/IpamDriver.RequestPool", r#"{"AddressSpace":"LocalDefault","Pool":"10.103.0.0/31"}"#.into(), "no host"),
        ("/IpamDriver.RequestPool", r#"{"AddressSpace":"LocalDefault","Pool":"224.1.0.0/16"}"#.into(), "multicast"),
        ("/IpamDriver.RequestAddress", r#"{"PoolID":"nosuch","Address":"10.103.0.5"}"#.into(), "nosuch"),
        ("/NetworkDriver.CreateNetwork", create("bad", "", ""), "bad"),
        ("/NetworkDriver.CreateNetwork", create("10.104.0.0/24", "nope", ""), "nope"),
        ("/NetworkDriver.CreateNetwork", create("10.104.0.0/24", "", r#""com.docker.network.driver.mtu":"abc""#), "mtu"),
        ("/NetworkDriver.CreateNetwork", create("10.104.0.0/24", "", r#""com.docker.network.bridge.name":"a-name-over-15-bytes""#), "15 bytes"),
        ("/NetworkDriver.CreateEndpoint", r#"{"NetworkID":"x","EndpointID":"e1","Interface":{"Address":"10.104.0.5/24"}}"#.into(), "ID"),
        ("/NetworkDriver.Join", r#"{"NetworkID":"x","EndpointID":"y","SandboxKey":"/x"}"#.into(), "endpoint y"),
        ("/NetworkDriver.ProgramExternalConnectivity", format!(r#"{{"NetworkID":"{n}","EndpointID":"{e}"}}"#), "not found"),
    ];
    // Every call that takes arguments, sent garbage, fields of the wrong type, a string.
    let methods = [
        "IpamDriver.RequestPool",
        "IpamDriver.RequestAddress",
        "IpamDriver.ReleaseAddress",
        "IpamDriver.ReleasePool",
        "NetworkDriver.CreateNetwork",
        "NetworkDriver.DeleteNetwork",
        "NetworkDriver.CreateEndpoint",
        "NetworkDriver.DeleteEndpoint",
        "NetworkDriver.Join",
        "NetworkDriver.Leave",
        "NetworkDriver.EndpointOperInfo",
        "NetworkDriver.ProgramExternalConnectivity",
        "NetworkDriver.RevokeExternalConnectivity",
    ];
    let mut cases = cases;
    let paths: Vec<String> = methods.iter().map(|m| format!("/{m}")).collect();
    for p in &paths {
        cases.push((p.as_str(), "{garbage".into(), "invalid JSON"));
        cases.push((
            p.as_str(),
            r#"{"NetworkID":5,"EndpointID":5,"PoolID":5,"AddressSpace":5,"Pool":5,"Address":5}"#
                .into(),
            "invalid JSON",
        ));
        cases.push((p.as_str(), r#""a string""#.into(), "invalid JSON"));
    }
    ensure!(cases.len() >= 50, "{} plugin cases", cases.len());
    let before = world(&host)?;
    ensure!(!before.0.is_empty(), "the store copy read nothing");
    for (path, body, mention) in &cases {
        let (status, answer) = http(&sock, "POST", path, Some(body))?;
        ensure!(
            world(&host)? == before,
            "{path} {body}: a refused call changed the store or the kernel"
        );
        ensure!(
            (400..500).contains(&status),
            "{path} {body} answered {status}:\n{answer}"
        );
        ensure!(
            answer.contains(mention),
            "{path} {body}: the message does not name {mention:?}:\n{answer}"
        );
    }
    ensure!(
        host.user_networks()?.is_empty(),
        "a refused plugin call left a network"
    );
    // Controls: the network and an endpoint made right; then a bad address on it.
    let (status, answer) = http(
        &sock,
        "POST",
        "/NetworkDriver.CreateNetwork",
        Some(&create("10.104.0.0/24", "10.104.0.1/24", "")),
    )?;
    ensure!(status == 200, "control CreateNetwork: {answer}");
    let (status, answer) = http(
        &sock,
        "POST",
        "/NetworkDriver.CreateEndpoint",
        Some(&endpoint("10.106.0.5/24")),
    )?;
    ensure!(
        status == 400 && answer.contains("10.106.0.5"),
        "an address outside the network: {status} {answer}"
    );
    let (status, answer) = http(
        &sock,
        "POST",
        "/NetworkDriver.CreateEndpoint",
        Some(&endpoint("10.104.0.5/24")),
    )?;
    ensure!(status == 200, "control CreateEndpoint: {answer}");
    for (path, body) in [
        (
            "/NetworkDriver.DeleteEndpoint",
            format!(r#"{{"NetworkID":"{n}","EndpointID":"{e}"}}"#),
        ),
        (
            "/NetworkDriver.DeleteNetwork",
            format!(r#"{{"NetworkID":"{n}"}}"#),
        ),
    ] {
        let (status, answer) = http(&sock, "POST", path, Some(&body))?;
        ensure!(status == 200, "{path}: {answer}");
    }
    remove_all_and_check_leaks(&host, &[])?;
    host.finish()
}

/// A sandbox's namespace pin deleted behind ferry's back: disconnect and `rm -f` still
/// succeed, its addresses are released (a new sandbox takes the same static address), and
/// nothing is left; the same done twice is a clean refusal, not a 500.
#[test]
fn disconnect_and_rm_succeed_after_the_namespace_was_deleted_behind_ferrys_back() -> Result<()> {
    let host = host_or_skip!();
    let (a, b) = (unique("a"), unique("b"));
    host.create_network(&a, &["--subnet", "10.108.0.0/24"])?;
    host.create_network(&b, &["--subnet", "10.109.0.0/24"])?;
    let id = host.run_idle("victim", &["--network", &a, "--ip", "10.108.0.50"])?;
    host.ferry_ok(&["network", "connect", "--ip", "10.109.0.50", &b, "victim"])?;
    let pin = host.exec_root().join("netns").join(&id[..12]);
    let out = std::process::Command::new("umount")
        .arg("-l")
        .arg(&pin)
        .output()?;
    ensure!(out.status.success(), "umount {}: {out:?}", pin.display());
    std::fs::remove_file(&pin)?;
    let _ = std::fs::remove_file(host.netns_dir().join("ferry-victim"));

    host.ferry_ok(&["network", "disconnect", &b, "victim"])?;
    let again = host.ferry_err(&["network", "disconnect", &b, "victim"])?;
    ensure!(
        again.stderr.contains("not connected"),
        "a second disconnect: {again}"
    );
    host.ferry_ok(&["rm", "-f", "victim"])?;
    let again = host.ferry_err(&["rm", "-f", "victim"])?;
    ensure!(
        again.stderr.to_lowercase().contains("no such container"),
        "a second rm: {again}"
    );
    // The static addresses are free again.
    host.run_idle("heir", &["--network", &a, "--ip", "10.108.0.50"])?;
    host.ferry_ok(&["network", "connect", "--ip", "10.109.0.50", &b, "heir"])?;
    remove_all_and_check_leaks(&host, &[])?;
    host.finish()
}

/// SIGTERM while a `network disconnect` is in flight: ferryd stops taking connections
/// but answers what it took before it exits, so the CLI either gets its answer (and the
/// sandbox is disconnected, eth1 gone, after the restart) or its request was never
/// taken (refused, reset in the listen queue, or closed before it was read) and the
/// sandbox is still connected and wired — never a request half done.
#[test]
fn sigterm_during_a_disconnect_lets_it_finish() -> Result<()> {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let mut host = host_or_skip!();
    host.create_network("t1", &["--subnet", "10.171.0.0/24"])?;
    host.create_network("t2", &["--subnet", "10.172.0.0/24"])?;
    host.run_idle("sb", &["--network", "t1"])?;
    let (mut answered, mut refused) = (0, 0);
    for i in 0..8u64 {
        if !host.inspect("sb")?["NetworkSettings"]["Networks"]
            .as_object()
            .is_some_and(|m| m.contains_key("t2"))
        {
            host.ferry_ok(&["network", "connect", "t2", "sb"])?;
        }
        let pid = host.ferryd_pid().context("ferryd runs")?;
        let out = std::thread::scope(|s| {
            let h = s.spawn(|| host.ferry(&["network", "disconnect", "t2", "sb"]));
            std::thread::sleep(Duration::from_millis(i));
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            h.join().expect("the CLI thread")
        })?;
        host.restart_after_exit()?;
        let addrs = host
            .exec("sb", &[ferry_testkit::BUSYBOX, "ip", "-4", "addr"])?
            .expect_success()?
            .stdout;
        let on_t2 = host.inspect("sb")?["NetworkSettings"]["Networks"]
            .as_object()
            .is_some_and(|m| m.contains_key("t2"));
        if out.success() {
            ensure!(
                !on_t2 && !addrs.contains("10.172.0."),
                "try {i}: disconnect answered, yet sb is still on t2:\n{addrs}"
            );
            answered += 1;
        } else {
            // Not taken: refused at connect, reset in the listen queue ferryd closed, or
            // closed before its request was read; a transport error, never ferryd's answer.
            ensure!(
                out.stderr.contains("Cannot connect to ferryd")
                    || out.stderr.contains("request to ferryd"),
                "try {i}: the disconnect failed another way:\n{out}"
            );
            ensure!(
                on_t2 && addrs.contains("10.172.0."),
                "try {i}: refused, yet sb is not wired on t2:\n{addrs}"
            );
            refused += 1;
        }
    }
    eprintln!("sigterm: 8 tries, {answered} answered and done, {refused} refused before taken");
    remove_all_and_check_leaks(&host, &[])?;
    host.finish()
}
