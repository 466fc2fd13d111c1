//! TestCluster: several throwaway hosts on one underlay, with a real etcd.
//!
//! The underlay is a network namespace of its own holding a bridge (`ul0`, address
//! `172.30.0.1/24`), on which etcd listens. Each host is a namespace made here and wired
//! to that bridge by a veth pair (its end `ul0`, address `172.30.0.<10+i>/24`) before its
//! ferryd starts inside it with `--cluster-store etcd://172.30.0.1:2379 --cluster-advertise
//! ul0 --node-name host<i>`. Nothing routes off the underlay. Dropping the cluster tears
//! the hosts down (sandboxes first everywhere, then the overlays, which every host must
//! see go), kills etcd and deletes the underlay.

use std::fs::File;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cmd::run_bounded;
use crate::etcd::Etcd;
use crate::host::TestHost;

const BOUND: Duration = Duration::from_secs(15);
/// The underlay's address prefix, and etcd's address on it.
pub const UNDERLAY: &str = "172.30.0";
pub const ETCD_ADDR: &str = "172.30.0.1";

fn ip(args: &[&str]) -> Result<()> {
    run_bounded(Command::new("ip").args(args), BOUND)?.expect_success()?;
    Ok(())
}

/// What a cluster is made with.
#[derive(Debug, Clone)]
pub struct ClusterOpts {
    pub hosts: usize,
    /// The underlay's MTU (its bridge and every host's link).
    pub mtu: u32,
    /// `--cluster-ttl` of every ferryd.
    pub ttl_secs: u64,
    /// etcd members, on 172.30.0.1, .2, .3…
    pub etcd_members: usize,
    /// `--cluster-block-grace` of every ferryd (ferryd's default when None).
    pub block_grace_secs: Option<u64>,
}

impl Default for ClusterOpts {
    fn default() -> Self {
        ClusterOpts {
            hosts: 2,
            mtu: 1500,
            ttl_secs: 3,
            etcd_members: 1,
            block_grace_secs: None,
        }
    }
}

pub struct TestCluster {
    pub hosts: Vec<TestHost>,
    /// The first etcd member (the only one unless [`ClusterOpts::etcd_members`] says more).
    pub etcd: Etcd,
    /// The other members.
    pub etcd_others: Vec<Etcd>,
    /// `--cluster-store` of every ferryd.
    store: String,
    underlay: String,
    finished: bool,
}

