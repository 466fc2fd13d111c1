//! Crash consistency (issue 17): SIGKILL ferryd at a random moment of create network,
//! connect, run with `-p`, disconnect, `rm -f` and `network rm`, one at a time and several
//! at once, and after every restart prove that the store and the kernel agree.
//!
//! Each round picks, from a seeded RNG, one operation (or 2–4 on distinct objects) that
//! the present world allows, starts each as its own `ferry` process, waits a random delay
//! (0–60 ms, a third of them under 5 ms, where a connect or a create does its kernel
//! work), SIGKILLs ferryd and starts a new one on the same roots. Then:
//!
//! * the live leak check ([`TestHost::accounted`]): every ferry-owned link, address,
//!   namespace and mount is the store's, every store record is in the kernel, no address
//!   twice, every running sandbox's process alive;
//! * every running sandbox answers real TCP at each of its addresses (from the host, over
//!   the bridge), and each published port answers on 127.0.0.1; a port whose sandbox is
//!   gone answers "refused" (no DNAT left behind);
//! * an operation whose CLI said it succeeded is done (acknowledged means durable); one
//!   the kill cut off may be done or undone, and either way whole, by the checks above.
//!
//! At the end everything is removed through the CLI and nothing may be left.
//!
//! The seed is printed (`FERRY_CRASH_SEED=…`); setting that variable replays the same
//! choices and delays (what a race decides may still differ). `FERRY_CRASH_KILLS` sets the
//! number of kills (36 by default, for CI; `FERRY_CRASH_KILLS=200` is the full run).

#![allow(clippy::unwrap_used, clippy::too_many_lines)] // test code: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use ferry_testkit::{host_or_skip, Accounted, At, NoReach, TestHost};

const DEFAULT_KILLS: usize = 36;
const MAX_NETWORKS: usize = 4;
const MAX_SANDBOXES: usize = 6;
/// The port every chaos sandbox serves on: unusual, so its processes are told from other
/// tests' by their command line.
const SERVED_PORT: u16 = 8917;

/// splitmix64: small, seeded, and the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        (!items.is_empty()).then(|| &items[self.below(items.len())])
    }
}

fn env_number(name: &str) -> Result<Option<u64>> {
    match std::env::var(name) {
        Ok(v) => {
            Ok(Some(v.trim().parse().with_context(|| {
                format!("{name}={v:?} is not a number")
            })?))
        }
        Err(_) => Ok(None),
    }
}

#[derive(Debug, Clone)]
enum Op {
    CreateNet { net: String, subnet: String },
    Run { sb: String, net: String, port: u16 },
    Connect { sb: String, net: String },
    Disconnect { sb: String, net: String },
    Rm { sb: String },
    NetRm { net: String },
}

impl Op {
    fn args(&self, probe: &str) -> Vec<String> {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        match self {
            Op::CreateNet { net, subnet } => v(&["network", "create", "--subnet", subnet, net]),
            Op::Run { sb, net, port } => v(&[
                "run",
                "-d",
                "--name",
                sb,
                "--network",
                net,
                "-p",
                &format!("{port}:{SERVED_PORT}"),
                "--",
                probe,
                "serve-tcp",
                &SERVED_PORT.to_string(),
            ]),
            Op::Connect { sb, net } => v(&["network", "connect", net, sb]),
            Op::Disconnect { sb, net } => v(&["network", "disconnect", net, sb]),
            Op::Rm { sb } => v(&["rm", "-f", sb]),
            Op::NetRm { net } => v(&["network", "rm", net]),
        }
    }

    /// The sandbox and network names it touches (concurrent operations touch distinct ones).
    fn touches(&self) -> Vec<&str> {
        match self {
            Op::CreateNet { net, .. } | Op::NetRm { net } => vec![net],
            Op::Run { sb, net, .. } | Op::Connect { sb, net } | Op::Disconnect { sb, net } => {
                vec![sb, net]
            }
            Op::Rm { sb } => vec![sb],
        }
    }

    /// Whether the world shows the operation done.
    fn done_in(&self, w: &Accounted) -> bool {
        let has_net = |n: &str| w.networks.iter().any(|x| x.name == n);
        let on = |sb: &str, net: &str| {
            w.endpoints
                .iter()
                .any(|e| e.sandbox == sb && e.network == net)
        };
        match self {
            Op::CreateNet { net, .. } => has_net(net),
            Op::Run { sb, .. } => w.running.contains(sb),
            Op::Connect { sb, net } => on(sb, net),
            Op::Disconnect { sb, net } => !on(sb, net),
            Op::Rm { sb } => !w.states.contains_key(sb),
            Op::NetRm { net } => !has_net(net),
        }
    }
}

/// The world the chaos plays in: what exists, and counters for fresh names.
struct Chaos {
    rng: Rng,
    serial: u32,
}

