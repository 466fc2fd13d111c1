//! Embedded DNS: sandboxes find each other by name, per network — real lookups from inside
//! sandboxes (busybox nslookup, and the test's own resolver client in the sandbox's network
//! namespace for exact answer codes and timing). Forwarding goes to a fake upstream that the
//! test runs on loopback in ferryd's throwaway namespace; nothing leaves the machine.

#![allow(clippy::unwrap_used, clippy::too_many_lines)] // test code: a failed unwrap is a failed test

use anyhow::{ensure, Context, Result};
use ferry_testkit::{host_or_skip, unique, At, TestHost, BUSYBOX};
use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use nix::sched::{setns, CloneFlags};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The fake upstream's port on loopback in ferryd's namespace (`--dns-upstream`).
const UPSTREAM: &str = "127.0.0.1:5300";
/// What the fake upstream answers for names under `upstream.test`.
const UPSTREAM_ANSWER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);

/// Run `f` on a fresh thread inside the network namespace `ns` (the thread is thrown
/// away, so no other code ever runs in a namespace it did not expect).
fn in_netns<T: Send + 'static>(
    ns: &File,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let ns = ns.try_clone()?;
    std::thread::spawn(move || {
        setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).context("setns")?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("namespace thread panicked"))?
}

/// A UDP socket inside sandbox `name`'s network namespace.
fn socket_in_sandbox(host: &TestHost, name: &str) -> Result<UdpSocket> {
    let ns = File::open(host.netns_dir().join(format!("ferry-{name}")))
        .with_context(|| format!("open the netns of {name}"))?;
    in_netns(&ns, || Ok(UdpSocket::bind("0.0.0.0:0")?))
}

fn query(id: u16, name: &str, t: RecordType) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id).set_recursion_desired(true);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    m.to_vec().unwrap()
}

/// One question from `sock` to `server`; the answer, or None after `wait`.
fn ask_once(
    sock: &UdpSocket,
    server: SocketAddr,
    id: u16,
    name: &str,
    t: RecordType,
    wait: Duration,
) -> Result<Option<Message>> {
    sock.set_read_timeout(Some(wait))?;
    sock.send_to(&query(id, name, t), server)?;
    let end = Instant::now() + wait;
    let mut buf = [0u8; 4096];
    loop {
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => {
                let m = Message::from_vec(&buf[..n])?;
                if m.id() == id {
                    return Ok(Some(m));
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None)
            }
            // A timed recv is never restarted: a stop or a cgroup freeze of the test
            // process ends it with EINTR. Wait out the rest of `wait`.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
        if Instant::now() >= end {
            return Ok(None);
        }
    }
}

/// Resolver client in a sandbox: asks the sandbox's name server (the first `nameserver`
/// of its resolv.conf, read from inside), as its processes would.
struct Client {
    sock: UdpSocket,
    server: SocketAddr,
    id: u16,
}

impl Client {
    fn new(host: &TestHost, sandbox: &str) -> Result<Client> {
        let resolv = host
            .exec(sandbox, &[BUSYBOX, "cat", "/etc/resolv.conf"])?
            .expect_success()?;
        let ns = resolv
            .out()
            .lines()
            .find_map(|l| l.strip_prefix("nameserver "))
            .with_context(|| format!("no nameserver in {sandbox}'s resolv.conf:\n{resolv}"))?;
        Ok(Client {
            sock: socket_in_sandbox(host, sandbox)?,
            server: SocketAddr::new(ns.trim().parse()?, 53),
            id: 1,
        })
    }

    fn ask(&mut self, name: &str, t: RecordType) -> Result<Message> {
        self.id = self.id.wrapping_add(1);
        ask_once(
            &self.sock,
            self.server,
            self.id,
            name,
            t,
            Duration::from_secs(5),
        )?
        .with_context(|| format!("no answer to {name} {t} from {}", self.server))
    }

