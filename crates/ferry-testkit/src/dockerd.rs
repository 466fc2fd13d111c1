//! A real dockerd (Debian's docker.io, 20.10) for one scenario, driving the TestHost's ferryd
//! as its network plugin.
//!
//! Mechanism: dockerd is spawned with a `pre_exec` that joins ferryd's network namespace
//! (the plugin makes a veth pair there and dockerd moves one end into the container, so they
//! must share it), then unshares the mount namespace, makes it private, mounts a tmpfs on
//! /run and bind-mounts the host's plugin directory on /run/docker/plugins — dockerd's fixed
//! discovery directory — so nothing global is touched and scenarios run in parallel. It gets
//! its own --data-root, --exec-root, --pidfile and -H socket under the host's directory, the
//! vfs storage driver (no overlay mounts), and no iptables, ip-forward or docker0 of its own:
//! ferry does the networking.
//!
//! The end ([`Dockerd::stop`], or Drop): remove every container and network through the CLI
//! (so ferry's plugin sees Docker's teardown calls), SIGTERM dockerd then SIGKILL, and kill by
//! PID whatever still runs in dockerd's mount namespace (containerd, shims) and under it (the
//! containers' processes). The private mount namespace, its tmpfs and bind mount go with the
//! last of them.

use crate::bins::BUSYBOX;
use crate::cmd::{run_bounded, Output};
use crate::host::{wait_bounded, TestHost};
use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one docker CLI call against this dockerd (docker run included).
pub const DOCKER_TIMEOUT: Duration = Duration::from_secs(40);
/// The local image the scenarios run: Debian's static busybox, imported.
pub const IMAGE: &str = "ferry-busybox:latest";

pub struct Dockerd {
    child: Option<Child>,
    root: PathBuf,
    sock: PathBuf,
    log: PathBuf,
    cli: PathBuf,
    config: PathBuf,
    /// Inode of dockerd's mount namespace: whatever runs in it is ours.
    mnt_ns: Option<u64>,
}

/// /usr/sbin/dockerd or `dockerd` on PATH; None (after a skip notice) when there is none —
/// or a panic when `CI` is set or the run is root (`scripts/setup` installs docker.io).
pub fn find_dockerd_or_skip(scenario: &str) -> Option<PathBuf> {
    let mut dirs = vec![PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")];
    if let Some(p) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&p));
    }
    let found = dirs
        .into_iter()
        .map(|d| d.join("dockerd"))
        .find(|p| p.is_file());
    if found.is_none() {
        if !crate::may_skip_missing_program() {
            panic!("{scenario}: no dockerd (Debian's docker.io; scripts/setup installs it), and as root or under CI this may not be skipped");
        }
        crate::skip(scenario, "no dockerd (install docker.io: scripts/setup)");
    }
    found
}

fn cstring(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes()).context("path with a NUL byte")
}

/// Have `cmd` start in the network namespace `ns_fd` and a mount namespace of its own,
/// with a fresh /run whose /run/docker/plugins is the host's plugin directory.
fn enter_with_plugins(cmd: &mut Command, ns_fd: std::os::fd::RawFd, plugins: &Path) -> Result<()> {
    let slash = CString::new("/")?;
    let run = CString::new("/run")?;
    let docker_dir = CString::new("/run/docker")?;
    let plugins_dir = CString::new("/run/docker/plugins")?;
    let tmpfs = CString::new("tmpfs")?;
    let mode = CString::new("mode=755")?;
    let source = cstring(plugins)?;
    // SAFETY: only async-signal-safe syscalls between fork and exec, on CStrings and a
    // file descriptor prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let check = |rc: libc::c_int| {
                if rc != 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            };
            check(libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
            ))?;
            check(libc::setns(ns_fd, libc::CLONE_NEWNET))?;
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(
                std::ptr::null(),
                slash.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                tmpfs.as_ptr(),
                run.as_ptr(),
                tmpfs.as_ptr(),
                0,
                mode.as_ptr().cast(),
            ))?;
            check(libc::mkdir(docker_dir.as_ptr(), 0o700))?;
            check(libc::mkdir(plugins_dir.as_ptr(), 0o755))?;
            check(libc::mount(
                source.as_ptr(),
                plugins_dir.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ))?;
            Ok(())
        });
    }
    Ok(())
}

