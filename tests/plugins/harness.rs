//! The plugin processes and directories of tests/plugin_host.rs: the seed-style network
//! plugin (Python) and the independent network and IPAM plugin (Perl), each started in the test
//! host's network namespace and killed by pid when dropped, and the test's own plugin
//! directories.

use anyhow::{bail, ensure, Context, Result};
use ferry_testkit::{unique, TestHost};
use serde_json::Value;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The test's own plugin directories, removed at the end.
pub struct PluginDirs {
    pub root: PathBuf,
}

impl PluginDirs {
    pub fn new() -> Result<PluginDirs> {
        let root = PathBuf::from("/tmp").join(unique("fyplug"));
        for d in ["sockets", "etc", "lib"] {
            std::fs::create_dir_all(root.join(d))?;
        }
        Ok(PluginDirs { root })
    }
    pub fn sockets(&self) -> PathBuf {
        self.root.join("sockets")
    }
    pub fn etc(&self) -> PathBuf {
        self.root.join("etc")
    }
    pub fn lib(&self) -> PathBuf {
        self.root.join("lib")
    }
    /// ferryd's flags for these directories, with short bounds so a failing plugin
    /// costs the test seconds, not dockerd's 30 s.
    pub fn ferryd_args(&self, timeout_s: u32, retry_s: u32) -> Vec<String> {
        let s = |p: PathBuf| p.display().to_string();
        vec![
            "--plugin-sockets".into(),
            s(self.sockets()),
            "--plugin-specs".into(),
            s(self.etc()),
            "--plugin-specs".into(),
            s(self.lib()),
            "--plugin-timeout".into(),
            timeout_s.to_string(),
            "--plugin-retry".into(),
            retry_s.to_string(),
        ]
    }
}