impl Chaos {
    fn fresh(&mut self, prefix: &str) -> String {
        self.serial += 1;
        format!("{prefix}{}", self.serial)
    }

    /// One operation the world `w` allows that touches none of `busy`.
    fn plan(&mut self, w: &Accounted, busy: &BTreeSet<String>) -> Option<Op> {
        let free = |n: &String| !busy.contains(n);
        let nets: Vec<String> = w
            .networks
            .iter()
            .map(|n| n.name.clone())
            .filter(|n| n.starts_with("cn") && free(n))
            .collect();
        let all_sbs: Vec<String> = w.states.keys().filter(|s| free(s)).cloned().collect();
        let running: Vec<String> = w.running.iter().filter(|s| free(s)).cloned().collect();
        let on = |sb: &str| -> Vec<String> {
            w.endpoints
                .iter()
                .filter(|e| e.sandbox == sb && free(&e.network))
                .map(|e| e.network.clone())
                .collect()
        };
        let mut kinds = Vec::new();
        if w.networks.len() < MAX_NETWORKS + 3 {
            kinds.push(0);
        }
        if !nets.is_empty() && w.states.len() < MAX_SANDBOXES {
            kinds.extend([1, 1]);
        }
        if !nets.is_empty() && !running.is_empty() {
            kinds.extend([2, 2]);
        }
        if running.iter().any(|s| !on(s).is_empty()) {
            kinds.extend([3, 3]);
        }
        if !all_sbs.is_empty() {
            kinds.push(4);
        }
        let unused: Vec<String> = nets
            .iter()
            .filter(|n| !w.endpoints.iter().any(|e| &e.network == *n))
            .cloned()
            .collect();
        if !unused.is_empty() {
            kinds.push(5);
        }
        let op = match *self.rng.pick(&kinds)? {
            0 => {
                let net = self.fresh("cn");
                let n = self.serial;
                Op::CreateNet {
                    net,
                    subnet: format!("10.{}.{}.0/24", 150 + n / 250, n % 250),
                }
            }
            1 => Op::Run {
                sb: self.fresh("cs"),
                net: self.rng.pick(&nets)?.clone(),
                port: 20000 + self.serial as u16,
            },
            2 => {
                let sb = self.rng.pick(&running)?.clone();
                let have = on(&sb);
                let targets: Vec<String> =
                    nets.iter().filter(|n| !have.contains(n)).cloned().collect();
                Op::Connect {
                    net: self.rng.pick(&targets)?.clone(),
                    sb,
                }
            }
            3 => {
                let with: Vec<String> = running
                    .iter()
                    .filter(|s| !on(s).is_empty())
                    .cloned()
                    .collect();
                let sb = self.rng.pick(&with)?.clone();
                Op::Disconnect {
                    net: self.rng.pick(&on(&sb))?.clone(),
                    sb,
                }
            }
            4 => Op::Rm {
                sb: self.rng.pick(&all_sbs)?.clone(),
            },
            _ => Op::NetRm {
                net: self.rng.pick(&unused)?.clone(),
            },
        };
        Some(op)
    }

    /// 1 operation in two rounds of three, else 2–4 on distinct objects.
    fn plan_round(&mut self, w: &Accounted) -> Vec<Op> {
        let want = if self.rng.below(3) < 2 {
            1
        } else {
            2 + self.rng.below(3)
        };
        let mut busy = BTreeSet::new();
        let mut ops = Vec::new();
        for _ in 0..want * 3 {
            if ops.len() == want {
                break;
            }
            if let Some(op) = self.plan(w, &busy) {
                busy.extend(op.touches().into_iter().map(str::to_string));
                ops.push(op);
            }
        }
        ops
    }

    /// How long to wait before the kill: uniform over the longest of the operations' usual
    /// durations with the CLI's start (debug build, measured: a run takes ~60 ms, a create
    /// or connect ~15 ms), so kills land before, inside and after the kernel work.
    fn delay(&mut self, ops: &[Op]) -> Duration {
        let window_us = ops
            .iter()
            .map(|op| match op {
                Op::Run { .. } => 80_000,
                Op::Rm { .. } => 40_000,
                _ => 25_000,
            })
            .max()
            .unwrap_or(25_000);
        Duration::from_micros(self.rng.below(window_us) as u64)
    }
}

fn spawn(host: &TestHost, args: &[String]) -> Result<Child> {
    Command::new(&host.bins().ferry)
        .arg("-H")
        .arg(host.host_url())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start ferry")
}