impl Dockerd {
    /// Start dockerd in `host`'s network namespace with the host's plugin directory as its
    /// /run/docker/plugins; returns once it answers `docker version` (at most 30 s).
    pub fn start(host: &TestHost, dockerd: &Path, cli: &Path) -> Result<Dockerd> {
        let root = host.root().join("docker");
        let (data, exec) = (root.join("data"), root.join("exec"));
        for d in [&data, &exec, &root.join("config")] {
            std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
        }
        let plugins = host.plugin_dir();
        std::fs::create_dir_all(&plugins)?;
        let sock = root.join("d.sock");
        let log = root.join("dockerd.log");
        let mut d = Dockerd {
            child: None,
            sock: sock.clone(),
            log: log.clone(),
            cli: cli.to_path_buf(),
            config: root.join("config"),
            root: root.clone(),
            mnt_ns: None,
        };
        let netns = host.netns()?.try_clone()?;
        let logf = OpenOptions::new().create(true).append(true).open(&log)?;
        let mut cmd = Command::new(dockerd);
        cmd.arg("--data-root")
            .arg(&data)
            .arg("--exec-root")
            .arg(&exec)
            .arg("--pidfile")
            .arg(root.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                "--bridge=none",
                "--storage-driver=vfs",
                "--log-level=info",
            ])
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf);
        enter_with_plugins(&mut cmd, netns.as_raw_fd(), &plugins)?;
        let child = cmd
            .spawn()
            .with_context(|| format!("start {}", dockerd.display()))?;
        let pid = child.id();
        d.child = Some(child);
        drop(netns);
        d.mnt_ns = std::fs::metadata(format!("/proc/{pid}/ns/mnt"))
            .ok()
            .map(|m| m.ino());
        d.wait_ready()?;
        Ok(d)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().context("not started")?.try_wait()? {
                bail!("dockerd exited ({status}) at start\n{}", self.log_tail(40));
            }
            if self.sock.exists() {
                let out = self.run_for(
                    &["version", "--format", "{{.Server.Version}}"],
                    Duration::from_secs(5),
                )?;
                if out.success() {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "dockerd did not answer within {START_TIMEOUT:?}\n{}",
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        format!(
            "---- dockerd log ({}), last {lines} lines ----\n{}\n---- end of dockerd log ----",
            self.log.display(),
            all[all.len().saturating_sub(lines)..].join("\n")
        )
    }

    fn run_for(&self, args: &[&str], timeout: Duration) -> Result<Output> {
        let mut cmd = Command::new(&self.cli);
        cmd.args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.sock.display()))
            .env("DOCKER_CONFIG", &self.config)
            .env("DOCKER_CLI_HINTS", "false")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_API_VERSION")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH");
        run_bounded(&mut cmd, timeout)
    }

    /// `docker ARGS…` against this dockerd, bounded; any exit status is Ok.
    pub fn docker(&self, args: &[&str]) -> Result<Output> {
        self.run_for(args, DOCKER_TIMEOUT)
    }

    /// `docker ARGS…` that must succeed; its trimmed stdout (dockerd's log tail on failure).
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.docker(args)?;
        if !out.success() {
            bail!("expected success:\n{out}\n{}", self.log_tail(20));
        }
        Ok(out.out().to_string())
    }

    /// Build [`IMAGE`] with `docker import` from the host's static busybox: /bin/busybox and
    /// the applets the scenarios use as symlinks, and an empty /tmp (no image registry is needed).
    pub fn import_busybox(&self) -> Result<()> {
        let dir = self.root.join("image");
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin)?;
        std::fs::create_dir_all(dir.join("tmp"))?;
        std::fs::copy(BUSYBOX, bin.join("busybox")).context("copy busybox")?;
        for applet in [
            "sh", "httpd", "nc", "sleep", "cat", "echo", "ip", "timeout", "printf",
        ] {
            let link = bin.join(applet);
            if !link.exists() {
                std::os::unix::fs::symlink("busybox", &link)?;
            }
        }
        let tar = self.root.join("image.tar");
        let mut cmd = Command::new("tar");
        cmd.arg("-C").arg(&dir).arg("-cf").arg(&tar).arg(".");
        run_bounded(&mut cmd, Duration::from_secs(20))?.expect_success()?;
        let tar = tar.to_str().context("non-UTF-8 path")?;
        self.ok(&["import", tar, IMAGE])?;
        Ok(())
    }

    /// Tear down (see the module docs); errors of every step come back together.
    pub fn stop(mut self) -> Result<()> {
        let errors = self.teardown();
        if errors.is_empty() {
            Ok(())
        } else {
            bail!("dockerd teardown: {}", errors.join("; "))
        }
    }

    fn teardown(&mut self) -> Vec<String> {
        let mut errors = vec![];
        let Some(mut child) = self.child.take() else {
            return errors;
        };
        if matches!(child.try_wait(), Ok(None)) {
            let short = Duration::from_secs(20);
            match self.run_for(&["ps", "-aq"], short) {
                Ok(o) if o.success() => {
                    let ids: Vec<&str> = o.out().split_whitespace().collect();
                    if !ids.is_empty() {
                        let mut args = vec!["rm", "-f"];
                        args.extend(ids);
                        if let Err(e) = self.run_for(&args, short).and_then(Output::expect_success)
                        {
                            errors.push(format!("docker rm -f: {e:#}"));
                        }
                    }
                }
                Ok(o) => errors.push(format!("docker ps: {o}")),
                Err(e) => errors.push(format!("docker ps: {e:#}")),
            }
            if let Err(e) = self
                .run_for(&["network", "prune", "-f"], short)
                .and_then(Output::expect_success)
            {
                errors.push(format!("docker network prune: {e:#}"));
            }
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            match wait_bounded(&mut child, Duration::from_secs(15)) {
                Ok(Some(_)) => {}
                _ => {
                    errors.push("dockerd did not stop within 15 s of SIGTERM".into());
                    let _ = child.kill();
                    let _ = wait_bounded(&mut child, Duration::from_secs(5));
                }
            }
        } else {
            errors.push(format!("dockerd had exited\n{}", self.log_tail(30)));
        }
        if let Some(ns) = self.mnt_ns {
            let left = ours(ns);
            for pid in &left {
                let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while !ours(ns).is_empty() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        errors
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        for e in self.teardown() {
            eprintln!("dockerd teardown: {e}");
        }
    }
}

fn mnt_ns_of(pid: i32) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .map(|m| m.ino())
}

fn ppid_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Pids in the mount namespace `ns` and every process below one of them.
fn ours(ns: u64) -> BTreeSet<i32> {
    let pids: Vec<i32> = std::fs::read_dir("/proc")
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let mut set: BTreeSet<i32> = pids
        .iter()
        .copied()
        .filter(|p| mnt_ns_of(*p) == Some(ns))
        .collect();
    loop {
        let more: Vec<i32> = pids
            .iter()
            .copied()
            .filter(|p| !set.contains(p) && ppid_of(*p).is_some_and(|pp| set.contains(&pp)))
            .collect();
        if more.is_empty() {
            return set;
        }
        set.extend(more);
    }
}
