//! Orchestration tested by the kernel work it asks for, without root: the recording
//! fake stands at the kernel edge and can be told to refuse a request.

#![allow(clippy::unwrap_used, clippy::too_many_lines)] // test code: a failed unwrap is a failed test

mod common;
use common::{net_req, run_req};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ferry_core::docker::network::{ConnectRequest, DisconnectRequest, NetworkCreateRequest};
use ferry_core::model::RunState;
use ferry_kernel::fake::Recorder;
use ferry_store::MemStore;
use ferryd::state::State;
use ferryd::{Config, Daemon};

fn daemon(dir: &tempfile::TempDir) -> Arc<Daemon<Recorder>> {
    daemon_and_switch(dir).0
}

/// A daemon, and a switch that makes its store refuse every commit while it is on.
fn daemon_and_switch(dir: &tempfile::TempDir) -> (Arc<Daemon<Recorder>>, Arc<AtomicBool>) {
    let cfg = Config::under(dir.path());
    let store = MemStore::default();
    let refuse = store.refusal_switch();
    let d = Daemon::new(cfg, Recorder::default(), Box::new(store)).unwrap();
    (d, refuse)
}

/// Networks n1 (10.5.0.0/24) and n2 (10.6.0.0/24), and a running sandbox `web` on n1.
async fn web_on_n1_with_n2(dir: &tempfile::TempDir) -> (Arc<Daemon<Recorder>>, String) {
    let d = daemon(dir);
    let id = web_on_n1_with_n2_in(&d).await;
    (d, id)
}

async fn web_on_n1_with_n2_in(d: &Arc<Daemon<Recorder>>) -> String {
    d.ensure_predefined().await.unwrap();
    d.create_network(net_req("n1", "10.5.0.0/24"))
        .await
        .unwrap();
    d.create_network(net_req("n2", "10.6.0.0/24"))
        .await
        .unwrap();
    let id = d.create_sandbox(Some("web"), run_req("n1")).await.unwrap();
    d.start_sandbox(&id, false).await.unwrap();
    id
}

fn fail_on(d: &Daemon<Recorder>, prefix: &str) {
    *d.kernel.fail_on.lock().unwrap() = Some(prefix.into());
}

/// The operation failed, and with the failure `fail_on(prefix)` injected, not another one
/// (a refusal of the request itself would leave the same state behind without any
/// rollback having run).
fn failed_by_injection<T: std::fmt::Debug>(res: ferryd::error::Result<T>, prefix: &str) {
    let err = res.expect_err("the injected kernel failure must fail the operation");
    let msg = err.to_string();
    assert!(
        msg.contains("injected failure") && msg.contains(&format!("fake {prefix}")),
        "failed, but not by the injected `{prefix}` failure: {msg}"
    );
}

/// What the store holds equals what ferryd holds in memory.
async fn store_matches_memory(d: &Daemon<Recorder>) {
    let stored = d.stored_state().unwrap();
    let mem = d.state.lock().await;
    assert_eq!(stored.networks, mem.networks);
    assert_eq!(stored.sandboxes, mem.sandboxes);
}

#[tokio::test]
async fn a_refused_bridge_rolls_the_network_back_out_of_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(&dir);
    d.ensure_predefined().await.unwrap();
    let nft_before = nft_lines(&d).len();
    fail_on(&d, "bridge");
    let err = d
        .create_network(net_req("n1", "10.5.0.0/24"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("injected failure"), "{err}");
    // The network's firewall elements went in with its commit, before the bridge: the
    // refusal takes them out again.
    let nft = nft_lines(&d)[nft_before..].to_vec();
    let added = nft
        .iter()
        .position(|l| l.contains("add element inet ferry bridges"))
        .unwrap_or_else(|| panic!("the network's elements never went in: {nft:?}"));
    assert!(
        nft[added + 1..]
            .iter()
            .any(|l| l.contains("delete element inet ferry bridges")),
        "the refused network's elements stayed: {nft:?}"
    );
    assert!(d
        .state
        .lock()
        .await
        .networks
        .values()
        .all(|n| n.name != "n1"));
    store_matches_memory(&d).await;
    assert!(
        d.kernel.links.lock().unwrap().is_empty(),
        "the half-made bridge was not removed"
    );
}