    /// The A records of `name`, or the answer code when it is not NOERROR.
    fn a(&mut self, name: &str) -> Result<std::result::Result<Vec<Ipv4Addr>, ResponseCode>> {
        let m = self.ask(name, RecordType::A)?;
        if m.response_code() != ResponseCode::NoError {
            return Ok(Err(m.response_code()));
        }
        Ok(Ok(m
            .answers()
            .iter()
            .filter_map(|r| match r.data() {
                RData::A(A(ip)) => Some(*ip),
                _ => None,
            })
            .collect()))
    }
}

/// A fake upstream DNS server on loopback in ferryd's namespace: names under
/// `upstream.test` answer `UPSTREAM_ANSWER`, others NXDOMAIN; or, `silent`, nothing at all.
/// Counts the queries it got. Stops when dropped.
struct FakeUpstream {
    queries: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeUpstream {
    fn start(host: &TestHost, addr: &str, silent: bool) -> Result<FakeUpstream> {
        let addr: SocketAddr = addr.parse()?;
        let sock = in_netns(host.netns()?, move || {
            // ferryd's namespace is fresh: make sure loopback is up.
            let up = std::process::Command::new(BUSYBOX)
                .args(["ip", "link", "set", "lo", "up"])
                .status()?;
            ensure!(up.success(), "ip link set lo up: {up}");
            Ok(UdpSocket::bind(addr)?)
        })?;
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        let queries = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (q, s) = (queries.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                q.fetch_add(1, Ordering::Relaxed);
                if silent {
                    continue;
                }
                let Ok(req) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut m = Message::new();
                m.set_id(req.id())
                    .set_message_type(MessageType::Response)
                    .set_recursion_desired(true)
                    .set_recursion_available(true);
                m.add_queries(req.queries().iter().cloned());
                let q = &req.queries()[0];
                if q.name().to_ascii().ends_with("upstream.test.") {
                    if q.query_type() == RecordType::A {
                        m.add_answer(Record::from_rdata(
                            q.name().clone(),
                            30,
                            RData::A(A(UPSTREAM_ANSWER)),
                        ));
                    }
                } else {
                    m.set_response_code(ResponseCode::NXDomain);
                }
                let _ = sock.send_to(&m.to_vec().unwrap(), from);
            }
        });
        Ok(FakeUpstream {
            queries,
            stop,
            thread: Some(thread),
        })
    }

    fn count(&self) -> usize {
        self.queries.load(Ordering::Relaxed)
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start_host(scenario: &str) -> Result<Option<TestHost>> {
    if !ferry_testkit::privileged(scenario) {
        return Ok(None);
    }
    TestHost::start_with_args(scenario, &["--dns-upstream", UPSTREAM]).map(Some)
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// `busybox nslookup NAME` inside `from` (its resolv.conf's server), bounded.
fn nslookup(host: &TestHost, from: &str, name: &str) -> Result<ferry_testkit::Output> {
    host.exec(from, &[BUSYBOX, "timeout", "10", BUSYBOX, "nslookup", name])
}

#[test]
fn sandboxes_find_each_other_by_name_hostname_and_alias() -> Result<()> {
    let Some(host) = start_host(ferry_testkit::scenario_name!())? else {
        return Ok(());
    };
    let upstream = FakeUpstream::start(&host, UPSTREAM, false)?;
    let net = unique("net");
    host.create_network(&net, &["--subnet", "10.31.0.0/24"])?;
    let web = host.run_web(
        "web",
        &["--network", &net, "--hostname", "h-web", "--alias", "www"],
    )?;
    host.run_idle("client", &["--network", &net])?;
    // (busybox nslookup tries only the first search domain, so the lookups below run
    // from a sandbox without one.)
    host.run_idle(
        "searcher",
        &[
            "--network",
            &net,
            "--dns",
            "127.0.0.1",
            "--dns-search",
            "corp.test",
            "--dns-option",
            "ndots:2",
        ],
    )?;
    let resolv = host
        .exec("searcher", &[BUSYBOX, "cat", "/etc/resolv.conf"])?
        .expect_success()?;
    ensure!(
        resolv.out() == "nameserver 10.31.0.1\nsearch corp.test\noptions ndots:2",
        "resolv.conf points at the gateway, with --dns-search and --dns-option:\n{resolv}"
    );
    let web_ip = host.ip_of("web", &net)?;
    for name in ["web", "h-web", "www", "WEB"] {
        let out = nslookup(&host, "client", name)?;
        ensure!(
            out.success() && out.out().contains(&format!("Address: {web_ip}")),
            "nslookup {name} from client:\n{out}"
        );
    }
    // The seed article's `wget http://web`: a TCP fetch by name.
    host.expect_fetch("client", "web", &web)?;

    let mut c = Client::new(&host, "client")?;
    ensure!(c.a("web.")? == Ok(vec![ip(&web_ip)]), "A web");
    let aaaa = c.ask("web.", RecordType::AAAA)?;
    ensure!(
        aaaa.response_code() == ResponseCode::NoError && aaaa.answers().is_empty(),
        "AAAA of a local name is empty NOERROR: {aaaa:?}"
    );
    let reverse: Ipv4Addr = web_ip.parse()?;
    let o = reverse.octets();
    let ptr = c.ask(
        &format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0]),
        RecordType::PTR,
    )?;
    ensure!(
        ptr.answers().len() == 1 && ptr.answers()[0].data().to_string() == "web.",
        "PTR of web's address: {ptr:?}"
    );
    ensure!(
        ptr.answers()[0].ttl() <= 60,
        "short TTL: {}",
        ptr.answers()[0].ttl()
    );
    // The same over TCP, from inside the sandbox.
    let ns = File::open(host.netns_dir().join("ferry-client"))?;
    let server = c.server;
    let mut tcp = in_netns(&ns, move || {
        Ok(std::net::TcpStream::connect_timeout(
            &server,
            Duration::from_secs(5),
        )?)
    })?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    let q = query(77, "www.", RecordType::A);
    tcp.write_all(&(q.len() as u16).to_be_bytes())?;
    tcp.write_all(&q)?;
    let mut len = [0u8; 2];
    tcp.read_exact(&mut len)?;
    let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
    tcp.read_exact(&mut body)?;
    let r = Message::from_vec(&body)?;
    ensure!(
        r.id() == 77
            && r.answers().len() == 1
            && r.answers()[0].data() == &RData::A(A(ip(&web_ip))),
        "A www over TCP: {r:?}"
    );
    drop(upstream);
    host.finish()
}

