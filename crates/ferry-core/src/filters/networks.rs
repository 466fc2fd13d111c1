//! `GET /networks?filters=` and `POST /networks/prune?filters=`, as dockerd filters
//! them (moby `daemon/network/filter.go`, `daemon/prune.go`): `name` and `id` by
//! `Match`, `driver` and `scope` exactly, `label` by `MatchKVList`, `type` builtin or
//! custom, `dangling` counting the predefined networks as in use; prune takes
//! `label`, `label!` and `until`.

use super::{invalid, labels_match, matches, validate, Filters};
use crate::model::Network;
use crate::CoreError;

const LIST_KEYS: &[&str] = &["dangling", "driver", "id", "label", "name", "scope", "type"];
const PRUNE_KEYS: &[&str] = &["label", "label!", "until"];

/// Whether sandboxes use a network, for `dangling`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkUse {
    InUse,
    Unused,
}

fn dangling(f: &Filters) -> Result<Option<bool>, CoreError> {
    let Some(vals) = f.get("dangling") else {
        return Ok(None);
    };
    match vals.as_slice() {
        [v] => match v.as_str() {
            "1" | "true" => Ok(Some(true)),
            "0" | "false" => Ok(Some(false)),
            _ => Err(CoreError::Invalid(
                r#"invalid value for filter 'dangling', must be "true" (or "1"), or "false" (or "0")"#.into(),
            )),
        },
        [] => Ok(None),
        _ => Err(CoreError::Invalid(
            r#"got more than one value for filter key "dangling""#.into(),
        )),
    }
}

fn type_matches(vals: &[String], net: &Network) -> Result<bool, CoreError> {
    let mut any = false;
    for v in vals {
        any |= match v.as_str() {
            "builtin" => net.predefined,
            "custom" => !net.predefined,
            _ => return Err(CoreError::Invalid(format!("Invalid filter: 'type'='{v}'"))),
        };
    }
    Ok(any)
}

/// Check `f` for `GET /networks` before anything is listed.
pub fn check_list(f: &Filters) -> Result<(), CoreError> {
    validate(f, LIST_KEYS)?;
    dangling(f)?;
    if let Some(vals) = f.get("type") {
        for v in vals {
            if v != "builtin" && v != "custom" {
                return Err(CoreError::Invalid(format!("Invalid filter: 'type'='{v}'")));
            }
        }
    }
    Ok(())
}

/// Does `net` pass every list filter? Call [`check_list`] first.
pub fn network_matches(net: &Network, f: &Filters, usage: NetworkUse) -> Result<bool, CoreError> {
    for (key, vals) in f {
        let ok = match key.as_str() {
            "driver" => vals.iter().any(|v| v == net.driver.as_str()),
            "name" => matches(vals, &net.name),
            "id" => matches(vals, &net.id),
            "label" => labels_match(vals, &net.labels),
            "scope" => vals.iter().any(|v| v == "local"),
            "type" => type_matches(vals, net)?,
            "dangling" => match dangling(f)? {
                Some(true) => !net.predefined && usage == NetworkUse::Unused,
                Some(false) => net.predefined || usage == NetworkUse::InUse,
                None => true,
            },
            other => return Err(invalid(other, None)),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Go's `filters` time forms for `until`: a duration before `now` (`10m`, `1h30m`,
/// `24h`), a Unix timestamp with optional fraction, or an RFC 3339 date (UTC `Z`).
fn parse_until(v: &str, now_unix: i64) -> Option<f64> {
    if let Ok(ts) = v.parse::<f64>() {
        return Some(ts);
    }
    if let Some(secs) = go_duration_secs(v) {
        return Some(now_unix as f64 - secs);
    }
    crate::docker::duration::rfc3339_unix(v)
}

fn go_duration_secs(v: &str) -> Option<f64> {
    let re = regex::Regex::new(r"^(?:(\d+(?:\.\d+)?)(h|m|s|ms))+$").ok()?;
    if !re.is_match(v) {
        return None;
    }
    let part = regex::Regex::new(r"(\d+(?:\.\d+)?)(ms|h|m|s)").ok()?;
    let mut total = 0.0;
    for c in part.captures_iter(v) {
        let n: f64 = c[1].parse().ok()?;
        total += n * match &c[2] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            _ => 0.001,
        };
    }
    Some(total)
}

/// `POST /networks/prune`'s filters, checked; `now_unix` anchors `until=10m`.
pub struct PruneFilter {
    label: Vec<String>,
    not_label: Vec<String>,
    until: Option<f64>,
}

impl PruneFilter {
    pub fn new(f: &Filters, now_unix: i64) -> Result<PruneFilter, CoreError> {
        validate(f, PRUNE_KEYS)?;
        let until = match f.get("until").map(Vec::as_slice) {
            None | Some([]) => None,
            Some([v]) => Some(parse_until(v, now_unix).ok_or_else(|| {
                CoreError::Invalid(format!(
                    "failed to parse value as time or duration: \"{v}\""
                ))
            })?),
            Some(_) => {
                return Err(CoreError::Invalid(
                    "filters: more than one value for until".into(),
                ))
            }
        };
        Ok(PruneFilter {
            label: f.get("label").cloned().unwrap_or_default(),
            not_label: f.get("label!").cloned().unwrap_or_default(),
            until,
        })
    }

    /// Does prune take `net` (already known to be an unused user network)?
    pub fn matches(&self, net: &Network) -> bool {
        let created = crate::docker::duration::rfc3339_unix(&net.created).unwrap_or(0.0);
        labels_match(&self.label, &net.labels)
            && (self.not_label.is_empty() || !labels_match(&self.not_label, &net.labels))
            && self.until.is_none_or(|u| created < u)
    }
}

#[cfg(test)]
mod tests;
