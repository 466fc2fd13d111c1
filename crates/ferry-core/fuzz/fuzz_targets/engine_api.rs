//! Engine API request bodies, as ferryd decodes them, then ferry-core's checks and plans:
//! any bytes must give a value or an error, never a panic. The first byte picks the
//! request; the rest is its JSON body.
//!
//! - `POST /networks/create`: a body that validates gives a network whose store record
//!   reads back as the same network.
//! - `POST /networks/{id}/connect`: a body that is accepted plans a connect on a fixed
//!   state, and a refused plan leaves that state as it was.
//! - `POST /containers/create`: the published ports of its HostConfig are decided, and
//!   no two bindings decided claim the same packets.
#![no_main]

use ferry_core::docker::container::ContainerCreateRequest;
use ferry_core::docker::network::{ConnectRequest, NetworkCreateRequest};
use ferry_core::model::{DnsConf, Network, NetworkMode, RunState, Sandbox};
use ferry_core::plan::attach::Live;
use ferry_core::plan::connect::{plan_connect, Asked};
use ferry_core::state::State;
use ferry_core::validate::{network_from_request, CreateContext};
use libfuzzer_sys::fuzz_target;

fn existing() -> Network {
    let req: NetworkCreateRequest = serde_json::from_str(
        r#"{"Name":"front","IPAM":{"Config":[{"Subnet":"10.60.0.0/24"}]}}"#,
    )
    .expect("fixed request");
    network_from_request(&req, &ctx(&[])).expect("fixed network").network
}

fn ctx(existing: &[Network]) -> CreateContext<'_> {
    CreateContext {
        existing,
        host_routes: &[],
        pool_cursor: None,
        id: "ab".repeat(32),
        created: "t".into(),
    }
}

fn network_create(body: &[u8]) {
    let Ok(req) = serde_json::from_slice::<NetworkCreateRequest>(body) else {
        return;
    };
    let front = existing();
    if let Ok(made) = network_from_request(&req, &ctx(std::slice::from_ref(&front))) {
        let stored = serde_json::to_vec(&made.network).expect("a network serialises");
        let back: Network = serde_json::from_slice(&stored).expect("its record reads back");
        assert_eq!(back, made.network, "store round trip");
    }
}

fn connect(body: &[u8]) {
    let Ok(req) = serde_json::from_slice::<ConnectRequest>(body) else {
        return;
    };
    let Ok(asked) = Asked::from_request(req.endpoint_config.as_ref()) else {
        return;
    };
    let mut st = State::default();
    let net = existing();
    let net_id = net.id.clone();
    st.networks.insert(net_id.clone(), net);
    let sb = Sandbox {
        id: "a".into(),
        name: "a".into(),
        created: String::new(),
        created_unix: 0,
        hostname: "a".into(),
        cmd: vec![],
        network_mode: NetworkMode::Joined("default".into()),
        auto_remove: false,
        dns: DnsConf::default(),
        state: RunState::Running {
            pid: 1,
            start_time: 1,
        },
        started_at: None,
        finished_at: None,
        endpoints: vec![],
        labels: Default::default(),
    };
    st.sandboxes.insert("a".into(), sb);
    let before = st.clone();
    let live = Live {
        netns: "/run/x".into(),
        endpoint_id: "e".repeat(64),
    };
    match plan_connect(&mut st, "a", &net_id, asked, Some(live)) {
        Ok(plan) => assert!(plan.attach.is_some(), "a running sandbox gets a link"),
        // The planners edit in place; the executor puts the saved records back. A refusal
        // by dockerd's rules (checked first) must not have edited anything.
        Err(_) if st.sandboxes["a"].endpoints.is_empty() => {
            assert_eq!(st.networks, before.networks, "a refused connect took an address")
        }
        Err(_) => {}
    }
}

fn container_create(body: &[u8]) {
    let Ok(req) = serde_json::from_slice::<ContainerCreateRequest>(body) else {
        return;
    };
    let Some(b) = req.host_config.as_ref().and_then(|h| h.port_bindings.as_ref()) else {
        return;
    };
    let Ok(maps) = ferry_core::ports::from_bindings(b) else {
        return;
    };
    if let Ok(decided) = ferry_core::ports::decide(&maps, &[]) {
        for (i, a) in decided.iter().enumerate() {
            for b in &decided[i + 1..] {
                assert!(!a.collides(b), "two bindings decided for one packet: {a:?} {b:?}");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((which, body)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => network_create(body),
        1 => connect(body),
        _ => container_create(body),
    }
});