#[test]
fn names_on_another_network_are_nxdomain_and_two_networks_see_both() -> Result<()> {
    let Some(host) = start_host(ferry_testkit::scenario_name!())? else {
        return Ok(());
    };
    let upstream = FakeUpstream::start(&host, UPSTREAM, false)?;
    let (a, b) = (unique("neta"), unique("netb"));
    host.create_network(&a, &["--subnet", "10.32.1.0/24"])?;
    host.create_network(&b, &["--subnet", "10.32.2.0/24"])?;
    host.run_idle("on-a", &["--network", &a])?;
    host.run_idle("on-b", &["--network", &b])?;
    host.run_idle("both", &["--network", &a])?;
    host.ferry_ok(&["network", "connect", &b, "both"])?;

    let mut from_a = Client::new(&host, "on-a")?;
    let nx = from_a.a("on-b.")?;
    ensure!(
        nx == Err(ResponseCode::NXDomain),
        "on-b seen from network a: {nx:?}"
    );
    ensure!(
        upstream.count() == 0,
        "a name ferry owns elsewhere went upstream"
    );
    let out = nslookup(&host, "on-a", "on-b")?;
    ensure!(
        !out.success() && out.to_string().contains("NXDOMAIN"),
        "nslookup on-b from on-a:\n{out}"
    );

    let mut both = Client::new(&host, "both")?;
    ensure!(
        both.a("on-a.")? == Ok(vec![ip(&host.ip_of("on-a", &a)?)]),
        "both resolves a name of network a"
    );
    ensure!(
        both.a("on-b.")? == Ok(vec![ip(&host.ip_of("on-b", &b)?)]),
        "both resolves a name of network b"
    );
    // The default bridge has no names.
    host.run_idle("plain", &[])?;
    let resolv = host
        .exec("plain", &[BUSYBOX, "cat", "/etc/resolv.conf"])?
        .expect_success()?;
    ensure!(
        !resolv.out().contains("10.32."),
        "a default-bridge sandbox is not pointed at the responder:\n{resolv}"
    );
    // Connected to a user network, it is (its resolv.conf is rewritten in place), and it
    // resolves that network's names; disconnected, it goes back to the host's servers.
    host.ferry_ok(&["network", "connect", &a, "plain"])?;
    let resolv = host
        .exec("plain", &[BUSYBOX, "cat", "/etc/resolv.conf"])?
        .expect_success()?;
    ensure!(
        resolv.out().starts_with("nameserver 10.32.1.1"),
        "after connect:\n{resolv}"
    );
    let got = Client::new(&host, "plain")?.a("on-a.")?;
    ensure!(
        got == Ok(vec![ip(&host.ip_of("on-a", &a)?)]),
        "plain, connected to a, asked on-a.: {got:?}"
    );
    host.ferry_ok(&["network", "disconnect", &a, "plain"])?;
    let resolv = host
        .exec("plain", &[BUSYBOX, "cat", "/etc/resolv.conf"])?
        .expect_success()?;
    ensure!(
        !resolv.out().contains("10.32."),
        "after disconnect:\n{resolv}"
    );
    drop(upstream);
    host.finish()
}

