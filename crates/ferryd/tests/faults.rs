//! A fault at each step of an attach (`FERRY_FAULT=attach:STEP`, see ferry-kernel's
//! fault.rs), against the recording fake: the start or connect fails naming the step,
//! and memory, the store, the links and the namespaces are as they were; the address it
//! took goes to the next attach. tests/faults.rs shows the same in a real kernel.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;
use common::net_req;

use std::collections::BTreeSet;
use std::sync::Arc;

use ferry_core::docker::container::ContainerCreateRequest;
use ferry_core::docker::network::ConnectRequest;
use ferry_kernel::fake::Recorder;
use ferry_kernel::AttachStep;
use ferryd::state::State;
use ferryd::Daemon;

/// A sandbox on `net` publishing 80/tcp on host port `port`.
fn publishing(net: &str, port: u16) -> ContainerCreateRequest {
    serde_json::from_str(&format!(
        r#"{{"Cmd":["true"],"HostConfig":{{"NetworkMode":"{net}",
            "PortBindings":{{"80/tcp":[{{"HostPort":"{port}"}}]}}}}}}"#
    ))
    .unwrap()
}

/// Networks n1 (10.5.0.0/24) and n2 (10.6.0.0/24), `web` running on n1.
async fn web_on_n1(dir: &tempfile::TempDir) -> Arc<Daemon<Recorder>> {
    let d = common::fake_daemon(dir).await;
    d.create_network(net_req("n1", "10.5.0.0/24"))
        .await
        .unwrap();
    d.create_network(net_req("n2", "10.6.0.0/24"))
        .await
        .unwrap();
    let id = d
        .create_sandbox(Some("web"), publishing("n1", 48080))
        .await
        .unwrap();
    d.start_sandbox(&id, false).await.unwrap();
    d
}

fn arm(d: &Daemon<Recorder>, step: Option<AttachStep>) {
    *d.kernel.fault_at.lock().unwrap() = step;
}

/// What an attach may change: memory, the kernel's links and namespaces.
struct World {
    state: State,
    links: BTreeSet<String>,
    netns: BTreeSet<String>,
}

async fn world(d: &Daemon<Recorder>) -> World {
    World {
        state: d.state.lock().await.clone(),
        links: d.kernel.links.lock().unwrap().clone(),
        netns: d.kernel.netns.lock().unwrap().clone(),
    }
}

/// Failed naming `step`, and nothing changed: memory as before and as the store holds it.
async fn failed_at_and_unchanged(
    d: &Daemon<Recorder>,
    step: AttachStep,
    before: World,
    res: ferryd::error::Result<()>,
) {
    let err = res.expect_err("the armed step must fail the attach");
    assert!(
        err.to_string().contains(&format!("attach step {step}:")),
        "failed, but not naming the step {step}: {err}"
    );
    let after = world(d).await;
    assert_eq!(after.state.networks, before.state.networks, "{step}");
    assert_eq!(after.state.sandboxes, before.state.sandboxes, "{step}");
    assert_eq!(
        after.state.meta, before.state.meta,
        "{step}: the pool cursor"
    );
    assert_eq!(after.links, before.links, "{step}: links");
    assert_eq!(after.netns, before.netns, "{step}: namespaces");
    let stored = d.stored_state().unwrap();
    assert_eq!(stored.networks, after.state.networks, "{step}: store");
    assert_eq!(stored.sandboxes, after.state.sandboxes, "{step}: store");
}

fn attached_at(d: &Daemon<Recorder>, addr: &str) -> bool {
    d.kernel
        .lines()
        .iter()
        .any(|l| l.starts_with("attach") && l.contains(&format!(" {addr}")))
}

#[tokio::test]
async fn a_fault_at_each_step_of_a_start_names_it_and_changes_nothing() {
    for step in AttachStep::ALL {
        let dir = tempfile::tempdir().unwrap();
        let d = web_on_n1(&dir).await;
        let id = d
            .create_sandbox(Some("app"), publishing("n2", 48081))
            .await
            .unwrap();
        let before = world(&d).await;
        arm(&d, Some(step));
        let res = d.start_sandbox(&id, false).await;
        failed_at_and_unchanged(&d, step, before, res).await;
        arm(&d, None);
        d.start_sandbox(&id, false).await.unwrap();
        assert!(
            attached_at(&d, "10.6.0.2/24 via 10.6.0.1"),
            "{step}: the failed start kept n2's first address: {:?}",
            d.kernel.lines()
        );
    }
}

#[tokio::test]
async fn a_fault_at_each_step_of_a_connect_names_it_and_changes_nothing() {
    for step in AttachStep::ALL {
        let dir = tempfile::tempdir().unwrap();
        let d = web_on_n1(&dir).await;
        let req = || ConnectRequest {
            container: "web".into(),
            endpoint_config: Some(
                serde_json::from_str(r#"{"FerryPortBindings":{"80/tcp":[{"HostPort":"48082"}]}}"#)
                    .unwrap(),
            ),
        };
        let before = world(&d).await;
        arm(&d, Some(step));
        let res = d.connect("n2", req()).await;
        if step == AttachStep::Route {
            // web's default route is on n1: this attach has no route step to fail.
            res.unwrap();
            continue;
        }
        failed_at_and_unchanged(&d, step, before, res).await;
        arm(&d, None);
        d.connect("n2", req()).await.unwrap();
        assert!(
            attached_at(&d, "10.6.0.2/24"),
            "{step}: the failed connect kept n2's first address: {:?}",
            d.kernel.lines()
        );
    }
}