/// The CLI's exit: success or not (killed after 30 s: a CLI must not hang on a dead ferryd).
fn finish(mut c: Child) -> Result<bool> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = c.try_wait()? {
            return Ok(s.success());
        }
        if Instant::now() >= deadline {
            let _ = c.kill();
            let _ = c.wait();
            bail!("a ferry CLI call did not return within 30 s of ferryd's restart");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Every endpoint of every running chaos sandbox answers over TCP, every published port
/// answers on 127.0.0.1, and every port published before but not now is refused.
fn prove_by_traffic(host: &TestHost, w: &Accounted, before: &Accounted) -> Result<()> {
    for e in w.endpoints.iter().filter(|e| e.sandbox.starts_with("cs")) {
        host.expect_reach(At::Host, "tcp", &e.ip, SERVED_PORT)
            .with_context(|| format!("{} on {} at {}", e.sandbox, e.network, e.ip))?;
    }
    let now: BTreeSet<u16> = w.published.iter().map(|p| p.0).collect();
    for (port, sb, _) in &w.published {
        host.expect_reach(At::Host, "tcp", "127.0.0.1", *port)
            .with_context(|| format!("{sb}'s published port {port}"))?;
    }
    let served = serving_pids(host)?;
    let expected: BTreeSet<i32> = w
        .pids
        .iter()
        .filter(|(name, _)| name.starts_with("cs"))
        .map(|p| p.1)
        .collect();
    ensure!(
        served == expected,
        "processes serving the chaos port {served:?} are not the running sandboxes' {expected:?}"
    );
    for (port, sb, _) in before.published.iter().filter(|p| !now.contains(&p.0)) {
        host.expect_no_reach(At::Host, "tcp", "127.0.0.1", *port, NoReach::Refused)
            .with_context(|| format!("{sb} is gone, but its port {port} is still forwarded"))?;
    }
    Ok(())
}

/// PIDs of the processes running `ferry-probe serve-tcp SERVED_PORT` (the chaos sandboxes'
/// servers; one left running by a sandbox the store calls exited or gone is an orphan).
fn serving_pids(host: &TestHost) -> Result<BTreeSet<i32>> {
    let want = format!(
        "{}\0serve-tcp\0{SERVED_PORT}\0",
        host.bins().probe.display()
    );
    let mut pids = BTreeSet::new();
    for e in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmdline == want.as_bytes() {
            pids.insert(pid);
        }
    }
    Ok(pids)
}

#[derive(Default)]
struct Tally {
    kills: usize,
    ops: usize,
    acknowledged: usize,
    cut_done: usize,
    cut_undone: usize,
    concurrent_rounds: usize,
}

#[test]
fn random_sigkills_leave_every_operation_wholly_done_or_undone() -> Result<()> {
    let mut host = host_or_skip!();
    let seed = match env_number("FERRY_CRASH_SEED")? {
        Some(s) => s,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos() as u64,
    };
    let kills = env_number("FERRY_CRASH_KILLS")?.map_or(DEFAULT_KILLS, |k| k as usize);
    eprintln!("crash: FERRY_CRASH_SEED={seed} FERRY_CRASH_KILLS={kills}");
    let probe = host.bins().probe.to_string_lossy().into_owned();
    let mut chaos = Chaos {
        rng: Rng(seed),
        serial: 0,
    };
    let mut t = Tally::default();
    let mut world = host.accounted()?;
    let started = Instant::now();
    for round in 1..=kills {
        let ops = chaos.plan_round(&world);
        let delay = chaos.delay(&ops);
        let children = ops
            .iter()
            .map(|op| spawn(&host, &op.args(&probe)))
            .collect::<Result<Vec<_>>>()?;
        std::thread::sleep(delay);
        host.restart_kill9()?;
        let acked = children
            .into_iter()
            .map(finish)
            .collect::<Result<Vec<_>>>()?;
        let what =
            || format!("round {round} (FERRY_CRASH_SEED={seed}), killed {delay:?} into {ops:?}");
        let next = host.accounted().with_context(what)?;
        for (op, ok) in ops.iter().zip(&acked) {
            let done = op.done_in(&next);
            eprintln!("crash: round {round}, {delay:?}: {op:?} acknowledged {ok}, done {done}");
            ensure!(
                !ok || done,
                "{}: {op:?} was acknowledged but is not done after the restart",
                what()
            );
            match (ok, done) {
                (true, _) => t.acknowledged += 1,
                (false, true) => t.cut_done += 1,
                (false, false) => t.cut_undone += 1,
            }
        }
        prove_by_traffic(&host, &next, &world).with_context(what)?;
        t.kills += 1;
        t.ops += ops.len();
        t.concurrent_rounds += usize::from(ops.len() > 1);
        world = next;
    }
    eprintln!(
        "crash: {} kills ({} with 2–4 operations at once), {} operations: {} acknowledged and done, \
         {} cut off and done, {} cut off and undone; 0 lost; {} networks and {} sandboxes at the end; {:?}",
        t.kills,
        t.concurrent_rounds,
        t.ops,
        t.acknowledged,
        t.cut_done,
        t.cut_undone,
        world.networks.len(),
        world.states.len(),
        started.elapsed()
    );
    for id in host.ferry_ok(&["ps", "-aq"])?.split_whitespace() {
        host.ferry_ok(&["rm", "-f", id])?;
    }
    for net in host.user_networks()? {
        host.ferry_ok(&["network", "rm", &net])?;
    }
    let left = host.leftovers()?;
    ensure!(
        left.is_empty(),
        "left behind after removing everything:\n{left}"
    );
    host.finish()
}