#[test]
fn answers_change_at_once_after_rm_and_after_disconnect() -> Result<()> {
    let Some(host) = start_host(ferry_testkit::scenario_name!())? else {
        return Ok(());
    };
    let _upstream = FakeUpstream::start(&host, UPSTREAM, false)?;
    let (a, b) = (unique("neta"), unique("netb"));
    host.create_network(&a, &["--subnet", "10.33.1.0/24"])?;
    host.create_network(&b, &["--subnet", "10.33.2.0/24"])?;
    host.run_idle("client", &["--network", &a])?;
    host.run_idle("gone", &["--network", &a])?;
    host.run_idle("mover", &["--network", &a])?;
    host.ferry_ok(&["network", "connect", &b, "mover"])?;
    let mut c = Client::new(&host, "client")?;

    let gone = ip(&host.ip_of("gone", &a)?);
    let before = c.a("gone.")?;
    ensure!(before == Ok(vec![gone]), "gone before rm: {before:?}");
    host.ferry_ok(&["rm", "-f", "gone"])?;
    let after = c.a("gone.")?;
    ensure!(
        after == Err(ResponseCode::NXDomain),
        "the very next query after rm: {after:?}"
    );

    let mover = ip(&host.ip_of("mover", &a)?);
    let before = c.a("mover.")?;
    ensure!(before == Ok(vec![mover]), "mover before: {before:?}");
    host.ferry_ok(&["network", "disconnect", &a, "mover"])?;
    let after = c.a("mover.")?;
    ensure!(
        after == Err(ResponseCode::NXDomain),
        "the very next query after disconnect: {after:?}"
    );
    // Reconnected under a new alias: the new name answers.
    host.ferry_ok(&["network", "connect", "--alias", "back", &a, "mover"])?;
    let back = c.a("back.")?;
    ensure!(
        back == Ok(vec![ip(&host.ip_of("mover", &a)?)]),
        "alias after connect: {back:?}"
    );
    host.finish()
}

