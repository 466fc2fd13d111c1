//! Sandbox processes. `run -d` processes are ferryd's children, started in their own
//! session inside the sandbox and awaited by a task. Processes ferryd did not start or
//! no longer parents (a foreground `run` is the CLI's child; after a ferryd restart the
//! old children were re-parented) are watched by pid and start time, so a recycled pid
//! is never mistaken for the sandbox's process.

use std::os::unix::fs::OpenOptionsExt;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use ferry_core::model::{RunState, Sandbox};
use ferry_kernel::process::{SandboxExec, SandboxFiles};
use ferry_kernel::KernelOps;
use nix::sys::signal::{kill as send, Signal};
use nix::unistd::Pid;

use super::{Daemon, ExitReport};
use crate::error::{Error, Result};

/// The start time of a live `pid` in clock ticks since boot (field 22 of
/// /proc/PID/stat); None if there is no such process or it has exited. The stat file
/// is the thread-group leader's: a leader that ended its own thread (`pthread_exit`)
/// reads as a zombie while the process's other threads run on, so a zombie leader
/// counts as exited only once it is the last thread.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let mut fields = after.split_whitespace();
    if matches!(fields.next(), Some("Z") | Some("X")) && threads(pid) < 2 {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// How many threads `pid` has (its leader among them, even a zombie one); 0 if it is
/// gone.
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, Iterator::count)
}

pub fn alive(pid: u32, started: u64) -> bool {
    match start_time(pid) {
        Some(t) => started == 0 || t == started,
        None => false,
    }
}

pub fn kill(pid: u32) {
    if pid == 0 {
        return;
    }
    let _ = send(Pid::from_raw(-(pid as i32)), Signal::SIGKILL);
    let _ = send(Pid::from_raw(pid as i32), Signal::SIGKILL);
}

/// [`kill`] `pid` only while it is still the process that started at `start_time` (0:
/// not known): a pid that died may belong to another process by now.
pub fn kill_if_alive(pid: u32, start_time: u64) {
    if pid != 0 && alive(pid, start_time) {
        kill(pid);
    }
}

/// SIGKILL one process, not its group: `pid` was found by its namespace, not started
/// by ferryd as a session leader. Never pid 0 (which would be ferryd's own group).
pub fn kill_one(pid: u32) {
    if pid == 0 {
        return;
    }
    let _ = send(Pid::from_raw(pid as i32), Signal::SIGKILL);
}

/// SIGKILL every process in the namespace pinned at `netns` (a sandbox's whose pid the
/// store lacks, or an orphan namespace), one by one by the pids found there; `what`
/// names it in the log. A namespace that is not pinned (host mode) is never scanned.
pub fn kill_in_netns(netns: &std::path::Path, what: &str) {
    for pid in ferry_kernel::netns::pids_in(netns) {
        tracing::warn!("killing process {pid} left in the namespace of {what}");
        kill_one(pid);
    }
}

pub fn exec_spec<K: KernelOps>(
    d: &Daemon<K>,
    sb: &Sandbox,
    netns: &std::path::Path,
) -> SandboxExec {
    let files = (sb.network_mode.own_netns()).then(|| {
        let (hosts, resolv_conf, _) = d.sandbox_files(&sb.id);
        SandboxFiles {
            hosts,
            resolv_conf,
            hostname: sb.hostname.clone(),
        }
    });
    SandboxExec {
        netns: netns.to_path_buf(),
        files,
        new_session: true,
    }
}