#[tokio::test]
async fn a_refused_veth_rolls_back_the_address_the_namespace_and_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(&dir);
    d.ensure_predefined().await.unwrap();
    d.create_network(net_req("n1", "10.5.0.0/24"))
        .await
        .unwrap();
    let id = d.create_sandbox(Some("web"), run_req("n1")).await.unwrap();
    fail_on(&d, "attach");
    failed_by_injection(d.start_sandbox(&id, false).await, "attach");
    {
        let st = d.state.lock().await;
        let sb = &st.sandboxes[&id];
        assert_eq!(sb.state, RunState::Created);
        assert!(sb.endpoints.iter().all(|e| e.live.is_none()));
        let n1 = st.networks.values().find(|n| n.name == "n1").unwrap();
        assert!(
            n1.pool.as_ref().unwrap().allocations().is_empty(),
            "the address stayed allocated"
        );
    }
    store_matches_memory(&d).await;
    let lines = d.kernel.lines();
    assert!(
        lines.iter().any(|l| l.starts_with("netns del")),
        "namespace not removed: {lines:?}"
    );
    assert!(d.kernel.netns.lock().unwrap().is_empty());

    // Once the kernel agrees, the same sandbox starts and gets the first address.
    *d.kernel.fail_on.lock().unwrap() = None;
    d.start_sandbox(&id, false).await.unwrap();
    // The link, then the namespace's name for `ip netns`, last.
    let lines = d.kernel.lines();
    let tail: Vec<&str> = lines[lines.len() - 2..]
        .iter()
        .map(String::as_str)
        .collect();
    assert!(
        tail[0].starts_with("attach") && tail[1].starts_with("name "),
        "{lines:?}"
    );
    assert!(d
        .kernel
        .lines()
        .iter()
        .any(|l| l.contains("eth0 10.5.0.2/24 via 10.5.0.1")));
}

#[tokio::test]
async fn a_refused_connect_leaves_the_sandbox_on_its_first_network_only() {
    let dir = tempfile::tempdir().unwrap();
    let (d, id) = web_on_n1_with_n2(&dir).await;
    fail_on(&d, "attach");
    let mut req = ConnectRequest {
        container: "web".into(),
        ..Default::default()
    };
    req.endpoint_config =
        Some(serde_json::from_str(r#"{"IPAMConfig":{"IPv4Address":"10.6.0.9"}}"#).unwrap());
    failed_by_injection(d.connect("n2", req).await, "attach");
    let st = d.state.lock().await;
    assert_eq!(st.sandboxes[&id].endpoints.len(), 1);
    let n2 = st.networks.values().find(|n| n.name == "n2").unwrap();
    assert!(
        n2.pool.as_ref().unwrap().allocations().is_empty(),
        "the static --ip stayed reserved"
    );
    drop(st);
    store_matches_memory(&d).await;
}

#[tokio::test]
async fn a_static_ip_stays_reserved_while_its_sandbox_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(&dir);
    d.ensure_predefined().await.unwrap();
    d.create_network(net_req("n1", "10.5.0.0/29"))
        .await
        .unwrap();
    let mut req = run_req("n1");
    req.networking_config = Some(
        serde_json::from_str(
            r#"{"EndpointsConfig":{"n1":{"IPAMConfig":{"IPv4Address":"10.5.0.2"}}}}"#,
        )
        .unwrap(),
    );
    let id = d.create_sandbox(Some("pinned"), req).await.unwrap();
    d.start_sandbox(&id, false).await.unwrap();
    d.on_exit(&id, ferryd::ops::ExitReport { pid: 0, code: 0 })
        .await
        .unwrap();
    // A restart rebuilds everything from the store: reload and allocate dynamically.
    let reloaded = d.stored_state().unwrap();
    let mut pool = reloaded
        .networks
        .values()
        .find(|n| n.name == "n1")
        .unwrap()
        .pool
        .clone()
        .unwrap();
    assert_eq!(pool.owner("10.5.0.2".parse().unwrap()), Some(id.as_str()));
    assert_eq!(
        pool.allocate_dynamic("other", "n1").unwrap(),
        "10.5.0.3".parse::<std::net::Ipv4Addr>().unwrap()
    );
}

fn nft_lines(d: &Daemon<Recorder>) -> Vec<String> {
    d.kernel
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("nft "))
        .collect()
}

#[tokio::test]
async fn an_attach_without_published_ports_only_adds_its_allowed_sources() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(&dir);
    d.ensure_predefined().await.unwrap();
    d.create_network(net_req("n1", "10.5.0.0/24"))
        .await
        .unwrap();
    let before = nft_lines(&d);
    assert!(
        before
            .iter()
            .any(|l| l.starts_with("nft add table inet ferry")),
        "creating the first network loads the tables: {before:?}"
    );
    let id = d.create_sandbox(Some("web"), run_req("n1")).await.unwrap();
    d.start_sandbox(&id, false).await.unwrap();
    // One transaction: the veth's anti-spoofing element (and the hook with the first).
    let after = nft_lines(&d);
    let new = &after[before.len()..];
    assert_eq!(new.len(), 1, "{new:?}");
    assert!(
        new[0].contains("add element bridge ferry sources {") && !new[0].contains("inet ferry"),
        "the attach changed more than its sources: {new:?}"
    );
}