#[test]
fn unknown_names_go_to_the_upstream_and_internal_networks_never_forward() -> Result<()> {
    let Some(host) = start_host(ferry_testkit::scenario_name!())? else {
        return Ok(());
    };
    let upstream = FakeUpstream::start(&host, UPSTREAM, false)?;
    let (net, inner) = (unique("net"), unique("inner"));
    host.create_network(&net, &["--subnet", "10.34.1.0/24"])?;
    host.create_network(&inner, &["--internal", "--subnet", "10.34.2.0/24"])?;
    host.run_idle("out", &["--network", &net])?;
    host.run_idle("in1", &["--network", &inner])?;
    host.run_idle("in2", &["--network", &inner])?;

    let mut c = Client::new(&host, "out")?;
    let got = c.a("some.upstream.test.")?;
    ensure!(
        got == Ok(vec![UPSTREAM_ANSWER]),
        "forwarded answer: {got:?}"
    );
    ensure!(c.a("nothing.example.")? == Err(ResponseCode::NXDomain));
    let out = nslookup(&host, "out", "www.upstream.test")?;
    ensure!(
        out.success() && out.out().contains(&UPSTREAM_ANSWER.to_string()),
        "busybox nslookup of a forwarded name:\n{out}"
    );
    let before = upstream.count();
    ensure!(before >= 2, "the upstream saw {before} queries");

    // A sandbox's own --dns servers are its upstreams (a second fake on 127.0.0.1:53).
    let own = FakeUpstream::start(&host, "127.0.0.1:53", false)?;
    host.run_idle("own", &["--network", &net, "--dns", "127.0.0.1"])?;
    let mut o = Client::new(&host, "own")?;
    ensure!(o.a("x.upstream.test.")? == Ok(vec![UPSTREAM_ANSWER]));
    ensure!(
        own.count() == 1 && upstream.count() == before,
        "--dns 127.0.0.1 went to its own upstream ({} queries) and not the daemon's ({})",
        own.count(),
        upstream.count() - before
    );
    drop(own);

    let mut i = Client::new(&host, "in1")?;
    ensure!(
        i.a("in2.")? == Ok(vec![ip(&host.ip_of("in2", &inner)?)]),
        "names on an internal network answer"
    );
    let refused = i.a("exfil.upstream.test.")?;
    ensure!(
        refused == Err(ResponseCode::Refused),
        "unknown name from an internal network: {refused:?}"
    );
    let txt = i.ask("exfil.upstream.test.", RecordType::TXT)?;
    ensure!(txt.response_code() == ResponseCode::Refused);
    ensure!(
        upstream.count() == before,
        "an internal sandbox's query reached the upstream"
    );
    drop(upstream);
    host.finish()
}

#[test]
fn a_silent_upstream_gives_servfail_quickly() -> Result<()> {
    let Some(host) = start_host(ferry_testkit::scenario_name!())? else {
        return Ok(());
    };
    let upstream = FakeUpstream::start(&host, UPSTREAM, true)?;
    let net = unique("net");
    host.create_network(&net, &["--subnet", "10.35.0.0/24"])?;
    host.run_idle("c", &["--network", &net])?;
    let mut c = Client::new(&host, "c")?;
    let t = Instant::now();
    let r = c.a("slow.upstream.test.")?;
    let took = t.elapsed();
    ensure!(r == Err(ResponseCode::ServFail), "answer: {r:?}");
    ensure!(
        took < Duration::from_secs(4),
        "SERVFAIL took {took:?} (the asker's own timer is 5 s)"
    );
    ensure!(upstream.count() >= 1, "the upstream was asked");
    // Local names still answer meanwhile.
    let got = c.a("c.")?;
    ensure!(
        got == Ok(vec![ip(&host.ip_of("c", &net)?)]),
        "c. while the upstream is silent: {got:?}"
    );
    drop(upstream);
    host.finish()
}

