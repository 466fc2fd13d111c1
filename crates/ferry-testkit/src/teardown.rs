//! The end of a TestHost. Teardown collects, never stops: every step runs even when an earlier
//! one failed, and the errors come back together — remove every sandbox and user network
//! through the CLI, stop ferryd (SIGTERM, then SIGKILL), kill by PID whatever still runs in one
//! of the host's namespaces, drop the namespace, lazily unmount what is left under the
//! temporary directory and remove it.

use crate::host::{wait_bounded, TestHost, PREDEFINED_NETWORKS, STOP_TIMEOUT};
use crate::kernel;
use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

impl TestHost {
    /// Tear down and fail if any step failed (ferryd not stopping on SIGTERM, a sandbox or
    /// network the CLI could not remove, a process left running in one of our namespaces).
    pub fn finish(mut self) -> Result<()> {
        let (errors, log) = self.teardown();
        self.finished = true;
        if errors.is_empty() {
            return Ok(());
        }
        bail!(
            "teardown of {} failed:\n - {}\n{log}",
            self.scenario,
            errors.join("\n - ")
        )
    }

    fn teardown(&mut self) -> (Vec<String>, String) {
        let mut errors = Vec::new();
        let mut note = |r: Result<()>| {
            if let Err(e) = r {
                errors.push(format!("{e:#}"));
            }
        };
        // Namespaces whose processes are ours, gathered before `rm` removes their files.
        // Each is held open until the stragglers are killed: the kernel reuses a freed
        // namespace's inode number at once, and another program on the machine making
        // namespaces meanwhile would have its processes taken for ours (and killed).
        // Only files on nsfs count (a stopped sandbox's placeholder is a plain file).
        let mut inodes = BTreeSet::new();
        let mut held: Vec<std::fs::File> = Vec::new();
        let mut nsfs = None;
        if let Some(ns) = &self.netns {
            match ns.metadata() {
                Ok(m) => {
                    inodes.insert(m.ino());
                    nsfs = Some(m.dev());
                }
                Err(e) => note(Err(e).context("stat the host netns")),
            }
        }
        if let Ok(files) = self.netns_files() {
            for f in files {
                let Ok(file) = std::fs::File::open(self.exec_root.join("netns").join(f)) else {
                    continue;
                };
                if let Ok(m) = file.metadata() {
                    if Some(m.dev()) == nsfs {
                        inodes.insert(m.ino());
                        held.push(file);
                    }
                }
            }
        }
        let running = match self.ferryd.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            // `system cleanup` stops ferryd, and the CLI returns once it has exited.
            Some(Ok(Some(status)))
                if status.success()
                    && self.cleaned_up.load(std::sync::atomic::Ordering::SeqCst) =>
            {
                false
            }
            Some(Ok(Some(status))) => {
                note(Err(anyhow::anyhow!(
                    "ferryd had exited before teardown ({status})"
                )));
                false
            }
            Some(Err(e)) => {
                note(Err(e).context("check ferryd"));
                false
            }
            None => false,
        };
        if running {
            note(self.remove_everything());
        }
        note(self.stop_ferryd());
        note(kill_stragglers(&inodes));
        drop(held);
        self.netns = None;
        note(unmount_under(&self.root));
        let log = self.log_tail(60);
        if let Some(dir) = self.dir.take() {
            let path = dir.path().display().to_string();
            note(dir.close().with_context(|| format!("remove {path}")));
        }
        (errors, log)
    }

    /// `ferry rm -f` every sandbox and `ferry network rm` every user network; all are tried.
    fn remove_everything(&self) -> Result<()> {
        let mut errors = Vec::new();
        match self.ferry_ok(&["ps", "-aq"]) {
            Ok(ids) => {
                for id in ids.split_whitespace() {
                    if let Err(e) = self.ferry_ok(&["rm", "-f", id]) {
                        errors.push(format!("rm -f {id}: {e:#}"));
                    }
                }
            }
            Err(e) => errors.push(format!("list sandboxes: {e:#}")),
        }
        match self.user_networks() {
            Ok(names) => {
                for name in names {
                    if let Err(e) = self.ferry_ok(&["network", "rm", &name]) {
                        errors.push(format!("network rm {name}: {e:#}"));
                    }
                }
            }
            Err(e) => errors.push(format!("list networks: {e:#}")),
        }
        if errors.is_empty() {
            Ok(())
        } else {
            bail!("{}", errors.join("\n - "))
        }
    }

    /// Names of the networks that are not predefined.
    pub fn user_networks(&self) -> Result<Vec<String>> {
        let ids = self.ferry_ok(&["network", "ls", "-q"])?;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec!["network", "inspect"];
        args.extend(&ids);
        let json: serde_json::Value = serde_json::from_str(&self.ferry_ok(&args)?)
            .context("parse `ferry network inspect` output")?;
        Ok(json
            .as_array()
            .context("`ferry network inspect` did not print a JSON array")?
            .iter()
            .filter_map(|n| n["Name"].as_str())
            .filter(|n| !PREDEFINED_NETWORKS.contains(n))
            .map(str::to_string)
            .collect())
    }

    fn stop_ferryd(&mut self) -> Result<()> {
        let Some(mut child) = self.ferryd.take() else {
            return Ok(());
        };
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        let pid = Pid::from_raw(child.id() as i32);
        kill(pid, Signal::SIGTERM).context("SIGTERM ferryd")?;
        if wait_bounded(&mut child, STOP_TIMEOUT)?.is_some() {
            return Ok(());
        }
        let _ = child.kill();
        let _ = wait_bounded(&mut child, STOP_TIMEOUT);
        bail!("ferryd (pid {pid}) did not exit within {STOP_TIMEOUT:?} of SIGTERM; killed it")
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // The scenario failed (an error or a panic): clean up, and show why in its output.
        let (errors, log) = self.teardown();
        self.finished = true;
        for e in &errors {
            eprintln!("teardown of {}: {e}", self.scenario);
        }
        eprintln!("{log}");
    }
}