#[tokio::test]
async fn a_refused_firewall_change_on_connect_leaves_no_veth_and_undoes_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let (d, id) = web_on_n1_with_n2(&dir).await;
    fail_on(&d, "nft add element");
    let mut req = ConnectRequest {
        container: "web".into(),
        ..Default::default()
    };
    req.endpoint_config = Some(
        serde_json::from_str(r#"{"FerryPortBindings":{"80/tcp":[{"HostPort":"48080"}]}}"#).unwrap(),
    );
    let err = d.connect("n2", req).await.unwrap_err();
    assert!(err.to_string().contains("injected failure"), "{err}");
    {
        let st = d.state.lock().await;
        assert_eq!(st.sandboxes[&id].endpoints.len(), 1);
        let n2 = st.networks.values().find(|n| n.name == "n2").unwrap();
        assert!(n2.pool.as_ref().unwrap().allocations().is_empty());
    }
    store_matches_memory(&d).await;
    // The firewall goes first, so the refused connect never asked for a veth.
    let lines = d.kernel.lines();
    let attaches: Vec<_> = lines.iter().filter(|l| l.starts_with("attach")).collect();
    assert_eq!(attaches.len(), 1, "only web's first endpoint: {lines:?}");
    assert!(attaches[0].contains("10.5.0."), "{lines:?}");
    // The kernel's firewall is not known after a failed transaction: the next change
    // loads it whole.
    *d.kernel.fail_on.lock().unwrap() = None;
    let loads = |d: &Daemon<Recorder>| {
        nft_lines(d)
            .iter()
            .filter(|l| l.starts_with("nft add table inet ferry"))
            .count()
    };
    let before = loads(&d);
    d.remove_sandbox("web", true).await.unwrap();
    assert_eq!(loads(&d), before + 1, "{:?}", nft_lines(&d));
}

// Connect and disconnect let the state lock go for their kernel work; a lock per
// sandbox keeps each sandbox's operations in order.

/// Hold every attach or deletion whose fake-kernel line contains `pat` until released.
fn hold(d: &Daemon<Recorder>, pat: &str) -> Arc<tokio::sync::Semaphore> {
    let sem = Arc::new(tokio::sync::Semaphore::new(0));
    *d.kernel.hold_on.lock().unwrap() = Some((pat.into(), sem.clone()));
    sem
}

