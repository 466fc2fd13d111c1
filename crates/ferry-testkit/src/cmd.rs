//! Bounded commands: every process a scenario runs has a deadline, and its output is captured
//! in anonymous files (not pipes, so a grandchild that keeps a pipe open cannot hang the test).

use anyhow::{bail, Context, Result};
use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A finished command: what ran, how it ended, what it printed.
#[derive(Debug, Clone)]
pub struct Output {
    pub cmdline: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The exit code, or None when killed by a signal.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// stdout without surrounding whitespace.
    pub fn out(&self) -> &str {
        self.stdout.trim()
    }

    /// Ok(self) when the command exited 0, else an error showing the whole output.
    pub fn expect_success(self) -> Result<Output> {
        if self.success() {
            Ok(self)
        } else {
            bail!("expected success:\n{self}")
        }
    }

    /// Ok(self) when the command exited non-zero, else an error showing the whole output.
    pub fn expect_failure(self) -> Result<Output> {
        if self.success() {
            bail!("expected failure:\n{self}")
        } else {
            Ok(self)
        }
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "$ {}", self.cmdline)?;
        writeln!(f, "exit: {}", self.status)?;
        writeln!(f, "stdout:\n{}", indent(&self.stdout))?;
        write!(f, "stderr:\n{}", indent(&self.stderr))
    }
}

fn indent(s: &str) -> String {
    if s.is_empty() {
        return "  (empty)".into();
    }
    s.lines()
        .map(|l| format!("  | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A readable rendering of a command line.
pub fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| {
        let a = a.to_string_lossy();
        if a.is_empty()
            || a.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"' || c == '{')
        {
            format!("'{}'", a.replace('\'', r"'\''"))
        } else {
            a.into_owned()
        }
    }));
    parts.join(" ")
}

/// Run `cmd` (stdin from /dev/null) and wait at most `timeout`. Exiting non-zero is not an
/// error here (see [`Output::expect_success`]); failing to start or overrunning the deadline
/// is: the child is then killed by its PID and the error carries what it printed so far.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let cmdline = describe(cmd);
    let out = tempfile::tempfile().context("create a file for stdout")?;
    let err = tempfile::tempfile().context("create a file for stderr")?;
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(err.try_clone()?);
    let mut child = cmd.spawn().with_context(|| format!("start `{cmdline}`"))?;
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("wait for `{cmdline}`"))?
        {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let status = child.wait();
            bail!(
                "`{cmdline}` did not finish within {timeout:?} and was killed ({status:?})\nstdout:\n{}\nstderr:\n{}",
                indent(&read_all(out)),
                indent(&read_all(err))
            );
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    };
    Ok(Output {
        cmdline,
        status,
        stdout: read_all(out),
        stderr: read_all(err),
    })
}

fn read_all(mut f: File) -> String {
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(0)).is_ok() {
        let _ = f.read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}