#[test]
fn no_query_is_lost_while_50_sandboxes_come_and_go() -> Result<()> {
    let host = host_or_skip!();
    let net = unique("net");
    host.create_network(&net, &["--subnet", "10.36.0.0/24"])?;
    host.run_idle("probe", &["--network", &net])?;
    let probe_ip = ip(&host.ip_of("probe", &net)?);
    let client = Client::new(&host, "probe")?;
    let (sock, server) = (client.sock, client.server);

    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let asker = std::thread::spawn(move || -> Result<(usize, usize, usize)> {
        let (mut sent, mut lost, mut wrong) = (0usize, 0usize, 0usize);
        let mut id = 0u16;
        while !s.load(Ordering::Relaxed) {
            id = id.wrapping_add(1);
            sent += 1;
            match ask_once(
                &sock,
                server,
                id,
                "probe.",
                RecordType::A,
                Duration::from_secs(1),
            )? {
                None => lost += 1,
                Some(m) => {
                    let ok = m.response_code() == ResponseCode::NoError
                        && m.answers().len() == 1
                        && m.answers()[0].data() == &RData::A(A(probe_ip));
                    if !ok {
                        wrong += 1;
                    }
                }
            }
        }
        Ok((sent, lost, wrong))
    });

    let churn = (|| -> Result<()> {
        for round in 0..10 {
            let names: Vec<String> = (0..5).map(|i| format!("churn{round}x{i}")).collect();
            for n in &names {
                host.run_idle(n, &["--network", &net, "--alias", "churn"])?;
            }
            for n in &names {
                host.ferry_ok(&["rm", "-f", n])?;
            }
        }
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    let (sent, lost, wrong) = asker
        .join()
        .map_err(|_| anyhow::anyhow!("asker panicked"))??;
    churn?;
    eprintln!("churn: {sent} queries, {lost} unanswered, {wrong} wrong");
    ensure!(sent > 50, "only {sent} queries were asked during the churn");
    ensure!(
        lost == 0 && wrong == 0,
        "{lost} of {sent} queries unanswered, {wrong} wrong, while 50 sandboxes came and went"
    );
    host.finish()
}

#[test]
fn garbage_packets_do_not_stop_the_responder() -> Result<()> {
    let host = host_or_skip!();
    let net = unique("net");
    host.create_network(&net, &["--subnet", "10.37.0.0/24"])?;
    host.run_idle("c", &["--network", &net])?;
    let c = Client::new(&host, "c")?;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for len in 0..300usize {
        let mut p = vec![0u8; len];
        for b in p.iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
        if len > 2 {
            p[2] &= 0x7f; // a query, so the responder has to look inside
        }
        c.sock.send_to(&p, c.server)?;
    }
    // A fresh client: the old socket holds the FORMERR answers to the garbage.
    let mut c = Client::new(&host, "c")?;
    let got = c.a("c.")?;
    ensure!(
        got == Ok(vec![ip(&host.ip_of("c", &net)?)]),
        "the responder's answer after 300 garbage packets: {got:?}"
    );
    ensure!(
        host.ferryd_pid()
            .is_some_and(|p| Path::new(&format!("/proc/{p}")).exists()),
        "ferryd is alive"
    );
    host.finish()
}

#[test]
fn names_answer_again_after_ferryd_restarts() -> Result<()> {
    let Some(mut host) = start_host(ferry_testkit::scenario_name!())? else {
        return Ok(());
    };
    let net = unique("net");
    host.create_network(&net, &["--subnet", "10.38.0.0/24"])?;
    host.run_idle("a", &["--network", &net])?;
    host.run_idle("b", &["--network", &net])?;
    let b_ip = ip(&host.ip_of("b", &net)?);
    ensure!(Client::new(&host, "a")?.a("b.")? == Ok(vec![b_ip]));
    host.restart_kill9()?;
    // The sandboxes kept running; the new ferryd listens again on the gateway.
    let mut c = Client::new(&host, "a")?;
    ensure!(
        c.a("b.")? == Ok(vec![b_ip]),
        "b after the restart\n{}",
        host.log_tail(20)
    );
    host.finish()
}

#[test]
fn a_gateway_port_held_by_another_server_is_taken_once_it_is_free() -> Result<()> {
    let Some(host) = start_host(ferry_testkit::scenario_name!())? else {
        return Ok(());
    };
    // Someone else holds port 53 on every address of ferryd's namespace.
    let squatter = in_netns(host.netns()?, || Ok(UdpSocket::bind("0.0.0.0:53")?))?;
    let net = unique("net");
    host.create_network(&net, &["--subnet", "10.39.0.0/24"])?;
    host.run_idle("a", &["--network", &net])?;
    let a_ip = ip(&host.ip_of("a", &net)?);
    let mut c = Client::new(&host, "a")?;
    c.id += 1;
    let got = ask_once(
        &c.sock,
        c.server,
        c.id,
        "a.",
        RecordType::A,
        Duration::from_millis(500),
    )?;
    ensure!(got.is_none(), "answered while the port was held: {got:?}");
    drop(squatter);
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        c.id += 1;
        let got = ask_once(
            &c.sock,
            c.server,
            c.id,
            "a.",
            RecordType::A,
            Duration::from_millis(500),
        )?;
        if got
            .as_ref()
            .is_some_and(|m| m.answers().len() == 1 && m.answers()[0].data() == &RData::A(A(a_ip)))
        {
            break;
        }
        ensure!(
            Instant::now() < end,
            "ferryd did not take the port within 10 s of it being freed\n{}",
            host.log_tail(20)
        );
    }
    // Said once although every commit tried again, and its end said too.
    let log = host.log_tail(200);
    let held = log
        .lines()
        .filter(|l| l.contains("listen for DNS on 10.39.0.1:53"))
        .count();
    ensure!(held == 1, "the held port was logged {held} times:\n{log}");
    ensure!(
        log.contains("dns: listening on 10.39.0.1:53 now"),
        "no word of the port being taken:\n{log}"
    );
    host.finish()
}

#[test]
fn a_published_port_53_does_not_catch_queries_to_the_gateway() -> Result<()> {
    let Some(host) = start_host(ferry_testkit::scenario_name!())? else {
        return Ok(());
    };
    let _upstream = FakeUpstream::start(&host, UPSTREAM, false)?;
    // Published on all addresses before any user network exists (so before any
    // responder holds port 53): it would DNAT every gateway's port 53 to itself.
    host.run_server("catcher", &["-p", "53:53/udp"], "udp", 53)?;
    let net = unique("net");
    host.create_network(&net, &["--subnet", "10.35.0.0/24"])?;
    host.run_idle("web", &["--network", &net])?;
    host.run_idle("client", &["--network", &net])?;
    // Control: the catcher does catch port 53 on the host's other addresses, from a peer
    // machine and from this very client (hairpin), so only the gateway's exemption keeps
    // the query below away from it.
    let peer = host.add_peer("10.93.0.1/24", "10.93.0.2/24")?;
    host.expect_reach(At::Peer(&peer), "udp", &peer.host_ip, 53)?;
    host.expect_reach(At::Sandbox("client"), "udp", &peer.host_ip, 53)?;
    let mut c = Client::new(&host, "client")?;
    let got = c.a("web.")?;
    ensure!(
        got == Ok(vec![ip(&host.ip_of("web", &net)?)]),
        "the gateway's responder did not answer: {got:?}"
    );
    drop(peer);
    host.finish()
}

#[test]
fn queries_to_the_gateway_leave_no_conntrack_entry_but_other_traffic_is_tracked() -> Result<()> {
    let Some(host) = start_host(ferry_testkit::scenario_name!())? else {
        return Ok(());
    };
    let net = unique("net");
    host.create_network(&net, &["--subnet", "10.41.0.0/24"])?;
    host.run_idle("a", &["--network", &net])?;
    let a = ip(&host.ip_of("a", &net)?);
    let mut c = Client::new(&host, "a")?;
    for _ in 0..3 {
        let got = c.a("a.")?;
        ensure!(got == Ok(vec![a]), "A a.: {got:?}");
    }
    // A resolver's way: a new source port per lookup.
    let out = nslookup(&host, "a", "a")?;
    ensure!(out.success(), "nslookup a: {}", out.out());
    ensure!(host.pings("a", "10.41.0.1")?, "a cannot ping its gateway");
    let table = host.conntrack_table()?;
    ensure!(
        table
            .lines()
            .any(|l| l.contains("icmp") && l.contains("dst=10.41.0.1")),
        "the ping to the gateway was not tracked either (is conntrack on?):\n{table}"
    );
    ensure!(
        !table
            .lines()
            .any(|l| l.contains("dst=10.41.0.1") && l.contains("dport=53")),
        "queries to the gateway's DNS left conntrack entries:\n{table}"
    );
    host.finish()
}
