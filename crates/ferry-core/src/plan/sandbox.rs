//! Sandboxes as plans: create (the record, its static address reserved) and start (every
//! endpoint goes live: addresses, links, published ports, the run state).

use std::net::IpAddr;

use super::attach::{cursor_of, default_route_network, plan_attach, published_of, Live};
use crate::model::{RunState, Sandbox};
use crate::ports::Published;
use crate::state::{Key, State};
use crate::wiring::{AttachSpec, KernelStep, KernelUndo};
use crate::CoreError;

/// The records a create of `sb` on `net_id` edits.
pub fn create_keys(sb_id: &str, net_id: &str) -> Vec<Key> {
    vec![Key::Net(net_id.to_string()), Key::Sbx(sb_id.to_string())]
}

/// Plan the create of a sandbox already checked against dockerd's rules: its record in,
/// the static address of its endpoint on `net_id` (if it asked for one) reserved.
pub fn plan_create(st: &mut State, sb: Sandbox, net_id: &str) -> Result<Vec<Key>, CoreError> {
    if let Some(other) = st.sandboxes.values().find(|s| s.name == sb.name) {
        return Err(CoreError::ContainerNameInUse {
            name: sb.name,
            id: other.id.clone(),
        });
    }
    let static_ip = sb.endpoint(net_id).and_then(|e| e.static_ip);
    if let Some(ip) = static_ip {
        st.networks
            .get_mut(net_id)
            .and_then(|n| n.pool.as_mut())
            .ok_or_else(|| CoreError::Invalid(format!("network {net_id} has no subnet")))?
            .allocate_static(ip, &sb.id)?;
    }
    let keys = create_keys(&sb.id, net_id);
    st.sandboxes.insert(sb.id.clone(), sb);
    Ok(keys)
}

/// A sandbox's start, decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartPlan {
    pub keys: Vec<Key>,
    /// One link per endpoint, in the sandbox's endpoint order.
    pub attach: Vec<AttachSpec>,
    /// The host ports its endpoints take: no host process may hold one.
    pub published: Vec<Published>,
    /// Each network's pool cursor before the plan, for an undo after other operations.
    pub cursors: Vec<(String, Option<IpAddr>)>,
}

/// The records a start of `sb_id` edits: each of its networks, and the sandbox.
pub fn start_keys(st: &State, sb_id: &str) -> Vec<Key> {
    let mut keys: Vec<Key> = st
        .sandboxes
        .get(sb_id)
        .map(|sb| {
            sb.endpoints
                .iter()
                .map(|e| Key::Net(e.network_id.clone()))
                .collect()
        })
        .unwrap_or_default();
    keys.push(Key::Sbx(sb_id.to_string()));
    keys
}

/// Plan a sandbox's start in namespace `netns`: each endpoint goes live (its endpoint
/// ID from `endpoint_id`), and the sandbox is running, its pid not known yet (0).
/// `started_at` is the start's time, as Docker shows it.
pub fn plan_start(
    st: &mut State,
    sb_id: &str,
    netns: &std::path::Path,
    mut endpoint_id: impl FnMut() -> String,
    started_at: String,
) -> Result<StartPlan, CoreError> {
    let sb = st
        .sandboxes
        .get(sb_id)
        .ok_or_else(|| CoreError::NoSuchContainer(sb_id.to_string()))?;
    let net_ids: Vec<String> = sb.endpoints.iter().map(|e| e.network_id.clone()).collect();
    let keys = start_keys(st, sb_id);
    let cursors = net_ids
        .iter()
        .map(|n| (n.clone(), cursor_of(st, n)))
        .collect();
    let mut attach = vec![];
    for n in &net_ids {
        let at = Live {
            netns: netns.to_path_buf(),
            endpoint_id: endpoint_id(),
        };
        attach.push(plan_attach(st, sb_id, n, at)?);
    }
    // An endpoint attached later may have taken the default route from an earlier one:
    // only the endpoint holding it at the end sets it in the kernel.
    let holder = default_route_network(st, sb_id);
    for (spec, n) in attach.iter_mut().zip(&net_ids) {
        if holder.as_deref() != Some(n.as_str()) {
            spec.default_via = None;
        }
    }
    if let Some(sb) = st.sandboxes.get_mut(sb_id) {
        sb.state = RunState::Running {
            pid: 0,
            start_time: 0,
        };
        sb.started_at = Some(started_at);
        sb.finished_at = None;
    }
    Ok(StartPlan {
        keys,
        attach,
        published: published_of(st, sb_id),
        cursors,
    })
}

/// A start's kernel steps, in order: for a sandbox with a namespace of its own, the
/// namespace at `netns`, its files, each endpoint's link, then the namespace's name
/// `netns_name` (named last: `ip netns` never shows a half-made sandbox); for one in
/// ferryd's namespace (host mode, no endpoints), nothing.
pub fn start_steps(
    sb: &Sandbox,
    netns: &std::path::Path,
    netns_name: std::path::PathBuf,
    attach: &[AttachSpec],
) -> Vec<KernelStep> {
    let own = sb.network_mode.own_netns();
    let mut steps = vec![];
    if own {
        steps.push(KernelStep::CreateNetns(netns.to_path_buf()));
        steps.push(KernelStep::SandboxFiles);
    }
    steps.extend(attach.iter().cloned().map(KernelStep::Attach));
    if own {
        steps.push(KernelStep::NameNetns {
            link: netns_name,
            target: netns.to_path_buf(),
        });
    }
    steps
}

/// A stop's teardown, in order: the endpoints' links (`links`, their host ends), then
/// the sandbox's own namespace and its name, if it has one.
pub fn stop_teardown(
    sb: &Sandbox,
    netns: std::path::PathBuf,
    netns_name: std::path::PathBuf,
    links: Vec<String>,
) -> Vec<KernelUndo> {
    let mut undo: Vec<KernelUndo> = links.into_iter().map(KernelUndo::DetachLink).collect();
    if sb.network_mode.own_netns() {
        undo.push(KernelUndo::RemoveNetns(netns));
        undo.push(KernelUndo::Unname(netns_name));
    }
    undo
}
