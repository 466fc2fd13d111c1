//! Reachability with real traffic, for the firewall scenarios: a `ferry-probe` server in a
//! sandbox or peer, and clients in a sandbox, a peer or the host itself. A client that must
//! fail is shown to fail within a bound (the probe gives up after 2 s to connect and 2 s to
//! read; the whole command after 15 s), so a refused path never hangs a test.
//!
//! A refusal names how it must fail ([`NoReach`]): the probe's exit code and the word it
//! prints tell a firewall's drop (timeout) from a closed port (refused) from no route
//! (unreachable), and a probe that never ran (a failed `ferry exec` or `ip netns exec`, bad
//! arguments) is an error, never a refusal. Each refusal in the suite sits next to a
//! control: the same probe, reaching where it should, in the same setup.

use crate::bins::BUSYBOX;
use crate::cmd::Output;
use crate::host::TestHost;
use crate::peer::Peer;
use anyhow::{bail, ensure, Result};
use std::time::{Duration, Instant};

/// Where a client runs.
#[derive(Clone, Copy)]
pub enum At<'a> {
    Sandbox(&'a str),
    Peer(&'a Peer),
    Host,
}

/// How a refused attempt must fail: `ferry-probe`'s exit code for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoReach {
    /// Connection refused: something answered "nothing here" (a TCP RST, an ICMP port
    /// unreachable), so the packet got to a host that has no such service.
    Refused,
    /// No answer within the probe's bound: dropped on the way.
    Timeout,
    /// ICMP host or network unreachable, or no route.
    Unreachable,
}

impl NoReach {
    fn code(self) -> i32 {
        match self {
            NoReach::Refused => 10,
            NoReach::Timeout => 11,
            NoReach::Unreachable => 12,
        }
    }

    fn word(self) -> &'static str {
        match self {
            NoReach::Refused => "refused",
            NoReach::Timeout => "timeout",
            NoReach::Unreachable => "unreachable",
        }
    }
}

/// A refused attempt must end within this (the probe's own timeouts are 2 s + 2 s).
pub const REFUSED_WITHIN: Duration = Duration::from_secs(8);
/// How long a client retries while a server may still be starting.
const REACH_WITHIN: Duration = Duration::from_secs(10);

impl TestHost {
    /// `ferry run -d --name NAME ARGS… -- ferry-probe serve-PROTO PORT`.
    pub fn run_server(
        &self,
        name: &str,
        run_args: &[&str],
        proto: &str,
        port: u16,
    ) -> Result<String> {
        let probe = self.bins.probe.to_string_lossy().into_owned();
        self.run_detached(
            name,
            run_args,
            &[&probe, &format!("serve-{proto}"), &port.to_string()],
        )
    }

    /// One attempt of `ferry-probe PROTO IP PORT` (proto "tcp" or "udp") at `at`.
    pub fn probe(&self, at: At, proto: &str, ip: &str, port: u16) -> Result<Output> {
        let probe = self.bins.probe.to_string_lossy().into_owned();
        let port = port.to_string();
        let args = [proto, ip, port.as_str()];
        match at {
            At::Sandbox(name) => {
                let mut cmd = vec![probe.as_str()];
                cmd.extend(args);
                self.exec(name, &cmd)
            }
            At::Peer(p) => p.run(&probe, &args),
            At::Host => self.in_host(&probe, &args),
        }
    }

    /// The client at `at` reaches IP:PORT; returns the address the server saw it come from.
    pub fn expect_reach(&self, at: At, proto: &str, ip: &str, port: u16) -> Result<String> {
        let deadline = Instant::now() + REACH_WITHIN;
        loop {
            let out = self.probe(at, proto, ip, port)?;
            if out.success() {
                if let Some(src) = out.out().strip_prefix("from ") {
                    return Ok(src.trim().to_string());
                }
            }
            if Instant::now() >= deadline {
                let rules = self
                    .in_host("nft", &["list", "ruleset"])
                    .map(|o| o.stdout)
                    .unwrap_or_default();
                bail!(
                    "{proto} {ip}:{port} not reached within {REACH_WITHIN:?}; last attempt:\n{out}\n{}\n---- the host's ruleset ----\n{rules}",
                    self.log_tail(20)
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// The client at `at` does not reach IP:PORT, fails the way `how` says, and says so
    /// within [`REFUSED_WITHIN`]. Any other failure (another kind, or the probe not having
    /// run at all) is an error that shows the probe's output.
    pub fn expect_no_reach(
        &self,
        at: At,
        proto: &str,
        ip: &str,
        port: u16,
        how: NoReach,
    ) -> Result<()> {
        let t = Instant::now();
        let out = self.probe(at, proto, ip, port)?;
        ensure!(
            !out.success(),
            "{proto} {ip}:{port} was reached but must not be:\n{out}"
        );
        let word = format!("ferry-probe: {}:", how.word());
        ensure!(
            out.code() == Some(how.code()) && out.stderr.contains(&word),
            "{proto} {ip}:{port} must fail with {how:?} (exit {}, `{word}`), but:\n{out}",
            how.code()
        );
        ensure!(
            t.elapsed() <= REFUSED_WITHIN,
            "the refused attempt took {:?} (bound {REFUSED_WITHIN:?})",
            t.elapsed()
        );
        Ok(())
    }

    /// One ICMP echo from a sandbox (1 s wait); true when answered, false when ping ran
    /// and got no answer. A ping that did not run (a failed `ferry exec`) is an error.
    pub fn pings(&self, from: &str, ip: &str) -> Result<bool> {
        let out = self.exec(from, &[BUSYBOX, "ping", "-c", "1", "-W", "1", ip])?;
        if out.success() {
            return Ok(true);
        }
        ensure!(
            out.code() == Some(1)
                && out
                    .stdout
                    .contains("1 packets transmitted, 0 packets received"),
            "ping {ip} from {from} did not run as expected:\n{out}"
        );
        Ok(false)
    }
}
