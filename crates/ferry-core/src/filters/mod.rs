//! Docker's list filters: the `filters` query parameter is a JSON object mapping a key
//! to a set of values (`{"driver":{"bridge":true}}`); values of one key are OR-ed, keys
//! are AND-ed. Matching follows moby's `filters.Args`: `Match` is an exact match or an
//! unanchored regular expression, `ExactMatch` only exact, `MatchKVList` every
//! `key` / `key=value` among the labels. Unknown keys and bad values are refused
//! (400) with dockerd's messages.

pub mod containers;
pub mod networks;
pub mod prune;

use std::collections::BTreeMap;

use crate::CoreError;

pub use networks::{network_matches, NetworkUse};

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

/// Refuse keys outside `accepted`, as `filters.Args.Validate` does.
pub fn validate(f: &Filters, accepted: &[&str]) -> Result<(), CoreError> {
    match f.keys().find(|k| !accepted.contains(&k.as_str())) {
        Some(k) => Err(invalid(k, None)),
        None => Ok(()),
    }
}

/// dockerd's "Invalid filter 'key'" / "Invalid filter 'key=value'".
pub fn invalid(key: &str, value: Option<&str>) -> CoreError {
    match value {
        Some(v) => CoreError::Invalid(format!("Invalid filter '{key}={v}'")),
        None => CoreError::Invalid(format!("Invalid filter '{key}'")),
    }
}

/// `Match`: a value equal to `source`, or one that, as a regular expression, matches
/// somewhere in it. A value that is no valid expression only matches exactly. The
/// expressions are compiled once, for a list of many sandboxes.
pub struct Matcher {
    exact: Vec<String>,
    regexes: Vec<regex::Regex>,
}

impl Matcher {
    pub fn new(vals: &[String]) -> Matcher {
        Matcher {
            exact: vals.to_vec(),
            regexes: vals
                .iter()
                .filter_map(|v| regex::Regex::new(v).ok())
                .collect(),
        }
    }

    pub fn matches(&self, source: &str) -> bool {
        self.exact.iter().any(|v| v == source) || self.regexes.iter().any(|re| re.is_match(source))
    }
}

/// [`Matcher`] for one use.
pub fn matches(vals: &[String], source: &str) -> bool {
    Matcher::new(vals).matches(source)
}

/// `MatchKVList`: every value (`key` or `key=value`) is among `labels`.
pub fn labels_match(vals: &[String], labels: &BTreeMap<String, String>) -> bool {
    vals.iter().all(|want| match want.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(want),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_is_exact_or_an_unanchored_regular_expression() {
        let v = |s: &str| vec![s.to_string()];
        assert!(matches(&v("web"), "/web"));
        assert!(matches(&v("^/web$"), "/web"));
        assert!(!matches(&v("^web$"), "/web2"));
        assert!(matches(&v("we"), "/web"));
        assert!(
            matches(&v("a[b"), "a[b"),
            "an invalid expression matches exactly"
        );
        assert!(!matches(&v("a[b"), "xa[b"));
        let labels = BTreeMap::from([("a".to_string(), "1".to_string())]);
        assert!(labels_match(&v("a"), &labels));
        assert!(labels_match(&v("a=1"), &labels));
        assert!(!labels_match(
            &[String::from("a=1"), String::from("b")],
            &labels
        ));
    }
}
