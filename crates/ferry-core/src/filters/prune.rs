//! `POST /…/prune?filters=`: dockerd's prune filters, `label`, `label!` (kept when
//! every one matches) and `until` (a duration, Unix timestamp or RFC 3339 date).

use std::collections::BTreeMap;

use super::{labels_match, validate, Filters};
use crate::CoreError;

const PRUNE_KEYS: &[&str] = &["label", "label!", "until"];

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

/// `POST /networks/prune` and `/containers/prune` filters, checked; `now_unix`
/// anchors `until=10m`.
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

    /// Does prune take an object with these labels, created then (RFC 3339)? The
    /// caller has already judged it unused.
    pub fn matches(&self, labels: &BTreeMap<String, String>, created: &str) -> bool {
        let created = crate::docker::duration::rfc3339_unix(created).unwrap_or(0.0);
        labels_match(&self.label, labels)
            && (self.not_label.is_empty() || !labels_match(&self.not_label, labels))
            && self.until.is_none_or(|u| created < u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::parse;

    #[test]
    fn prune_takes_label_not_label_and_until() {
        let labels = BTreeMap::from([("a".to_string(), "b".to_string())]);
        let created = "2026-01-02T00:00:00Z";
        let pf = |f: &str| PruneFilter::new(&parse(Some(f)).unwrap(), 1_798_761_600);
        let m = |f: &str| pf(f).unwrap().matches(&labels, created);
        assert!(m(r#"{"label":{"a":true}}"#));
        assert!(!m(r#"{"label!":{"a=b":true}}"#));
        assert!(m(r#"{"label!":{"a=c":true}}"#));
        assert!(m(r#"{"until":{"2026-01-03T00:00:00Z":true}}"#));
        assert!(!m(r#"{"until":{"2026-01-01":true}}"#));
        assert!(m(r#"{"until":{"24h":true}}"#));
        assert!(!m(r#"{"until":{"100000h":true}}"#));
        assert!(pf(r#"{"until":{"soon":true}}"#).is_err());
        assert!(pf(r#"{"name":{"x":true}}"#).is_err());
    }
}