/// Start the sandbox's command, its output going to `log`.
pub fn spawn<K: KernelOps>(
    d: &Daemon<K>,
    sb: &Sandbox,
    netns: &std::path::Path,
    log: &std::path::Path,
) -> Result<tokio::process::Child> {
    let Some((prog, args)) = sb.cmd.split_first() else {
        return Err(Error::Core(ferry_core::CoreError::Invalid(
            "no command given".into(),
        )));
    };
    // The sandbox's output may hold secrets: owner and group only. Each run appends, as
    // dockerd's log keeps every run's output; an attach reads from where the log ended
    // when it attached (crate::api::attach).
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(log)
        .and_then(|f| {
            // A log an older ferryd made keeps its mode on open: set it.
            f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o640))?;
            Ok(f)
        })
        .map_err(|e| Error::Other(format!("create {}: {e}", log.display())))?;
    let err = out.try_clone().map_err(|e| Error::Other(e.to_string()))?;
    let hook = exec_spec(d, sb, netns)
        .pre_exec_hook()
        .map_err(|e| Error::Other(e.to_string()))?;
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(false);
    // SAFETY: the hook makes only syscalls on data prepared before fork.
    unsafe {
        cmd.pre_exec(hook);
    }
    cmd.spawn().map_err(|e| match e.kind() {
        // The command is the request's: one that is missing or not executable is the
        // client's mistake (dockerd answers 400 for it too), not the daemon's.
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
            Error::Core(ferry_core::CoreError::BadValue {
                what: "command",
                value: prog.clone(),
                why: format!("cannot start it in sandbox {}: {e}", sb.name),
            })
        }
        _ => Error::Other(format!("start {prog} in sandbox {}: {e}", sb.name)),
    })
}

/// Await a child and report its exit.
pub fn watch_child<K: KernelOps>(d: Arc<Daemon<K>>, id: String, mut child: tokio::process::Child) {
    tokio::spawn(async move {
        let pid = child.id().unwrap_or(0);
        let code = match child.wait().await {
            Ok(s) => s.code().unwrap_or_else(|| {
                128 + std::os::unix::process::ExitStatusExt::signal(&s).unwrap_or(0)
            }),
            Err(_) => -1,
        };
        d.children.lock().expect("lock").remove(&pid);
        if let Err(e) = d.on_exit(&id, ExitReport { pid, code }).await {
            tracing::error!("exit of sandbox {id}: {e}");
        }
    });
}

/// Poll the processes ferryd does not parent.
pub fn monitor<K: KernelOps>(d: Arc<Daemon<K>>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let dead: Vec<(String, u32)> = {
                let st = d.state.lock().await;
                let own = d.children.lock().expect("lock").clone();
                st.sandboxes
                    .values()
                    .filter_map(|s| match s.state {
                        RunState::Running { pid, start_time }
                            if pid != 0 && !own.contains(&pid) && !alive(pid, start_time) =>
                        {
                            Some((s.id.clone(), pid))
                        }
                        _ => None,
                    })
                    .collect()
            };
            for (id, pid) in dead {
                if let Err(e) = d.on_exit(&id, ExitReport { pid, code: -1 }).await {
                    tracing::error!("exit of sandbox {id}: {e}");
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::start_time;
    use std::time::{Duration, Instant};

    /// The process's leader thread ends (`pthread_exit`) while another thread sleeps on.
    const LEADER_ENDS: &str = "\
import ctypes, threading, time
threading.Thread(target=time.sleep, args=(60,)).start()
ctypes.CDLL(None).pthread_exit(None)
";

    fn leader_state(pid: u32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat[stat.rfind(')')? + 2..].chars().next()
    }

    #[test]
    fn a_process_whose_leader_thread_ended_lives_while_another_thread_runs() {
        let mut child = std::process::Command::new("python3")
            .args(["-c", LEADER_ENDS])
            .spawn()
            .expect("start python3");
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(10);
        while leader_state(pid) != Some('Z') {
            assert!(Instant::now() < deadline, "the leader thread did not end");
            std::thread::sleep(Duration::from_millis(20));
        }
        let alive = start_time(pid);
        // The control: the same process, every thread gone, reads as exited.
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            alive.is_some(),
            "a zombie leader with a live thread read as exited"
        );
        assert_eq!(start_time(pid), None);
    }
}
