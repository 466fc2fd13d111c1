//! TestHost: a throwaway host for one scenario.
//!
//! Mechanism: ferryd is spawned with a `pre_exec` that unshares the network namespace, so its
//! namespace is the "host" the scenario sees (bridges, host-side veths, the `host` driver).
//! Right after the spawn we open `/proc/<pid>/ns/net` and keep that file for the TestHost's
//! life: kernel checks run `busybox ip` with `setns` on it (working even while ferryd is down),
//! and [`TestHost::restart_kill9`] starts the new ferryd inside it with `setns`, so bridges and
//! veths survive the SIGKILL as they would on a real host. Dropping the file at the end lets the
//! namespace and everything in it go. ferryd shares the test's mount namespace, so mounts it
//! leaves are visible in /proc/self/mountinfo.
//!
//! The end of a host (finish, Drop) is in teardown.rs.

use crate::api::ping;
use crate::bins::Bins;
use crate::cmd::{run_bounded, Output};
use crate::kernel::{self, Leftovers};
use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const READY_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on one `ferry` CLI call.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(20);

/// How long [`TestHost::links`] waits for retired veth pairs to be deleted.
pub const RETIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// A veth pair ferryd has retired and deletes in the background: `fyz` + 11 hex digits.
pub fn is_retired(link: &str) -> bool {
    link.strip_prefix("fyz").is_some_and(|hex| {
        hex.len() == 11 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// The networks ferryd creates itself; teardown leaves them.
pub const PREDEFINED_NETWORKS: [&str; 3] = ["bridge", "host", "none"];

pub struct TestHost {
    pub(crate) scenario: String,
    pub(crate) dir: Option<TempDir>,
    pub(crate) root: PathBuf,
    pub(crate) data_root: PathBuf,
    pub(crate) exec_root: PathBuf,
    pub(crate) netns_dir: PathBuf,
    pub(crate) sock: PathBuf,
    pub(crate) log: PathBuf,
    pub(crate) www: PathBuf,
    pub(crate) bins: Bins,
    pub(crate) ferryd: Option<Child>,
    /// Extra ferryd flags, for this start and every restart.
    pub(crate) ferryd_args: Vec<String>,
    /// Environment variables for ferryd's next starts ([`TestHost::set_ferryd_env`]).
    pub(crate) ferryd_env: Vec<(String, String)>,
    /// ferryd runs in a mount namespace of its own with a tmpfs over its exec root, as
    /// under `ip netns exec` or a service manager's private mounts: its namespace pins
    /// and sandbox files are not visible to the test (nor to the `ferry` CLI it runs).
    pub(crate) private_mounts: bool,
    /// ferryd's network namespace, held open for the host's life.
    pub(crate) netns: Option<File>,
    /// What the host held when ferryd first became ready (its own pinned namespace, `lo`, a
    /// default bridge made at start…): [`TestHost::leftovers`] reports only what is beyond it.
    baseline: Baseline,
    pub(crate) finished: bool,
    /// `ferry system cleanup` succeeded: ferryd has stopped on its own, with status 0.
    pub(crate) cleaned_up: std::sync::atomic::AtomicBool,
}

impl TestHost {
    /// [`TestHost::start`] when running as root; None (after a skip notice) otherwise — or a
    /// panic when `CI` is set (see [`crate::privileged`]).
    pub fn start_if_privileged(scenario: &str) -> Result<Option<TestHost>> {
        if !crate::privileged(scenario) {
            return Ok(None);
        }
        TestHost::start(scenario).map(Some)
    }

    /// Make the temporary roots and start ferryd in a fresh network namespace; returns once
    /// `GET /_ping` answers (at most 10 s).
    pub fn start(scenario: &str) -> Result<TestHost> {
        TestHost::start_with_args(scenario, &[])
    }

    /// [`TestHost::start`] with extra ferryd flags (such as `--dns-upstream`).
    pub fn start_with_args(scenario: &str, ferryd_args: &[&str]) -> Result<TestHost> {
        TestHost::start_inner(scenario, ferryd_args, None, false)
    }

    /// [`TestHost::start`] with ferryd's mounts private ([`TestHost::private_mounts`]).
    pub fn start_with_private_mounts(scenario: &str) -> Result<TestHost> {
        TestHost::start_inner(scenario, &[], None, true)
    }

    /// A host whose network namespace the test made and wired first (one of many hosts on
    /// an underlay: see [`crate::cluster`]); the host holds `netns` from now on.
    pub fn start_in(scenario: &str, netns: File, ferryd_args: &[&str]) -> Result<TestHost> {
        TestHost::start_inner(scenario, ferryd_args, Some(netns), false)
    }

    fn start_inner(
        scenario: &str,
        ferryd_args: &[&str],
        netns: Option<File>,
        private_mounts: bool,
    ) -> Result<TestHost> {
        let bins = Bins::locate()?;
        let dir = tempfile::Builder::new()
            .prefix("ferry-t-")
            .tempdir_in(temp_base())
            .context("create the test host's temporary directory")?;
        let root = dir.path().to_path_buf();
        let host = TestHost {
            scenario: scenario.to_string(),
            data_root: root.join("data"),
            exec_root: root.join("run"),
            netns_dir: root.join("netns"),
            sock: root.join("ferry.sock"),
            log: root.join("ferryd.log"),
            www: root.join("www"),
            root,
            dir: Some(dir),
            bins,
            ferryd: None,
            ferryd_args: ferryd_args.iter().map(|s| s.to_string()).collect(),
            ferryd_env: Vec::new(),
            private_mounts,
            netns: None,
            baseline: Baseline {
                etc_mount_ids: kernel::etc_mount_ids()?,
                ..Baseline::default()
            },
            finished: false,
            cleaned_up: Default::default(),
        };
        for d in [&host.data_root, &host.exec_root, &host.netns_dir, &host.www] {
            std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
        }
        // From here on `host` owns what it started: an early return drops it and tears down.
        let mut host = host;
        match netns {
            Some(ns) => {
                host.ferryd = Some(host.spawn_ferryd(Some(ns.as_raw_fd()))?);
                host.netns = Some(ns);
            }
            None => {
                host.ferryd = Some(host.spawn_ferryd(None)?);
                let pid = host.ferryd_pid().context("ferryd was just started")?;
                let ns_path = format!("/proc/{pid}/ns/net");
                host.netns = Some(File::open(&ns_path).with_context(|| {
                    format!(
                        "open {ns_path} (did ferryd exit at once?)\n{}",
                        host.log_tail(40)
                    )
                })?);
            }
        }
        // A real host's loopback is up (published 127.0.0.1 ports rely on it).
        host.in_host("ip", &["link", "set", "lo", "up"])?
            .expect_success()?;
        host.wait_ready()?;
        host.baseline = Baseline {
            links: host.links()?.into_iter().collect(),
            netns_files: host.netns_files()?.into_iter().collect(),
            ip_netns_links: host.ip_netns_links()?.into_iter().collect(),
            mount_points: host
                .mounts_under_root()?
                .into_iter()
                .map(|m| m.mount_point)
                .collect(),
            etc_mount_ids: std::mem::take(&mut host.baseline.etc_mount_ids),
            nft_elements: host.nft_elements()?.into_iter().collect(),
            routes: host.routes()?.into_iter().map(|r| r.line).collect(),
        };
        Ok(host)
    }

    /// SIGKILL ferryd (its sandboxes' processes keep running, as on a real host), then start a
    /// new ferryd with the same roots in the same network namespace and wait until it answers.
    /// After the test stopped ferryd itself (a signal it sent by [`TestHost::ferryd_pid`]):
    /// wait for it to exit (at most 15 s), then start a new one as
    /// [`TestHost::restart_kill9`] does.
    pub fn restart_after_exit(&mut self) -> Result<()> {
        self.restart_after_exit_with(|| {})
    }

    /// As [`TestHost::restart_after_exit`], running `meanwhile` once ferryd has exited and
    /// before the new one starts.
    pub fn restart_after_exit_with(&mut self, meanwhile: impl FnOnce()) -> Result<()> {
        let child = self.ferryd.as_mut().context("ferryd is not running")?;
        wait_bounded(child, Duration::from_secs(15))?.context("ferryd did not exit within 15 s")?;
        self.ferryd = None;
        meanwhile();
        self.log_note("ferryd stopped by the test; starting a new one");
        let fd = self
            .netns
            .as_ref()
            .context("the host network namespace is gone")?
            .as_raw_fd();
        self.ferryd = Some(self.spawn_ferryd(Some(fd))?);
        self.wait_ready()
    }

    /// Set (`Some`) or unset (`None`) an environment variable for ferryd's next starts
    /// (such as `FERRY_FAULT`, read once at start); takes effect at the next restart.
    pub fn set_ferryd_env(&mut self, key: &str, value: Option<&str>) {
        self.ferryd_env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.ferryd_env.push((key.to_string(), v.to_string()));
        }
    }

    /// The extra arguments of ferryd's next starts (those it was started with until then);
    /// takes effect at the next restart.
    pub fn set_ferryd_args(&mut self, args: &[&str]) {
        self.ferryd_args = args.iter().map(|s| s.to_string()).collect();
    }

    pub fn restart_kill9(&mut self) -> Result<()> {
        self.restart_kill9_with(|| {})
    }

    /// As [`TestHost::restart_kill9`], running `meanwhile` while no ferryd runs (to change
    /// the world behind its back: kill a sandbox's process, add an orphan).
    pub fn restart_kill9_with(&mut self, meanwhile: impl FnOnce()) -> Result<()> {
        let child = self.ferryd.as_mut().context("ferryd is not running")?;
        if child.try_wait()?.is_some() {
            bail!(
                "ferryd had already exited before the SIGKILL\n{}",
                self.log_tail(40)
            );
        }
        child.kill().context("SIGKILL ferryd")?;
        wait_bounded(child, STOP_TIMEOUT)?.context("ferryd did not die within 5 s of SIGKILL")?;
        self.ferryd = None;
        meanwhile();
        self.log_note("ferryd killed with SIGKILL by the test; starting a new one");
        let fd = self
            .netns
            .as_ref()
            .context("the host network namespace is gone")?
            .as_raw_fd();
        self.ferryd = Some(self.spawn_ferryd(Some(fd))?);
        self.wait_ready()
    }

    fn spawn_ferryd(&self, join_netns: Option<RawFd>) -> Result<Child> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("open {}", self.log.display()))?;
        let mut cmd = Command::new(&self.bins.ferryd);
        cmd.arg("--data-root")
            .arg(&self.data_root)
            .arg("--exec-root")
            .arg(&self.exec_root)
            .arg("-H")
            .arg(self.host_url())
            .arg("--netns-dir")
            .arg(&self.netns_dir)
            .arg("--plugin-dir")
            .arg(self.plugin_dir())
            .args(self.plughost_defaults())
            .args(&self.ferryd_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        cmd.env("NO_COLOR", "1");
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        // A fault is armed only by the scenario that means to ([`TestHost::set_ferryd_env`]),
        // never inherited from whoever runs the tests.
        cmd.env_remove("FERRY_FAULT");
        cmd.envs(self.ferryd_env.iter().map(|(k, v)| (k, v)));
        let private = self
            .private_mounts
            .then(|| std::ffi::CString::new(self.exec_root.as_os_str().as_encoded_bytes()))
            .transpose()?;
        // SAFETY: only async-signal-safe syscalls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // If the test binary dies, its ferryd dies with it instead of running on.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let rc = match join_netns {
                    None => libc::unshare(libc::CLONE_NEWNET),
                    Some(fd) => libc::setns(fd, libc::CLONE_NEWNET),
                };
                if rc != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(exec_root) = &private {
                    hide_exec_root(exec_root)?;
                }
                Ok(())
            });
        }
        cmd.spawn()
            .with_context(|| format!("start {}", self.bins.ferryd.display()))
    }

    /// plughost: unless the test names its own, ferryd looks for third-party plugins only
    /// under the test's root (never the machine's /run/docker/plugins or
    /// /etc/docker/plugins) and does not wait dockerd's 15 s for a name nobody provides.
    fn plughost_defaults(&self) -> Vec<String> {
        let given = |flag: &str| self.ferryd_args.iter().any(|a| a == flag);
        let mut args = vec![];
        if !given("--plugin-sockets") {
            args.push("--plugin-sockets".into());
            args.push(self.plugin_dir().display().to_string());
        }
        if !given("--plugin-specs") {
            args.push("--plugin-specs".into());
            args.push(self.root.join("plugin-specs").display().to_string());
        }
        if !given("--plugin-retry") {
            args.extend(["--plugin-retry".into(), "0".into()]);
        }
        args
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let child = self.ferryd.as_mut().context("ferryd is not running")?;
            if let Some(status) = child.try_wait()? {
                bail!(
                    "ferryd exited ({status}) before it answered GET /_ping\n{}",
                    self.log_tail(40)
                );
            }
            let answer = if self.sock.exists() {
                ping(&self.sock)
            } else {
                Err(anyhow::anyhow!("no socket yet"))
            };
            match answer {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => bail!(
                    "ferryd did not answer GET /_ping on {} within {READY_TIMEOUT:?}: {e:#}\n{}",
                    self.sock.display(),
                    self.log_tail(40)
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    // ---- where things are ----

    pub fn scenario(&self) -> &str {
        &self.scenario
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn data_root(&self) -> &Path {
        &self.data_root
    }
    pub fn exec_root(&self) -> &Path {
        &self.exec_root
    }
    /// The directory ferryd puts `ferry-<name>` links in for `ip netns`.
    pub fn netns_dir(&self) -> &Path {
        &self.netns_dir
    }
    pub fn sock(&self) -> &Path {
        &self.sock
    }
    /// Where ferryd's Docker plugin socket `ferry.sock` is (never /run/docker/plugins).
    pub fn plugin_dir(&self) -> PathBuf {
        self.root.join("plugins")
    }
    /// `unix:///…/ferry.sock`, for `-H`, FERRY_HOST and DOCKER_HOST.
    pub fn host_url(&self) -> String {
        format!("unix://{}", self.sock.display())
    }
    pub fn bins(&self) -> &Bins {
        &self.bins
    }
    pub fn ferryd_pid(&self) -> Option<u32> {
        self.ferryd.as_ref().map(Child::id)
    }
    /// ferryd's network namespace (the host's).
    pub fn netns(&self) -> Result<&File> {
        self.netns
            .as_ref()
            .context("the host network namespace is gone")
    }

    /// The last `lines` lines of ferryd's log (all its runs).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        format!(
            "---- ferryd log ({}), last {lines} lines ----\n{tail}\n---- end of ferryd log ----",
            self.log.display()
        )
    }

    fn log_note(&self, note: &str) {
        if let Ok(mut f) = OpenOptions::new().append(true).open(&self.log) {
            let _ = writeln!(f, "---- [test] {note} ----");
        }
    }

    // ---- the CLI ----

    /// `ferry -H unix://SOCK ARGS…` (FERRY_HOST set too), bounded; any exit status is Ok.
    pub fn ferry(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = Command::new(&self.bins.ferry);
        cmd.arg("-H")
            .arg(self.host_url())
            .args(args)
            .env("FERRY_HOST", self.host_url());
        let out = run_bounded(&mut cmd, CLI_TIMEOUT)?;
        if args == ["system", "cleanup"] && out.success() {
            self.cleaned_up
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(out)
    }

    /// `ferry ARGS…` that must succeed; its trimmed stdout.
    pub fn ferry_ok(&self, args: &[&str]) -> Result<String> {
        Ok(self.ferry(args)?.expect_success()?.out().to_string())
    }

    /// `ferry ARGS…` that must fail; its output (see [`Output::stderr`]).
    pub fn ferry_err(&self, args: &[&str]) -> Result<Output> {
        self.ferry(args)?.expect_failure()
    }

    // ---- the kernel ----

    /// Interface names in the host's (ferryd's) network namespace, once the veth pairs
    /// ferryd retired (renamed `fyz` + 11 hex digits, deleted in the background: see
    /// ferry-kernel's link/retire.rs) are gone. A retired pair still there after
    /// [`RETIRE_TIMEOUT`] is listed, so a leak still shows.
    pub fn links(&self) -> Result<Vec<String>> {
        let deadline = Instant::now() + RETIRE_TIMEOUT;
        loop {
            let links = kernel::links_in(self.netns()?)?;
            if !links.iter().any(|l| is_retired(l)) || Instant::now() >= deadline {
                return Ok(links);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `busybox ip ARGS…` in the host's network namespace (to make what a user would make by
    /// hand, such as the bridge of `-o bridge=NAME`); must succeed.
    pub fn host_ip(&self, args: &[&str]) -> Result<Output> {
        let mut a = vec!["ip"];
        a.extend(args);
        kernel::in_netns(self.netns()?, &a)
    }

    /// (interface, address/prefix) in the host's network namespace.
    pub fn addresses(&self) -> Result<Vec<(String, String)>> {
        kernel::addresses_in(self.netns()?)
    }

    /// Every IPv4 route, of every table, in the host's namespace.
    pub fn routes(&self) -> Result<Vec<kernel::Route>> {
        kernel::routes_in(self.netns()?)
    }

    /// The elements of ferry's nftables sets and maps in the host's namespace.
    pub fn nft_elements(&self) -> Result<Vec<String>> {
        kernel::nft_elements_in(self.netns()?)
    }

    /// Mounts (in the test's mount namespace, which ferryd shares) under the temporary root.
    pub fn mounts_under_root(&self) -> Result<Vec<kernel::Mount>> {
        kernel::mounts_under(&self.root)
    }

    /// Namespace files under `<exec-root>/netns/` (sandboxes', and any pin ferryd keeps of its
    /// own; [`TestHost::leftovers`] counts only the former).
    pub fn netns_files(&self) -> Result<Vec<String>> {
        kernel::dir_entries(&self.exec_root.join("netns"))
    }

    /// Entries of the `ip netns` directory.
    pub fn ip_netns_links(&self) -> Result<Vec<String>> {
        kernel::dir_entries(&self.netns_dir)
    }

    /// Everything the kernel and the roots hold beyond what the host had when ferryd first
    /// became ready (what was there then — `lo`, a default bridge made at start, ferryd's pin of
    /// its own namespace, the default bridge's nftables elements — is not counted; nor are
    /// bind mounts of the two namespace directories onto themselves, the `ip netns`
    /// convention).
    pub fn leftovers(&self) -> Result<Leftovers> {
        let b = &self.baseline;
        let links: Vec<String> = self
            .links()?
            .into_iter()
            .filter(|l| !b.links.contains(l))
            .collect();
        let addresses = self
            .addresses()?
            .into_iter()
            .filter(|(l, _)| links.contains(l))
            .collect();
        let routes = self
            .routes()?
            .into_iter()
            .map(|r| r.line)
            .filter(|r| !b.routes.contains(r))
            .collect();
        let self_binds = [self.exec_root.join("netns"), self.netns_dir.clone()];
        let (ns, other): (Vec<_>, Vec<_>) = self
            .mounts_under_root()?
            .into_iter()
            .filter(|m| !b.mount_points.contains(&m.mount_point))
            .partition(|m| m.fstype == "nsfs");
        Ok(Leftovers {
            links,
            addresses,
            routes,
            netns_files: self
                .netns_files()?
                .into_iter()
                .filter(|f| !b.netns_files.contains(f))
                .collect(),
            ip_netns_links: self
                .ip_netns_links()?
                .into_iter()
                .filter(|f| !b.ip_netns_links.contains(f))
                .collect(),
            ns_mounts: ns.into_iter().map(|m| m.mount_point).collect(),
            other_mounts: other
                .into_iter()
                .map(|m| m.mount_point)
                .filter(|p| !self_binds.contains(p))
                .collect(),
            nft_elements: self
                .nft_elements()?
                .into_iter()
                .filter(|e| !b.nft_elements.contains(e))
                .collect(),
            etc_mounts: kernel::mounts()?
                .into_iter()
                .filter(|m| m.mount_point.starts_with("/etc") && !b.etc_mount_ids.contains(&m.id))
                .map(|m| m.mount_point)
                .collect(),
        })
    }
}

#[derive(Debug, Default)]
struct Baseline {
    links: BTreeSet<String>,
    netns_files: BTreeSet<String>,
    ip_netns_links: BTreeSet<String>,
    mount_points: BTreeSet<PathBuf>,
    etc_mount_ids: BTreeSet<u64>,
    nft_elements: BTreeSet<String>,
    routes: BTreeSet<String>,
}

/// `$TMPDIR` unless it would make the socket path too long for a unix address (108 bytes).
fn temp_base() -> PathBuf {
    let t = std::env::temp_dir();
    if t.as_os_str().len() <= 60 {
        t
    } else {
        PathBuf::from("/tmp")
    }
}

pub(crate) fn wait_bounded(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// In the child before exec: a mount namespace of its own, nothing propagated back, and
/// a tmpfs over `exec_root`. Async-signal-safe: syscalls on prepared data only.
fn hide_exec_root(exec_root: &std::ffi::CStr) -> std::io::Result<()> {
    let check = |rc: libc::c_int| match rc {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    };
    // SAFETY: unshare and mount with NUL-terminated strings prepared before fork.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS))?;
        check(libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        check(libc::mount(
            c"tmpfs".as_ptr(),
            exec_root.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        ))
    }
}