/// PIDs of processes whose network namespace is one of `inodes`.
fn pids_in(inodes: &BTreeSet<u64>) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            // "net:[4026532271]"; unreadable for zombies and processes gone meanwhile.
            std::fs::read_link(format!("/proc/{pid}/ns/net"))
                .ok()
                .and_then(|l| {
                    l.to_str()?
                        .strip_prefix("net:[")?
                        .strip_suffix(']')?
                        .parse::<u64>()
                        .ok()
                })
                .is_some_and(|ino| inodes.contains(&ino))
        })
        .map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline)
                .replace('\0', " ")
                .trim()
                .to_string();
            (pid, cmdline)
        })
        .collect()
}

/// After ferryd is stopped, nothing should run in our namespaces. Give exiting processes 2 s,
/// then SIGKILL the rest by PID and report them.
fn kill_stragglers(inodes: &BTreeSet<u64>) -> Result<()> {
    if inodes.is_empty() {
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut left = pids_in(inodes);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        left = pids_in(inodes);
    }
    if left.is_empty() {
        return Ok(());
    }
    for (pid, _) in &left {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    let list: Vec<String> = left.iter().map(|(p, c)| format!("{p} ({c})")).collect();
    bail!(
        "processes still running in the host's namespaces after teardown (killed): {}",
        list.join(", ")
    )
}

/// Lazily unmount everything under `root`, deepest first.
fn unmount_under(root: &Path) -> Result<()> {
    let mut mounts = kernel::mounts_under(root)?;
    mounts.sort_by_key(|m| std::cmp::Reverse(m.mount_point.components().count()));
    let mut errors = Vec::new();
    for m in mounts {
        match nix::mount::umount2(&m.mount_point, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => errors.push(format!("umount {}: {e}", m.mount_point.display())),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        bail!("{}", errors.join("; "))
    }
}
