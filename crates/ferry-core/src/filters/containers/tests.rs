use super::*;
use crate::filters::parse;
use crate::model::{mac_for, Endpoint, LiveEndpoint};
use crate::ports::{decide, parse_publish};
use crate::validate::predefined_networks;
use crate::IfName;

fn sandbox(name: &str, created: &str, state: RunState, net: &Network, publish: &[&str]) -> Sandbox {
    let ip = "172.17.0.2".parse().unwrap();
    let maps: Vec<_> = publish.iter().map(|p| parse_publish(p).unwrap()).collect();
    let live = matches!(state, RunState::Running { .. }).then(|| LiveEndpoint {
        id: "c".repeat(64),
        ip,
        prefix_len: 16,
        gateway: None,
        mac: mac_for(ip),
        host_if: Some(IfName::new("fyx").unwrap()),
        ifname: IfName::new("eth0").unwrap(),
        default_route: true,
        published: decide(&maps, &[]).unwrap(),
        way_out: Default::default(),
    });
    Sandbox {
        id: format!("{name:0<64}"),
        name: name.into(),
        created: created.into(),
        created_unix: 0,
        hostname: name.into(),
        cmd: vec![],
        network_mode: net.name.clone().into(),
        auto_remove: false,
        dns: Default::default(),
        state,
        started_at: None,
        finished_at: None,
        labels: Default::default(),
        endpoints: vec![Endpoint {
            network_id: net.id.clone(),
            static_ip: None,
            aliases: vec![],
            ports: maps,
            membership: Default::default(),
            live,
        }],
    }
}

fn world() -> (Vec<Network>, Vec<Sandbox>) {
    let nets = predefined_networks(
        ["1".repeat(64), "2".repeat(64), "3".repeat(64)],
        "t",
        "172.17.0.1/16".parse().unwrap(),
    );
    let run = RunState::Running {
        pid: 1,
        start_time: 1,
    };
    let sbs = vec![
        sandbox("web2", "2026-01-04", run.clone(), &nets[0], &[]),
        sandbox(
            "db",
            "2026-01-03",
            RunState::Exited { code: 3 },
            &nets[0],
            &[],
        ),
        sandbox("web", "2026-01-02", run, &nets[0], &["8080:80"]),
        sandbox("new", "2026-01-01", RunState::Created, &nets[0], &[]),
    ];
    (nets, sbs)
}

fn names(f: &str, all: bool, limit: i64) -> Result<Vec<String>, CoreError> {
    let (nets, sbs) = world();
    let created_of = |r: &str| {
        sbs.iter()
            .find(|s| s.name == r)
            .map(|s| s.created.clone())
            .ok_or_else(|| CoreError::NoSuchContainer(r.into()))
    };
    let q = PsQuery::new(parse(Some(f))?, all, limit, created_of)?;
    let listed = sbs
        .iter()
        .map(|s| Listed {
            sandbox: s,
            networks: vec![&nets[0]],
        })
        .collect();
    Ok(q.select(listed)
        .into_iter()
        .map(|l| l.sandbox.name.clone())
        .collect())
}

#[test]
fn name_matches_as_a_regular_expression_with_or_without_the_slash() {
    assert_eq!(
        names(r#"{"name":{"web":true}}"#, false, 0).unwrap(),
        ["web2", "web"]
    );
    assert_eq!(
        names(r#"{"name":{"^web$":true}}"#, false, 0).unwrap(),
        ["web"]
    );
    assert_eq!(
        names(r#"{"name":{"^/web$":true}}"#, false, 0).unwrap(),
        ["web"]
    );
    assert_eq!(names(r#"{"id":{"^db":true}}"#, true, 0).unwrap(), ["db"]);
}

#[test]
fn stopped_sandboxes_show_with_all_a_limit_or_a_status_filter() {
    assert_eq!(names("", false, 0).unwrap(), ["web2", "web"]);
    assert_eq!(names("", true, 0).unwrap(), ["web2", "db", "web", "new"]);
    assert_eq!(names("", false, 2).unwrap(), ["web2", "db"]);
    assert_eq!(
        names(r#"{"status":{"exited":true,"created":true}}"#, false, 0).unwrap(),
        ["db", "new"]
    );
    assert_eq!(names(r#"{"exited":{"3":true}}"#, true, 0).unwrap(), ["db"]);
}

#[test]
fn network_ports_and_creation_order_select_sandboxes() {
    assert_eq!(
        names(r#"{"network":{"bridge":true}}"#, false, 0).unwrap(),
        ["web2", "web"]
    );
    assert_eq!(
        names(r#"{"network":{"111":true}}"#, false, 0).unwrap(),
        ["web2", "web"]
    );
    assert!(names(r#"{"network":{"host":true}}"#, false, 0)
        .unwrap()
        .is_empty());
    assert_eq!(
        names(r#"{"publish":{"8080":true}}"#, false, 0).unwrap(),
        ["web"]
    );
    assert_eq!(
        names(r#"{"expose":{"80/tcp":true}}"#, false, 0).unwrap(),
        ["web"]
    );
    assert!(names(r#"{"publish":{"80/udp":true}}"#, false, 0)
        .unwrap()
        .is_empty());
    assert_eq!(
        names(r#"{"before":{"db":true}}"#, true, 0).unwrap(),
        ["web", "new"]
    );
    assert_eq!(
        names(r#"{"since":{"db":true}}"#, true, 0).unwrap(),
        ["web2"]
    );
    assert!(names(r#"{"label":{"a":true}}"#, true, 0)
        .unwrap()
        .is_empty());
    assert!(names(r#"{"ancestor":{"busybox":true}}"#, true, 0)
        .unwrap()
        .is_empty());
}

#[test]
fn unknown_keys_and_bad_values_are_refused() {
    let err = |f| names(f, false, 0).unwrap_err();
    assert_eq!(
        err(r#"{"colour":{"red":true}}"#).to_string(),
        "Invalid filter 'colour'"
    );
    assert_eq!(
        err(r#"{"status":{"sleeping":true}}"#).to_string(),
        "Invalid filter 'status=sleeping'"
    );
    assert_eq!(
        err(r#"{"exited":{"x":true}}"#).to_string(),
        r#"strconv.Atoi: parsing "x": invalid syntax"#
    );
    assert_eq!(
        err(r#"{"health":{"sick":true}}"#).to_string(),
        "Unrecognised filter value for health: sick"
    );
    assert_eq!(
        err(r#"{"publish":{"http":true}}"#).to_string(),
        "Invalid filter 'publish=http'"
    );
    assert!(matches!(
        err(r#"{"before":{"ghost":true}}"#),
        CoreError::NoSuchContainer(_)
    ));
}