impl TestCluster {
    /// The cluster, every host joined (`ferry node ls` lists them all on host 1).
    pub fn start(scenario: &str, opts: ClusterOpts) -> Result<TestCluster> {
        let underlay = format!("fyt-ul-{}", crate::unique(""));
        ip(&["netns", "add", &underlay])?;
        // From here on an early return must still delete the underlay.
        let guard = UnderlayGuard(underlay.clone());
        let u = |args: &[&str]| {
            let mut a = vec!["-n", underlay.as_str()];
            a.extend(args);
            ip(&a)
        };
        let mtu = opts.mtu.to_string();
        u(&["link", "set", "lo", "up"])?;
        u(&["link", "add", "ul0", "mtu", &mtu, "type", "bridge"])?;
        let ips: Vec<String> = (1..=opts.etcd_members.max(1))
            .map(|i| format!("{UNDERLAY}.{i}"))
            .collect();
        for ip in &ips {
            u(&["addr", "add", &format!("{ip}/24"), "dev", "ul0"])?;
        }
        u(&["link", "set", "ul0", "up"])?;
        let ns_path = std::path::PathBuf::from(format!("/run/netns/{underlay}"));
        let mut members = match ips.len() {
            1 => vec![Etcd::start(ETCD_ADDR, 2379, 2380, Some(&ns_path))?],
            _ => Etcd::start_cluster(
                &ips.iter().map(String::as_str).collect::<Vec<_>>(),
                &ns_path,
            )?,
        };
        let etcd = members.remove(0);
        let store = format!(
            "etcd://{}",
            ips.iter()
                .map(|ip| format!("{ip}:2379"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let mut cluster = TestCluster {
            hosts: Vec::new(),
            etcd,
            etcd_others: members,
            store,
            underlay: underlay.clone(),
            finished: false,
        };
        std::mem::forget(guard);
        for i in 1..=opts.hosts {
            let host = cluster.add_host(scenario, i, &opts)?;
            cluster.hosts.push(host);
        }
        cluster.wait_joined(opts.hosts)?;
        Ok(cluster)
    }

    fn add_host(&self, scenario: &str, i: usize, opts: &ClusterOpts) -> Result<TestHost> {
        let ns = format!("{}-h{i}", self.underlay);
        ip(&["netns", "add", &ns])?;
        let wire = || -> Result<File> {
            self.wire(&ns, opts.mtu)?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{UNDERLAY}.{}/24", 10 + i),
                "dev",
                "ul0",
            ])?;
            ip(&["-n", &ns, "link", "set", "ul0", "up"])?;
            File::open(format!("/run/netns/{ns}")).context("open the host's namespace")
        };
        let file = wire();
        // The name goes; the namespace lives as long as the host holds it.
        let _ = ip(&["netns", "del", &ns]);
        let store = self.store.clone();
        let node = format!("host{i}");
        let ttl = opts.ttl_secs.to_string();
        let mut args = vec![
            "--cluster-store".to_string(),
            store,
            "--cluster-advertise".into(),
            "ul0".into(),
            "--node-name".into(),
            node,
            "--cluster-ttl".into(),
            ttl,
        ];
        if let Some(g) = opts.block_grace_secs {
            args.extend(["--cluster-block-grace".into(), g.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        TestHost::start_in(&format!("{scenario}-host{i}"), file?, &args)
    }

    /// `network create -d overlay ARGS… NAME` on host 1, then wait (10 s at most) until
    /// every host has it.
    pub fn overlay_everywhere(&self, name: &str, args: &[&str]) -> Result<()> {
        let mut a = vec!["network", "create", "-d", "overlay"];
        a.extend(args);
        a.push(name);
        self.hosts[0].ferry_ok(&a)?;
        self.wait_for(
            Duration::from_secs(10),
            &format!("every host to see {name}"),
            |c| {
                Ok(c.hosts.iter().all(|h| {
                    h.ferry(&["network", "inspect", name])
                        .is_ok_and(|o| o.success())
                }))
            },
        )
        .map(drop)
    }

    /// A program run in the underlay's namespace (where etcd listens), bounded.
    pub fn in_underlay(&self, program: &str, args: &[&str]) -> Result<crate::Output> {
        let mut a = vec!["netns", "exec", self.underlay.as_str(), program];
        a.extend(args);
        run_bounded(Command::new("ip").args(&a), BOUND)
    }

    /// A veth pair between the underlay bridge and namespace `ns`, whose end is `ul0`.
    fn wire(&self, ns: &str, mtu: u32) -> Result<()> {
        let port = format!("ulp{}", &crate::unique("")[..6]);
        let mtu = mtu.to_string();
        let u = |args: &[&str]| {
            let mut a = vec!["-n", self.underlay.as_str()];
            a.extend(args);
            ip(&a)
        };
        u(&[
            "link", "add", &port, "mtu", &mtu, "type", "veth", "peer", "name", "ul0", "netns", ns,
        ])?;
        u(&["link", "set", &port, "master", "ul0", "up"])?;
        ip(&["-n", ns, "link", "set", "ul0", "mtu", &mtu])
    }

    /// A machine on the underlay that is not a host of the cluster (no ferryd): a
    /// namespace with `addr`/24 on a link to the underlay bridge.
    pub fn underlay_peer(&self, addr: &str) -> Result<UnderlayPeer> {
        let netns = format!("{}-p{}", self.underlay, &crate::unique("")[..4]);
        ip(&["netns", "add", &netns])?;
        let peer = UnderlayPeer {
            netns: netns.clone(),
        };
        self.wire(&netns, 1500)?;
        peer.ip(&["link", "set", "lo", "up"])?;
        peer.ip(&["addr", "add", &format!("{addr}/24"), "dev", "ul0"])?;
        peer.ip(&["link", "set", "ul0", "up"])?;
        Ok(peer)
    }

    /// Wait (at most 20 s) until host 1 sees `n` nodes.
    pub fn wait_joined(&self, n: usize) -> Result<()> {
        self.wait_for(Duration::from_secs(20), "every host to join", |c| {
            Ok(c.hosts[0]
                .ferry(&["node", "ls", "-q"])?
                .out()
                .lines()
                .count()
                == n)
        })
        .map(|_| ())
    }

    /// Poll `check` every 100 ms until it holds, at most `within`.
    pub fn wait_for(
        &self,
        within: Duration,
        what: &str,
        check: impl Fn(&TestCluster) -> Result<bool>,
    ) -> Result<Duration> {
        let t = Instant::now();
        loop {
            if check(self)? {
                return Ok(t.elapsed());
            }
            if t.elapsed() > within {
                let logs: Vec<String> = self.hosts.iter().map(|h| h.log_tail(15)).collect();
                bail!("waited {within:?} for {what}\n{}", logs.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every endpoint gone from the cluster, then the overlays (removed on host 1), then
    /// each host's own teardown; etcd and the underlay go on drop.
    pub fn finish(mut self) -> Result<()> {
        self.finished = true;
        let errors = self.teardown();
        if !errors.is_empty() {
            bail!("cluster teardown:\n - {}", errors.join("\n - "));
        }
        Ok(())
    }

    fn teardown(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        for h in &self.hosts {
            if let Ok(ids) = h.ferry_ok(&["ps", "-aq"]) {
                for id in ids.split_whitespace() {
                    if let Err(e) = h.ferry_ok(&["rm", "-f", id]) {
                        errors.push(format!("{}: rm -f {id}: {e:#}", h.scenario()));
                    }
                }
            }
        }
        if let Some(first) = self.hosts.first() {
            let overlays = first
                .ferry_ok(&["network", "ls", "--filter", "driver=overlay", "-q"])
                .unwrap_or_default();
            for id in overlays.split_whitespace() {
                // Other hosts publish their removals asynchronously: retry while in use.
                let r = self.wait_for(Duration::from_secs(10), "an overlay's removal", |_| {
                    Ok(first.ferry(&["network", "rm", id])?.success())
                });
                if let Err(e) = r {
                    errors.push(format!("network rm {id}: {e:#}"));
                }
            }
            let gone = self.wait_for(
                Duration::from_secs(10),
                "every host to drop the overlays",
                |c| {
                    for h in &c.hosts {
                        if !h
                            .ferry_ok(&["network", "ls", "--filter", "driver=overlay", "-q"])?
                            .is_empty()
                        {
                            return Ok(false);
                        }
                    }
                    Ok(true)
                },
            );
            if let Err(e) = gone {
                errors.push(format!("{e:#}"));
            }
        }
        for h in self.hosts.drain(..) {
            if let Err(e) = h.finish() {
                errors.push(format!("{e:#}"));
            }
        }
        errors
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // A failed test: the same ordered teardown, its errors only reported.
        if !self.finished {
            for e in self.teardown() {
                eprintln!("cluster teardown after a failure: {e}");
            }
        }
        // Then etcd, then the underlay and with it the hosts' far ends.
        self.etcd.kill();
        for m in &mut self.etcd_others {
            m.kill();
        }
        let _ = ip(&["netns", "del", &self.underlay]);
    }
}

/// See [`TestCluster::underlay_peer`]; dropping it deletes its namespace and link.
pub struct UnderlayPeer {
    pub netns: String,
}

impl UnderlayPeer {
    /// `ip ARGS…` inside the peer; must succeed.
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        let mut a = vec!["-n", self.netns.as_str()];
        a.extend(args);
        ip(&a)
    }

    /// A program run inside the peer, bounded; any exit status is Ok.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<crate::Output> {
        let mut a = vec!["netns", "exec", self.netns.as_str(), program];
        a.extend(args);
        run_bounded(Command::new("ip").args(&a), BOUND)
    }
}

impl Drop for UnderlayPeer {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.netns]);
    }
}

/// Deletes the underlay if the cluster never came to own it.
struct UnderlayGuard(String);

impl Drop for UnderlayGuard {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.0]);
    }
}