/// Wait (at most 10 s) until the fake kernel holds a request containing `pat`.
async fn until_held(d: &Daemon<Recorder>, pat: &str) {
    let found = || {
        d.kernel
            .lines()
            .iter()
            .any(|l| l.starts_with("held ") && l.contains(pat))
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while !found() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no request with {pat} held: {:?}", d.kernel.lines()));
}

fn connect_req(sandbox: &str) -> ConnectRequest {
    ConnectRequest {
        container: sandbox.into(),
        ..Default::default()
    }
}

/// `web` and `db` running on n1, n2 empty.
async fn web_and_db(dir: &tempfile::TempDir) -> Arc<Daemon<Recorder>> {
    let (d, _) = web_on_n1_with_n2(dir).await;
    let db = d.create_sandbox(Some("db"), run_req("n1")).await.unwrap();
    d.start_sandbox(&db, false).await.unwrap();
    d
}

fn n2_allocations(st: &State) -> Vec<(String, String)> {
    let n2 = st.networks.values().find(|n| n.name == "n2").unwrap();
    n2.pool
        .as_ref()
        .unwrap()
        .allocations()
        .iter()
        .map(|(ip, owner)| (ip.to_string(), st.sandboxes[owner].name.clone()))
        .collect()
}

const BOUND: std::time::Duration = std::time::Duration::from_secs(10);

type Op = tokio::task::JoinHandle<ferryd::error::Result<()>>;

/// web's connect to n2 (it gets 10.6.0.2), started and held in the fake kernel at its
/// attach; returns the permit that lets it go on, and the connect.
async fn web_connect_held(d: &Arc<Daemon<Recorder>>) -> (Arc<tokio::sync::Semaphore>, Op) {
    let release = hold(d, "10.6.0.2/");
    let connect = tokio::spawn({
        let d = d.clone();
        async move { d.connect("n2", connect_req("web")).await }
    });
    until_held(d, "10.6.0.2/").await;
    (release, connect)
}

/// web's disconnect from n2, started.
fn disconnect_web(d: Arc<Daemon<Recorder>>) -> Op {
    tokio::spawn(async move {
        let req = DisconnectRequest {
            container: "web".into(),
            ..Default::default()
        };
        d.disconnect("n2", req).await
    })
}

/// `sandbox`'s connect to n2, which must finish (within [`BOUND`]) while another
/// sandbox's kernel work is held.
async fn connects_meanwhile(d: &Daemon<Recorder>, sandbox: &str) {
    tokio::time::timeout(BOUND, d.connect("n2", connect_req(sandbox)))
        .await
        .unwrap_or_else(|_| panic!("{sandbox}'s connect waited for another's kernel work"))
        .unwrap();
}

/// What an operation returned, once it has finished (within [`BOUND`]).
async fn outcome(op: Op) -> ferryd::error::Result<()> {
    tokio::time::timeout(BOUND, op)
        .await
        .expect("the operation did not finish")
        .expect("the operation panicked")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_waiting_on_the_kernel_holds_up_no_other_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let d = web_and_db(&dir).await;
    let (release, web) = web_connect_held(&d).await;
    // db's connect goes through while web's attach is in the kernel.
    connects_meanwhile(&d, "db").await;
    assert_eq!(
        n2_allocations(&*d.state.lock().await),
        [
            ("10.6.0.2".into(), "web".into()),
            ("10.6.0.3".into(), "db".into())
        ]
    );
    release.add_permits(1);
    outcome(web).await.unwrap();
    store_matches_memory(&d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_waits_for_the_connect_of_its_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let d = web_and_db(&dir).await;
    let (release, connect) = web_connect_held(&d).await;
    let disconnect = disconnect_web(d.clone());
    // Give the disconnect every chance to overtake; it must not.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!disconnect.is_finished(), "{:?}", d.kernel.lines());
    release.add_permits(1);
    outcome(connect).await.unwrap();
    outcome(disconnect).await.unwrap();
    let lines = d.kernel.lines();
    let attach = lines
        .iter()
        .position(|l| l.starts_with("attach") && l.contains("10.6.0.2/"))
        .expect("web's attach");
    let host_if = lines[attach].split_whitespace().nth(1).unwrap();
    let delete = lines
        .iter()
        .position(|l| *l == format!("delete {host_if}"))
        .unwrap_or_else(|| panic!("web's veth was not deleted: {lines:?}"));
    assert!(attach < delete, "{lines:?}");
    assert!(n2_allocations(&*d.state.lock().await).is_empty());
    store_matches_memory(&d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attach_refused_after_the_lock_was_let_go_takes_back_only_its_own_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let d = web_and_db(&dir).await;
    let (release, web) = web_connect_held(&d).await;
    connects_meanwhile(&d, "db").await;
    // web's attach, still held, will now be refused; db's endpoint on the same network
    // came after web's snapshot and must stay.
    fail_on(&d, "attach");
    release.add_permits(1);
    let err = outcome(web).await.unwrap_err();
    assert!(err.to_string().contains("injected failure"), "{err}");
    let st = d.state.lock().await;
    assert_eq!(n2_allocations(&st), [("10.6.0.3".into(), "db".into())]);
    let web = st.sandboxes.values().find(|s| s.name == "web").unwrap();
    assert_eq!(web.endpoints.len(), 1, "web stays on n1 only");
    drop(st);
    store_matches_memory(&d).await;
}

/// web, on n2 at 10.6.0.2, is taken off it by `free` while the fake kernel holds the
/// retirement of its veth; db's connect asking for 10.6.0.2 must wait until the old pair
/// is out of service (the same address and MAC must never be up twice on the bridge).
async fn freed_address_waits_for_retirement(free: fn(Arc<Daemon<Recorder>>) -> Op) {
    let dir = tempfile::tempdir().unwrap();
    let d = web_and_db(&dir).await;
    d.connect("n2", connect_req("web")).await.unwrap();
    let release = hold(&d, "delete fy");
    let freeing = free(d.clone());
    until_held(&d, "delete fy").await;
    let connect: Op = tokio::spawn({
        let d = d.clone();
        async move {
            let mut req = connect_req("db");
            req.endpoint_config =
                Some(serde_json::from_str(r#"{"IPAMConfig":{"IPv4Address":"10.6.0.2"}}"#).unwrap());
            d.connect("n2", req).await
        }
    });
    // Give db's connect every chance to take 10.6.0.2 while web's pair is still up.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!connect.is_finished(), "{:?}", d.kernel.lines());
    release.close();
    outcome(freeing).await.unwrap();
    outcome(connect).await.unwrap();
    let lines = d.kernel.lines();
    let retired = lines
        .iter()
        .position(|l| l.starts_with("delete fy"))
        .expect("web's veth retired");
    let again = lines
        .iter()
        .rposition(|l| l.starts_with("attach") && l.contains("10.6.0.2/"))
        .expect("db's attach");
    assert!(retired < again, "{lines:?}");
    assert_eq!(
        n2_allocations(&*d.state.lock().await),
        [("10.6.0.2".into(), "db".into())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_freed_by_a_disconnect_is_not_attached_again_before_its_veth_is_retired() {
    freed_address_waits_for_retirement(disconnect_web).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_freed_by_rm_is_not_attached_again_before_its_veth_is_retired() {
    freed_address_waits_for_retirement(|d| {
        tokio::spawn(async move { d.remove_sandbox("web", true).await })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_freed_by_an_exit_is_not_attached_again_before_its_veth_is_retired() {
    freed_address_waits_for_retirement(|d| {
        tokio::spawn(async move { d.stop_sandbox("web").await })
    })
    .await;
}

/// web running on n1 and n2 empty, `app` created on n2, and app's start held in the fake
/// kernel at its attach (app gets 10.6.0.2); returns the daemon, the permit that lets
/// the start go on, and the start.
async fn app_start_held(
    dir: &tempfile::TempDir,
) -> (Arc<Daemon<Recorder>>, Arc<tokio::sync::Semaphore>, Op) {
    let (d, _) = web_on_n1_with_n2(dir).await;
    let app = d.create_sandbox(Some("app"), run_req("n2")).await.unwrap();
    let release = hold(&d, "10.6.0.2/");
    let start = tokio::spawn({
        let d = d.clone();
        async move { d.start_sandbox(&app, false).await }
    });
    until_held(&d, "10.6.0.2/").await;
    (d, release, start)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_waiting_on_the_kernel_holds_up_no_other_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let (d, release, start) = app_start_held(&dir).await;
    connects_meanwhile(&d, "web").await;
    release.add_permits(1);
    outcome(start).await.unwrap();
    assert_eq!(
        n2_allocations(&*d.state.lock().await),
        [
            ("10.6.0.2".into(), "app".into()),
            ("10.6.0.3".into(), "web".into())
        ]
    );
    store_matches_memory(&d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_refused_after_the_lock_was_let_go_takes_back_only_its_own_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let (d, release, start) = app_start_held(&dir).await;
    connects_meanwhile(&d, "web").await;
    fail_on(&d, "attach");
    release.add_permits(1);
    let err = outcome(start).await.unwrap_err();
    assert!(err.to_string().contains("injected failure"), "{err}");
    let st = d.state.lock().await;
    assert_eq!(n2_allocations(&st), [("10.6.0.3".into(), "web".into())]);
    let app = st.sandboxes.values().find(|s| s.name == "app").unwrap();
    assert_eq!(app.state, RunState::Created);
    assert!(app.endpoints.iter().all(|e| e.live.is_none()));
    let netns = d.cfg.sandbox_netns(&app.id).display().to_string();
    drop(st);
    assert!(!d.kernel.netns.lock().unwrap().contains(&netns));
    store_matches_memory(&d).await;
}

/// (With the fake, app's process is the CLI's, pid 0, so this shows the end state, not
/// that stop reads a pid the start has recorded: that needs a real process.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_a_start_leaves_the_sandbox_stopped_and_its_network_gone() {
    let dir = tempfile::tempdir().unwrap();
    let (d, release, start) = app_start_held(&dir).await;
    let stop: Op = tokio::spawn({
        let d = d.clone();
        async move { d.stop_sandbox("app").await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!stop.is_finished(), "{:?}", d.kernel.lines());
    release.add_permits(1);
    outcome(start).await.unwrap();
    outcome(stop).await.unwrap();
    let st = d.state.lock().await;
    let app = st.sandboxes.values().find(|s| s.name == "app").unwrap();
    assert!(
        matches!(app.state, RunState::Exited { .. }),
        "{:?}",
        app.state
    );
    assert!(n2_allocations(&st).is_empty());
    drop(st);
    let lines = d.kernel.lines();
    let attach = lines
        .iter()
        .find(|l| l.starts_with("attach") && l.contains("10.6.0.2/"))
        .expect("app's attach");
    let host_if = attach.split_whitespace().nth(1).unwrap();
    assert!(
        !d.kernel.links.lock().unwrap().contains(host_if),
        "app's veth stayed: {lines:?}"
    );
    store_matches_memory(&d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connect_gives_its_address_to_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = web_and_db(&dir).await;
    fail_on(&d, "attach");
    failed_by_injection(d.connect("n2", connect_req("web")).await, "attach");
    *d.kernel.fail_on.lock().unwrap() = None;
    d.connect("n2", connect_req("db")).await.unwrap();
    assert_eq!(
        n2_allocations(&*d.state.lock().await),
        [("10.6.0.2".into(), "db".into())],
        "the refused connect moved the cursor on"
    );
    store_matches_memory(&d).await;
}

/// `system cleanup` against the periodic check: a check in flight when cleanup begins
/// (here held at its first nftables call, which the fake answers "no such table", so it
/// goes on to load the tables again) finishes before cleanup touches anything, and no
/// check runs after it. Otherwise the check puts back what cleanup just removed (ferry's
/// tables, the DOCKER-USER rule) and the stopped ferryd leaves them behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_waits_out_a_periodic_check_in_flight_and_no_check_follows_it() {
    const LIST: &str = "list chain inet ferry forward";
    let dir = tempfile::tempdir().unwrap();
    let (d, _) = web_on_n1_with_n2(&dir).await;
    let gate = hold(&d, LIST);
    let check = tokio::spawn({
        let d = d.clone();
        async move { d.check_firewall().await }
    });
    until_held(&d, LIST).await;
    let held_at = d.kernel.lines().len();
    let cleanup = tokio::spawn({
        let d = d.clone();
        async move { d.cleanup().await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let meanwhile = d.kernel.lines()[held_at..].to_vec();
    assert!(
        meanwhile.is_empty(),
        "cleanup went on beside the check: {meanwhile:?}"
    );
    gate.close();
    check.await.unwrap();
    let _ = cleanup.await.unwrap();
    let lines = nft_lines(&d);
    let removed = lines
        .iter()
        .rposition(|l| l.contains("delete table inet ferry"))
        .expect("cleanup removes ferry's tables");
    let loaded = lines
        .iter()
        .rposition(|l| l.contains("add chain inet ferry user"))
        .expect("the check loaded the tables again");
    assert!(
        loaded < removed,
        "the check loaded the tables after cleanup: {lines:?}"
    );
    let after = d.kernel.lines().len();
    d.check_firewall().await;
    let late = d.kernel.lines()[after..].to_vec();
    assert!(late.is_empty(), "a check after cleanup: {late:?}");
}

// -- when the store refuses a write (a full disk) -------------------------------------

/// What memory, the store and the kernel looked like before an operation.
struct Before {
    state: State,
    kernel_lines: usize,
}

async fn before(d: &Daemon<Recorder>) -> Before {
    Before {
        state: d.state.lock().await.clone(),
        kernel_lines: d.kernel.lines().len(),
    }
}

/// The operation failed with the store's error and changed nothing: memory is as it
/// was and as the store holds it, and the kernel was asked for nothing.
async fn refused_and_unchanged(d: &Daemon<Recorder>, b: Before, res: ferryd::error::Result<()>) {
    let err = res.expect_err("the store refused the commit");
    assert!(
        err.to_string().contains("refused by the test switch"),
        "{err}"
    );
    let st = d.state.lock().await;
    assert_eq!(st.networks, b.state.networks, "networks changed in memory");
    assert_eq!(
        st.sandboxes, b.state.sandboxes,
        "sandboxes changed in memory"
    );
    assert_eq!(st.meta, b.state.meta, "the pool cursor changed in memory");
    assert_eq!(st.plugin, b.state.plugin, "the plugin's records changed");
    assert_eq!(d.stored_state().unwrap().meta, st.meta);
    drop(st);
    store_matches_memory(d).await;
    let lines = d.kernel.lines();
    assert_eq!(
        lines.len(),
        b.kernel_lines,
        "the kernel was asked: {:?}",
        &lines[b.kernel_lines..]
    );
}

async fn web_and_a_refusing_store(
    dir: &tempfile::TempDir,
) -> (Arc<Daemon<Recorder>>, String, Arc<AtomicBool>) {
    let (d, refuse) = daemon_and_switch(dir);
    let id = web_on_n1_with_n2_in(&d).await;
    refuse.store(true, Ordering::SeqCst);
    (d, id, refuse)
}

#[tokio::test]
async fn a_connect_the_store_refuses_changes_nothing_and_frees_its_address() {
    let dir = tempfile::tempdir().unwrap();
    let (d, _, refuse) = web_and_a_refusing_store(&dir).await;
    let b = before(&d).await;
    let res = d.connect("n2", connect_req("web")).await;
    refused_and_unchanged(&d, b, res).await;
    refuse.store(false, Ordering::SeqCst);
    d.connect("n2", connect_req("web")).await.unwrap();
    let lines = d.kernel.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("attach") && l.contains(" 10.6.0.2/24")),
        "the refused connect kept n2's first address: {lines:?}"
    );
}

#[tokio::test]
async fn a_disconnect_the_store_refuses_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (d, _, _) = web_and_a_refusing_store(&dir).await;
    let b = before(&d).await;
    let res = d
        .disconnect(
            "n1",
            DisconnectRequest {
                container: "web".into(),
                force: false,
            },
        )
        .await;
    refused_and_unchanged(&d, b, res).await;
}

#[tokio::test]
async fn an_rm_the_store_refuses_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (d, _, refuse) = web_and_a_refusing_store(&dir).await;
    let b = before(&d).await;
    let res = d.remove_sandbox("web", true).await;
    refused_and_unchanged(&d, b, res).await;
    refuse.store(false, Ordering::SeqCst);
    d.remove_sandbox("web", true).await.unwrap();
    assert!(d.state.lock().await.sandboxes.is_empty());
}

#[tokio::test]
async fn a_network_create_or_remove_the_store_refuses_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (d, _, refuse) = web_and_a_refusing_store(&dir).await;
    let b = before(&d).await;
    let res = d.create_network(net_req("n3", "10.7.0.0/24")).await;
    refused_and_unchanged(&d, b, res.map(drop)).await;
    // Without a subnet, ferry picks one and moves its pool cursor (the meta record).
    let b = before(&d).await;
    let res = d
        .create_network(NetworkCreateRequest {
            name: "n4".into(),
            ..Default::default()
        })
        .await;
    refused_and_unchanged(&d, b, res.map(drop)).await;
    let b = before(&d).await;
    let res = d.remove_network("n2").await;
    refused_and_unchanged(&d, b, res).await;
    refuse.store(false, Ordering::SeqCst);
    d.remove_network("n2").await.unwrap();
}

#[tokio::test]
async fn a_create_or_start_the_store_refuses_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (d, _, refuse) = web_and_a_refusing_store(&dir).await;
    let b = before(&d).await;
    let mut req = run_req("n1");
    req.networking_config = Some(
        serde_json::from_str(
            r#"{"EndpointsConfig":{"n1":{"IPAMConfig":{"IPv4Address":"10.5.0.9"}}}}"#,
        )
        .unwrap(),
    );
    let res = d.create_sandbox(Some("api"), req).await;
    refused_and_unchanged(&d, b, res.map(drop)).await;
    refuse.store(false, Ordering::SeqCst);
    let api = d.create_sandbox(Some("api"), run_req("n1")).await.unwrap();
    refuse.store(true, Ordering::SeqCst);
    let b = before(&d).await;
    let res = d.start_sandbox(&api, false).await;
    refused_and_unchanged(&d, b, res).await;
}

#[tokio::test]
async fn an_exit_the_store_refuses_still_takes_the_network_down() {
    // The process is gone whatever the store says: memory records it and the veth goes,
    // or its freed address would stay up on the bridge; reconcile repairs the store.
    let dir = tempfile::tempdir().unwrap();
    let (d, id, _) = web_and_a_refusing_store(&dir).await;
    let b = before(&d).await;
    d.on_exit(&id, ferryd::ops::ExitReport { pid: 0, code: 3 })
        .await
        .unwrap();
    let st = d.state.lock().await;
    assert_eq!(st.sandboxes[&id].state, RunState::Exited { code: 3 });
    drop(st);
    let lines = d.kernel.lines();
    let new = &lines[b.kernel_lines..];
    assert!(
        new.iter().any(|l| l.starts_with("delete ")),
        "the veth stayed: {new:?}"
    );
}

#[tokio::test]
async fn an_exit_the_store_refuses_still_takes_its_published_port_down() {
    // The firewall and the DNS follow memory: a DNAT to the freed address must go even
    // though the store still holds the old endpoint.
    let dir = tempfile::tempdir().unwrap();
    let (d, id, refuse) = web_and_a_refusing_store(&dir).await;
    refuse.store(false, Ordering::SeqCst);
    let mut req = connect_req("web");
    req.endpoint_config = Some(
        serde_json::from_str(r#"{"FerryPortBindings":{"80/tcp":[{"HostPort":"48080"}]}}"#).unwrap(),
    );
    d.connect("n2", req).await.unwrap();
    refuse.store(true, Ordering::SeqCst);
    let before = nft_lines(&d).len();
    d.on_exit(&id, ferryd::ops::ExitReport { pid: 0, code: 0 })
        .await
        .unwrap();
    let lines = nft_lines(&d);
    let after = &lines[before..];
    assert!(
        after
            .iter()
            .any(|l| l.contains("delete element") && l.contains("48080")),
        "the published port's DNAT stayed: {after:?}"
    );
}

/// The start's kernel steps as the fake recorded them, typed: the namespace, the first
/// endpoint's link, then the second's fails (at its default route); the executor takes
/// back what was made in reverse (the first link, then the namespace) and never names
/// the namespace.
#[tokio::test]
async fn a_start_whose_second_link_fails_takes_back_the_first_and_the_namespace_in_reverse() {
    use ferry_kernel::fake::Call;
    use ferry_kernel::AttachStep;
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(&dir);
    d.ensure_predefined().await.unwrap();
    // b1 is joined first; a2 sorts first, so its endpoint carries the default route.
    for (n, s) in [("b1", "10.5.0.0/24"), ("a2", "10.6.0.0/24")] {
        d.create_network(net_req(n, s)).await.unwrap();
    }
    let id = d.create_sandbox(Some("two"), run_req("b1")).await.unwrap();
    let req = ConnectRequest {
        container: id.clone(),
        ..Default::default()
    };
    d.connect("a2", req).await.unwrap();
    let before = d.kernel.calls().len();
    *d.kernel.fault_at.lock().unwrap() = Some(AttachStep::Route);
    assert!(d.start_sandbox(&id, false).await.is_err());
    let calls: Vec<Call> = d.kernel.calls()[before..]
        .iter()
        .filter(|c| !matches!(c, Call::Nft(_) | Call::Sysctl { .. }))
        .cloned()
        .collect();
    let netns = d.cfg.sandbox_netns(&id);
    let [Call::NetnsAdd(made), Call::File(f1), Call::File(f2), Call::File(f3), Call::Attach(first), Call::Delete(gone), Call::NetnsDel(removed)] =
        calls.as_slice()
    else {
        panic!("not namespace, files, link, undo link, undo namespace: {calls:?}");
    };
    assert_eq!((made, removed), (&netns, &netns));
    let (hosts, resolv, hostname) = d.sandbox_files(&id);
    assert_eq!([f1, f2, f3], [&resolv, &hostname, &hosts]);
    assert_eq!(first.host_if(), Some(gone.as_str()));
    assert_eq!(
        first.default_via, None,
        "b1's endpoint does not carry the route"
    );
    assert!(
        !d.kernel
            .calls()
            .iter()
            .any(|c| matches!(c, Call::NameNetns { .. })),
        "the namespace was named"
    );
    let st = d.state.lock().await;
    assert!(!st.sandboxes[&id].is_running());
}

/// A create is judged before the kernel is asked anything: with the host's routes
/// unreadable, a bad request is still the client's mistake (4xx, naming it), a create
/// with a subnet does not need them, and only picking a subnet from the default pools
/// (which avoids the host's routes) fails on them. A 500 for a bad name once came from a
/// route listing that failed beside it.
#[tokio::test]
async fn a_create_is_judged_before_the_kernel_is_asked_and_reads_routes_only_to_pick_a_subnet() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(&dir);
    d.ensure_predefined().await.unwrap();
    fail_on(&d, "list routes");
    let named = |name: &str| NetworkCreateRequest {
        name: name.into(),
        ..Default::default()
    };
    let err = d.create_network(named("bad name")).await.unwrap_err();
    assert_eq!(err.status(), 400, "{err}");
    assert!(err.to_string().contains("bad name"), "{err}");
    d.create_network(net_req("given", "10.5.0.0/24"))
        .await
        .unwrap();
    failed_by_injection(d.create_network(named("picked")).await, "list routes");
    assert!(!d
        .state
        .lock()
        .await
        .networks
        .values()
        .any(|n| n.name == "picked"));
    *d.kernel.fail_on.lock().unwrap() = None;
    d.create_network(named("picked")).await.unwrap();
    store_matches_memory(&d).await;
}
