//! Docker's list filters: the `filters` query parameter is a JSON object mapping a key
//! to a set of values (`{"driver":{"bridge":true}}`); values of one key are OR-ed, keys
//! are AND-ed.

use std::collections::BTreeMap;

use crate::model::Network;
use crate::CoreError;

pub type Filters = BTreeMap<String, Vec<String>>;

pub fn parse(json: Option<&str>) -> Result<Filters, CoreError> {
    let Some(s) = json.filter(|s| !s.is_empty()) else {
        return Ok(Filters::new());
    };
    let v: serde_json::Value = serde_json::from_str(s)
        .map_err(|e| CoreError::Invalid(format!("invalid filters {s}: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| CoreError::Invalid(format!("invalid filters {s}: not an object")))?;
    let mut out = Filters::new();
    for (k, vals) in obj {
        let vals: Vec<String> = match vals {
            serde_json::Value::Object(m) => m.keys().cloned().collect(),
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect(),
            _ => return Err(CoreError::Invalid(format!("invalid filter {k}"))),
        };
        out.insert(k.clone(), vals);
    }
    Ok(out)
}

fn label_matches(labels: &BTreeMap<String, String>, want: &str) -> bool {
    match want.split_once('=') {
        Some((k, v)) => labels.get(k).map(|x| x == v).unwrap_or(false),
        None => labels.contains_key(want),
    }
}

/// Does `net` pass every filter? `in_use` tells whether sandboxes are attached (for
/// `dangling`, which dockerd judges by the list objects' empty Containers: see
/// docker-protocols B4; ferry uses the real usage instead).
pub fn network_matches(net: &Network, f: &Filters, in_use: bool) -> Result<bool, CoreError> {
    for (key, vals) in f {
        let any = |pred: &dyn Fn(&str) -> bool| vals.iter().any(|v| pred(v));
        let ok = match key.as_str() {
            "driver" => any(&|v| v == net.driver.as_str()),
            "name" => any(&|v| net.name.contains(v)),
            "id" => any(&|v| net.id.starts_with(v)),
            "label" => vals.iter().all(|v| label_matches(&net.labels, v)),
            "scope" => any(&|v| v == "local"),
            "type" => any(&|v| (v == "builtin") == net.predefined),
            "dangling" => any(&|v| (v == "true" || v == "1") != in_use),
            other => return Err(CoreError::Invalid(format!("invalid filter '{other}'"))),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::predefined_networks;

    #[test]
    fn filters_by_driver_name_and_label() {
        let mut nets = predefined_networks(
            ["1".repeat(64), "2".repeat(64), "3".repeat(64)],
            "t",
            "172.17.0.1/16".parse().unwrap(),
        );
        nets[0].labels.insert("a".into(), "b".into());
        let f = parse(Some(r#"{"driver":{"bridge":true}}"#)).unwrap();
        let names: Vec<_> = nets
            .iter()
            .filter(|n| network_matches(n, &f, false).unwrap())
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(names, ["bridge"]);
        let f = parse(Some(r#"{"label":{"a=b":true},"name":{"bri":true}}"#)).unwrap();
        assert!(network_matches(&nets[0], &f, false).unwrap());
        let f = parse(Some(r#"{"label":{"a=c":true}}"#)).unwrap();
        assert!(!network_matches(&nets[0], &f, false).unwrap());
        assert!(parse(Some("{nope")).is_err());
        assert!(network_matches(
            &nets[0],
            &parse(Some(r#"{"bogus":{"x":true}}"#)).unwrap(),
            false
        )
        .is_err());
    }
}