/// The leak check has teeth: a `fy` link the store does not know, and a sandbox whose
/// address was taken away by hand, each fail it naming the thing; the control, the same
/// world whole, passes before and after.
#[test]
fn the_leak_check_names_what_the_store_does_not_account_for() -> Result<()> {
    let host = host_or_skip!();
    host.create_network("cnleak", &["--subnet", "10.149.0.0/24"])?;
    host.run_idle("csleak", &["--network", "cnleak", "-p", "18917:80"])?;
    let w = host.accounted()?;
    let nft = host.leftovers()?.nft_elements;
    ensure!(
        nft.iter().any(|e| e.contains("18917")),
        "the published port is not among the nftables elements the leak check reads: {nft:?}"
    );
    ensure!(
        w.endpoints.len() == 1 && w.running.contains("csleak"),
        "the control world is not what was made: {w:?}"
    );
    host.host_ip(&["link", "add", "fy00000000000", "type", "bridge"])?;
    let err = format!(
        "{:#}",
        host.accounted().expect_err("an unknown fy link passed")
    );
    ensure!(
        err.contains("fy00000000000"),
        "the failure does not name the link: {err}"
    );
    host.host_ip(&["link", "del", "fy00000000000"])?;
    host.accounted()?;

    // Routes: one on the network's bridge that is not its subnet's, one in the sandbox
    // for a network it is not on, and the sandbox's default route gone.
    let br = w.networks.iter().find(|n| n.name == "cnleak");
    let br = br
        .and_then(|n| n.bridge.clone())
        .context("cnleak's bridge")?;
    let bb = ferry_testkit::BUSYBOX;
    let route_cases: [(&str, Vec<&str>, Vec<&str>); 3] = [
        (
            "10.148.0.0/24",
            vec!["ip", "route", "add", "10.148.0.0/24", "dev", &br],
            vec!["ip", "route", "del", "10.148.0.0/24", "dev", &br],
        ),
        (
            "10.147.0.0/24",
            vec![bb, "ip", "route", "add", "10.147.0.0/24", "dev", "eth0"],
            vec![bb, "ip", "route", "del", "10.147.0.0/24", "dev", "eth0"],
        ),
        (
            "default via 10.149.0.1",
            vec![bb, "ip", "route", "del", "default"],
            vec![bb, "ip", "route", "add", "default", "via", "10.149.0.1"],
        ),
    ];
    for (named, make, unmake) in route_cases {
        let in_host = make[0] == "ip";
        let run = |cmd: &[&str]| -> Result<()> {
            if in_host {
                host.host_ip(&cmd[1..]).map(drop)
            } else {
                host.exec("csleak", cmd)?.expect_success().map(drop)
            }
        };
        run(&make)?;
        let err = format!(
            "{:#}",
            host.accounted()
                .expect_err(&format!("a route case ({named}) passed"))
        );
        ensure!(
            err.contains(named),
            "the failure does not name {named}: {err}"
        );
        run(&unmake)?;
        host.accounted()?;
    }

    let cidr = &w.endpoints[0].cidr;
    host.exec(
        "csleak",
        &[
            ferry_testkit::BUSYBOX,
            "ip",
            "addr",
            "del",
            cidr,
            "dev",
            "eth0",
        ],
    )?
    .expect_success()?;
    let err = format!("{:#}", host.accounted().expect_err("a lost address passed"));
    ensure!(
        err.contains(cidr.as_str()),
        "the failure does not name the address: {err}"
    );
    host.ferry_ok(&["rm", "-f", "csleak"])?;
    host.ferry_ok(&["network", "rm", "cnleak"])?;
    host.accounted()?;
    let left = host.leftovers()?;
    ensure!(left.is_empty(), "left behind:\n{left}");
    // A route left in the host's namespace is a leftover, named.
    host.host_ip(&["route", "add", "10.146.0.0/24", "dev", "lo"])?;
    let left = host.leftovers()?;
    ensure!(
        left.routes
            .iter()
            .any(|r| r.starts_with("10.146.0.0/24 dev lo")),
        "a route left on the host is not among the leftovers: {left}"
    );
    host.host_ip(&["route", "del", "10.146.0.0/24", "dev", "lo"])?;
    ensure!(host.leftovers()?.is_empty(), "the control: nothing left");
    host.finish()
}
