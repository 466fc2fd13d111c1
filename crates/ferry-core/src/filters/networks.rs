//! `GET /networks?filters=`, as dockerd filters it (moby `daemon/network/filter.go`):
//! `name` and `id` by
//! `Match`, `driver` and `scope` exactly, `label` by `MatchKVList`, `type` builtin or
//! custom, `dangling` counting the predefined networks as in use.

use super::{invalid, labels_match, matches, validate, Filters};
use crate::model::Network;
use crate::CoreError;

const LIST_KEYS: &[&str] = &["dangling", "driver", "id", "label", "name", "scope", "type"];

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

/// `type=builtin` (true) or `type=custom` (false).
fn builtin(v: &str) -> Result<bool, CoreError> {
    match v {
        "builtin" => Ok(true),
        "custom" => Ok(false),
        _ => Err(CoreError::Invalid(format!("invalid filter: 'type'='{v}'"))),
    }
}

/// Check `f` for `GET /networks` before anything is listed.
pub fn check_list(f: &Filters) -> Result<(), CoreError> {
    validate(f, LIST_KEYS)?;
    dangling(f)?;
    for v in f.get("type").into_iter().flatten() {
        builtin(v)?;
    }
    Ok(())
}

/// Does `net` pass every list filter? Call [`check_list`] first.
pub fn network_matches(net: &Network, f: &Filters, usage: NetworkUse) -> Result<bool, CoreError> {
    for (key, vals) in f {
        let ok = match key.as_str() {
            "driver" => vals.iter().any(|v| v == net.driver().as_str()),
            "name" => matches(vals, &net.name),
            "id" => matches(vals, &net.id),
            "label" => labels_match(vals, &net.labels),
            "scope" => vals.iter().any(|v| v == "local"),
            "type" => {
                let wanted: Result<Vec<bool>, _> = vals.iter().map(|v| builtin(v)).collect();
                wanted?.contains(&net.predefined)
            }
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

#[cfg(test)]
mod tests;