impl Drop for PluginDirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A TestHost whose ferryd looks for plugins in `dirs` only; None (after the testkit's
/// skip notice, or a panic under CI) without privileges.
pub fn start_host(
    scenario: &str,
    dirs: &PluginDirs,
    timeout_s: u32,
    retry_s: u32,
) -> Result<Option<TestHost>> {
    let args = dirs.ferryd_args(timeout_s, retry_s);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    if !ferry_testkit::privileged(scenario) {
        return Ok(None);
    }
    TestHost::start_with_args(scenario, &args).map(Some)
}

/// The seed-style plugin, running in the host's namespace; killed by pid when dropped.
pub struct SeedPlugin {
    child: Child,
    log: PathBuf,
}

impl SeedPlugin {
    pub fn start(
        host: &TestHost,
        dir: &Path,
        listen: &[&str],
        extra: &[&str],
    ) -> Result<SeedPlugin> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/plugins/seed_driver.py");
        let log = dir.join(format!("{}.calls", unique("plugin")));
        let mut cmd = Command::new("python3");
        cmd.arg(&script)
            .args(listen)
            .arg("--log")
            .arg(&log)
            // Kept across restarts of the plugin in one test, as a real plugin must.
            .arg("--state")
            .arg(dir.join("plugin.state"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let child = spawn_in_host(host, &mut cmd, "python3 seed_driver.py")?;
        let p = SeedPlugin { child, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !p.lines()?.iter().any(|l| l["ready"] == true) {
            if Instant::now() > deadline {
                bail!("the seed plugin did not start listening within 10 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(p)
    }

    pub fn lines(&self) -> Result<Vec<Value>> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).context("a call record"))
            .collect()
    }

    /// The calls received so far, as (method, body).
    pub fn calls(&self) -> Result<Vec<(String, Value)>> {
        Ok(self
            .lines()?
            .into_iter()
            .filter_map(|l| Some((l["call"].as_str()?.to_string(), l["body"].clone())))
            .collect())
    }

    pub fn methods(&self) -> Result<Vec<String>> {
        Ok(self.calls()?.into_iter().map(|(m, _)| short(&m)).collect())
    }

    /// Forget the calls so far (the next scenario step's calls are checked alone).
    pub fn clear(&self) -> Result<()> {
        std::fs::write(&self.log, "")?;
        Ok(())
    }
}

impl Drop for SeedPlugin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `cmd` started in the test host's network namespace, killed if the test dies.
fn spawn_in_host(host: &TestHost, cmd: &mut Command, what: &str) -> Result<Child> {
    let fd = host.netns()?.as_raw_fd();
    // SAFETY: only async-signal-safe syscalls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc_prctl_pdeathsig() != 0 || libc_setns(fd) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().with_context(|| format!("start {what}"))
}

/// Nothing of ferry's (nor of the test's plugins) is left in the host's namespace.
pub fn expect_no_leftovers(host: &TestHost) -> Result<()> {
    let leftovers = host.leftovers()?;
    ensure!(leftovers.is_empty(), "left behind: {leftovers}");
    Ok(())
}

fn libc_prctl_pdeathsig() -> i32 {
    // SAFETY: prctl with PR_SET_PDEATHSIG and a signal number is async-signal-safe.
    unsafe { nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGKILL as u64) }
}

fn libc_setns(fd: i32) -> i32 {
    // SAFETY: setns on a valid namespace fd is async-signal-safe.
    unsafe { nix::libc::setns(fd, nix::libc::CLONE_NEWNET) }
}

/// `NetworkDriver.Join` → `Join`.
pub fn short(method: &str) -> String {
    method.rsplit('.').next().unwrap_or(method).to_string()
}

pub fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    k.sort();
    k
}

/// Links in the host's namespace whose name starts with `prefix`.
pub fn host_links(host: &TestHost, prefix: &str) -> Result<Vec<String>> {
    Ok(host
        .links()?
        .into_iter()
        .filter(|l| l.starts_with(prefix))
        .collect())
}

pub fn make_bridge(host: &TestHost, name: &str, cidr: &str) -> Result<()> {
    host.in_host("ip", &["link", "add", name, "type", "bridge"])?
        .expect_success()?;
    host.in_host("ip", &["addr", "add", cidr, "dev", name])?
        .expect_success()?;
    host.in_host("ip", &["link", "set", name, "up"])?
        .expect_success()?;
    Ok(())
}

/// A plugin network `net` on bridge `br` (made here) for the plugin `name`.
pub fn plugin_network(
    host: &TestHost,
    name: &str,
    net: &str,
    br: &str,
    subnet: &str,
) -> Result<()> {
    let gw = subnet.replace(".0/24", ".1/24");
    make_bridge(host, br, &gw)?;
    host.ferry_ok(&[
        "network",
        "create",
        "-d",
        name,
        "--subnet",
        subnet,
        "-o",
        &format!("bridge={br}"),
        net,
    ])?;
    Ok(())
}

/// Nothing of `sandbox` on `net` is left: no veth of the plugin's on the host, the
/// sandbox is not on the network, and no address of the network is taken.
pub fn expect_nothing_attached(host: &TestHost, net: &str) -> Result<()> {
    let left = host_links(host, "veth-")?;
    ensure!(left.is_empty(), "the plugin's veths are left: {left:?}");
    let inspect = host.network_inspect(net)?;
    let containers = &inspect["Containers"];
    ensure!(
        containers.as_object().is_none_or(|o| o.is_empty()),
        "{net} still lists {containers}"
    );
    Ok(())
}

/// The independent network and IPAM plugin (Perl), in the host's namespace; killed by pid when dropped.
pub struct PerlPlugin {
    child: Child,
    log: PathBuf,
    pub failfile: PathBuf,
}

impl PerlPlugin {
    pub fn start(host: &TestHost, sock: &Path, dir: &Path) -> Result<PerlPlugin> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/plugins/perl_driver.pl");
        let log = dir.join(format!("{}.calls", unique("ipam")));
        let failfile = dir.join("ipam.fail");
        let mut cmd = Command::new("perl");
        cmd.arg(&script)
            .arg(sock)
            .arg(&log)
            .arg(&failfile)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let child = spawn_in_host(host, &mut cmd, "perl perl_driver.pl")?;
        let p = PerlPlugin {
            child,
            log,
            failfile,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&p.log)
            .unwrap_or_default()
            .contains("ready")
        {
            if Instant::now() > deadline {
                bail!("the Perl plugin did not start listening within 10 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(p)
    }

    pub fn calls(&self) -> Result<Vec<(String, Value)>> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut out = vec![];
        for l in text.lines() {
            let v: Value = serde_json::from_str(l)?;
            if let Some(c) = v["call"].as_str() {
                out.push((c.to_string(), v["body"].clone()));
            }
        }
        Ok(out)
    }

    pub fn methods(&self) -> Result<Vec<String>> {
        Ok(self.calls()?.into_iter().map(|(m, _)| short(&m)).collect())
    }

    pub fn clear(&self) -> Result<()> {
        std::fs::write(&self.log, "")?;
        Ok(())
    }

    /// Wait (bounded) until the calls since the last clear are dockerd's for the recorded
    /// command `fixture`: the same calls by full name (`NetworkDriver.Join`), in the same
    /// order, each body with the same fields ([`shape`]).
    pub fn expect_recorded(&self, fixture: &str) -> Result<()> {
        let rec = recorded(fixture)?;
        let want: Vec<String> = rec.iter().map(|(m, _)| m.clone()).collect();
        self.expect_calls(&want, fixture)?;
        for ((m, got), (_, rec)) in self.calls()?.iter().zip(&rec) {
            ensure!(
                shape(got) == shape(rec),
                "{fixture}: {m} sent {:?}, dockerd {:?}",
                shape(got),
                shape(rec)
            );
        }
        Ok(())
    }

    /// Wait (bounded) until the calls since the last clear, by their full names
    /// (`NetworkDriver.Join`), are `want`.
    pub fn expect_calls(&self, want: &[String], what: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got: Vec<String> = self.calls()?.into_iter().map(|(m, _)| m).collect();
            if got == want {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{what}: the Perl plugin got\n  {got:?}\nwhere dockerd sent\n  {want:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait (bounded) until the calls since the last clear are `want`: releases are
    /// sent right after the commit that freed the address, not before the CLI returns.
    pub fn expect_methods(&self, want: &[&str], what: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got = self.methods()?;
            if got == want {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{what}: the IPAM plugin got {got:?}, expected {want:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PerlPlugin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The gateway address of docker_gwbridge, as `network inspect` gives it.
pub fn gateway_bridge_gateway(host: &TestHost) -> Result<String> {
    let net = host.network_inspect("docker_gwbridge")?;
    net["IPAM"]["Config"][0]["Gateway"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("docker_gwbridge has no gateway: {net}"))
}

/// The sandbox's default route goes via `gw` on `dev`, and no other default route is there.
pub fn expect_default_route(host: &TestHost, sandbox: &str, gw: &str, dev: &str) -> Result<()> {
    let out = host
        .exec(sandbox, &[ferry_testkit::BUSYBOX, "ip", "route"])?
        .expect_success()?;
    let routes: Vec<&str> = out
        .stdout
        .lines()
        .map(str::trim)
        .filter(|r| r.starts_with("default"))
        .collect();
    ensure!(
        routes.len() == 1 && routes[0].starts_with(&format!("default via {gw} dev {dev}")),
        "{sandbox}'s default route is not via {gw} on {dev}: {routes:?}"
    );
    Ok(())
}

/// The fields of a call's body, one level down too (`Options.…`, `Interface.…`), sorted:
/// what must match dockerd's, whatever the values.
pub fn shape(body: &Value) -> Vec<String> {
    let mut out = vec![];
    for (k, v) in body.as_object().into_iter().flatten() {
        out.push(k.clone());
        for k2 in v.as_object().into_iter().flat_map(|o| o.keys()) {
            out.push(format!("{k}.{k2}"));
        }
    }
    out.sort();
    out
}

/// The plugin calls dockerd made for a recorded command (`P:name`), by full name, with
/// their bodies, from shared/fixtures/docker-plugin-api beside the checkout.
pub fn recorded(fixture: &str) -> Result<Vec<(String, Value)>> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = here
        .ancestors()
        .map(|a| a.join("shared/fixtures/docker-plugin-api"))
        .find(|p| p.is_dir())
        .context("no shared/fixtures/docker-plugin-api beside the checkout")?;
    let text = std::fs::read_to_string(dir.join(format!("{fixture}.json")))?;
    let v: Value = serde_json::from_str(&text)?;
    Ok(v["plugin_calls"]
        .as_array()
        .context("no plugin_calls")?
        .iter()
        .filter_map(|c| {
            let path = c["path"].as_str()?.trim_start_matches('/').to_string();
            Some((path, c["request"].clone()))
        })
        .collect())
}

/// A second ferryd in the test host's network namespace (`--instance fz`: links `fz…`,
/// tables `ferry_fz`, its own directories, default bridge and socket), serving its Docker
/// plugin socket for the first one to drive. Dropped: `system cleanup` through its own
/// socket (its tables, bridge and sysctls go; it exits), then killed by pid if it has not.
pub struct SecondFerryd {
    child: Child,
    pub root: PathBuf,
    sock: PathBuf,
}

impl SecondFerryd {
    pub fn start(host: &TestHost, root: &Path) -> Result<SecondFerryd> {
        let sock = root.join("ferry.sock");
        for d in ["data", "run", "netns", "plugin", "specs"] {
            std::fs::create_dir_all(root.join(d))?;
        }
        let log = std::fs::File::create(root.join("ferryd.log"))?;
        let mut cmd = Command::new(&host.bins().ferryd);
        let s = |d: &str| root.join(d).display().to_string();
        cmd.args(["--instance", "fz", "--bip", "172.31.250.1/24"])
            .args(["--data-root", &s("data"), "--exec-root", &s("run")])
            .args(["--netns-dir", &s("netns"), "--plugin-dir", &s("plugin")])
            .args(["--plugin-sockets", "", "--plugin-specs", &s("specs")])
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .env("RUST_LOG", "info")
            .env_remove("FERRY_FAULT")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = spawn_in_host(host, &mut cmd, "the second ferryd")?;
        let b = SecondFerryd {
            child,
            root: root.to_path_buf(),
            sock,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while ferry_testkit::ping(&b.sock).is_err() {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(root.join("ferryd.log")).unwrap_or_default();
                bail!("the second ferryd did not answer within 20 s:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(b)
    }

    /// Its Docker plugin socket.
    pub fn plugin_socket(&self) -> PathBuf {
        self.root.join("plugin").join("ferry.sock")
    }

    /// `ferry ARGS…` against the second ferryd.
    pub fn ferry(&self, host: &TestHost, args: &[&str]) -> Result<ferry_testkit::Output> {
        let mut cmd = Command::new(&host.bins().ferry);
        cmd.arg("-H")
            .arg(format!("unix://{}", self.sock.display()))
            .args(args);
        ferry_testkit::run_bounded(&mut cmd, ferry_testkit::CLI_TIMEOUT)
    }

    /// Kill it (SIGKILL: what it made stays) and start it again on the same state.
    pub fn restart(mut self, host: &TestHost) -> Result<SecondFerryd> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        SecondFerryd::start(host, &self.root)
    }

    /// Clean up through its own socket, then make sure it is gone.
    pub fn stop(mut self, host: &TestHost) -> Result<()> {
        let out = self.ferry(host, &["system", "cleanup"])?;
        let _ = self.child.kill();
        let _ = self.child.wait();
        out.expect_success().map(drop)
    }
}

impl Drop for SecondFerryd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
