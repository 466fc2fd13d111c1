use super::*;
use crate::filters::parse;
use crate::validate::predefined_networks;

fn nets() -> Vec<Network> {
    let mut nets = predefined_networks(
        ["1".repeat(64), "2".repeat(64), "3".repeat(64)],
        "2026-01-01T00:00:00Z",
        "172.17.0.1/16".parse().unwrap(),
    );
    let mut user = nets[0].clone();
    user.id = "4".repeat(64);
    user.name = "mynet".into();
    user.predefined = false;
    user.labels.insert("a".into(), "b".into());
    user.created = "2026-01-02T00:00:00Z".into();
    nets.push(user);
    nets
}

fn names(f: &str, usage: NetworkUse) -> Result<Vec<String>, CoreError> {
    let f = parse(Some(f)).unwrap();
    check_list(&f)?;
    let mut out = vec![];
    for n in nets() {
        if network_matches(&n, &f, usage)? {
            out.push(n.name);
        }
    }
    Ok(out)
}

#[test]
fn list_filters_match_as_dockerd_matches_them() {
    let u = NetworkUse::Unused;
    assert_eq!(
        names(r#"{"driver":{"bridge":true}}"#, u).unwrap(),
        ["bridge", "mynet"]
    );
    assert_eq!(
        names(r#"{"name":{"ne":true}}"#, u).unwrap(),
        ["none", "mynet"]
    );
    assert_eq!(names(r#"{"name":{"^my":true}}"#, u).unwrap(), ["mynet"]);
    assert_eq!(
        names(r#"{"label":{"a=b":true},"name":{"net":true}}"#, u).unwrap(),
        ["mynet"]
    );
    assert_eq!(names(r#"{"type":{"custom":true}}"#, u).unwrap(), ["mynet"]);
    assert_eq!(names(r#"{"id":{"4444":true}}"#, u).unwrap(), ["mynet"]);
}

#[test]
fn dangling_never_counts_the_predefined_networks() {
    assert_eq!(
        names(r#"{"dangling":{"true":true}}"#, NetworkUse::Unused).unwrap(),
        ["mynet"]
    );
    assert!(names(r#"{"dangling":{"1":true}}"#, NetworkUse::InUse)
        .unwrap()
        .is_empty());
    assert_eq!(
        names(r#"{"dangling":{"false":true}}"#, NetworkUse::Unused).unwrap(),
        ["bridge", "host", "none"]
    );
}

#[test]
fn unknown_keys_and_values_are_refused_with_dockerds_messages() {
    let err = |f| names(f, NetworkUse::Unused).unwrap_err().to_string();
    assert_eq!(err(r#"{"bogus":{"x":true}}"#), "Invalid filter 'bogus'");
    assert_eq!(
        err(r#"{"type":{"nosuch":true}}"#),
        "invalid filter: 'type'='nosuch'"
    );
    assert!(err(r#"{"dangling":{"maybe":true}}"#).contains("invalid value for filter 'dangling'"));
    assert!(parse(Some("{nope")).is_err());
}
