//! `GET /containers/json?all=&limit=&filters=`, as dockerd selects containers (moby
//! `daemon/list.go`): newest first; stopped ones only with `all`, a `limit` or a
//! `status` filter; `name` and `id` by `Match` (the name with and without its `/`),
//! `network` by name or ID prefix, `before`/`since` by creation, `publish`/`expose` by
//! port, `label` by `MatchKVList` over the sandbox's `--label`s. Filters that concern
//! what sandboxes do not have (images, volumes, health checks, tasks) match as on a
//! container without them.

use std::collections::BTreeMap;

use super::{invalid, labels_match, validate, Filters, Matcher};
use crate::model::{Network, RunState, Sandbox};
use crate::ports::{PortRange, Proto};
use crate::CoreError;

const KEYS: &[&str] = &[
    "ancestor",
    "before",
    "exited",
    "health",
    "id",
    "isolation",
    "is-task",
    "label",
    "name",
    "network",
    "publish",
    "expose",
    "since",
    "status",
    "volume",
];
const STATES: &[&str] = &[
    "created",
    "running",
    "paused",
    "restarting",
    "removing",
    "exited",
    "dead",
];

/// One sandbox and the networks it is on, as the list sees it.
pub struct Listed<'a> {
    pub sandbox: &'a Sandbox,
    pub networks: Vec<&'a Network>,
}

/// The checked query of one `GET /containers/json`.
pub struct PsQuery {
    filters: Filters,
    all: bool,
    limit: Option<usize>,
    exited: Vec<i32>,
    ports: BTreeMap<&'static str, Vec<(PortRange, Proto)>>,
    /// `name` and `id`, compiled.
    name: Matcher,
    id: Matcher,
    /// `created` of the `before` and `since` sandboxes.
    before: Option<String>,
    since: Option<String>,
}

fn port_filters(vals: &[String], key: &str) -> Result<Vec<(PortRange, Proto)>, CoreError> {
    vals.iter()
        .map(|v| {
            let (ports, proto) = v.split_once('/').unwrap_or((v, "tcp"));
            let p = PortRange::parse(ports).map_err(|_| invalid(key, Some(v)))?;
            Ok((p, Proto::parse(proto).map_err(|_| invalid(key, Some(v)))?))
        })
        .collect()
}

fn check_values(f: &Filters) -> Result<(), CoreError> {
    let allowed: &[(&str, &[&str])] = &[
        ("status", STATES),
        ("health", &["starting", "healthy", "unhealthy", "none"]),
        ("is-task", &["true", "false", "1", "0"]),
        ("isolation", &["default", "process", "hyperv"]),
    ];
    for (key, ok) in allowed {
        let bad = f
            .get(*key)
            .and_then(|v| v.iter().find(|v| !ok.contains(&v.as_str())));
        match (bad, *key) {
            // dockerd 20.10's own words for this one.
            (Some(bad), "health") => {
                let msg = format!("Unrecognised filter value for health: {bad}");
                return Err(CoreError::Invalid(msg));
            }
            (Some(bad), _) => return Err(invalid(key, Some(bad))),
            (None, _) => {}
        }
    }
    Ok(())
}

/// An `exited=` value; refused in dockerd's words (Go's `strconv.Atoi` error).
fn exit_code(c: &str) -> Result<i32, CoreError> {
    c.parse()
        .map_err(|_| CoreError::Invalid(format!("strconv.Atoi: parsing {c:?}: invalid syntax")))
}

impl PsQuery {
    /// Check the query; `created_of` resolves a `before`/`since` sandbox to its
    /// creation time (or fails as an unknown sandbox does).
    pub fn new(
        filters: Filters,
        all: bool,
        limit: i64,
        created_of: impl Fn(&str) -> Result<String, CoreError>,
    ) -> Result<PsQuery, CoreError> {
        validate(&filters, KEYS)?;
        check_values(&filters)?;
        let exited = filters
            .get("exited")
            .map(|v| v.iter().map(|c| exit_code(c)).collect())
            .transpose()?
            .unwrap_or_default();
        let mut ports = BTreeMap::new();
        for key in ["publish", "expose"] {
            if let Some(v) = filters.get(key) {
                ports.insert(key, port_filters(v, key)?);
            }
        }
        let one = |key: &str| -> Result<Option<String>, CoreError> {
            filters
                .get(key)
                .and_then(|v| v.first())
                .map(|r| created_of(r))
                .transpose()
        };
        let matcher =
            |key: &str| Matcher::new(filters.get(key).map(Vec::as_slice).unwrap_or_default());
        Ok(PsQuery {
            name: matcher("name"),
            id: matcher("id"),
            all: all || filters.contains_key("status"),
            limit: usize::try_from(limit).ok().filter(|n| *n > 0),
            before: one("before")?,
            since: one("since")?,
            exited,
            ports,
            filters,
        })
    }

    /// The sandboxes the list shows, from `all` sorted newest first.
    pub fn select<'a>(&self, all: Vec<Listed<'a>>) -> Vec<Listed<'a>> {
        let mut out = vec![];
        for l in all {
            if self.limit.is_some_and(|n| out.len() >= n) {
                break;
            }
            if self.includes(&l) {
                out.push(l);
            }
        }
        out
    }

    fn includes(&self, l: &Listed<'_>) -> bool {
        let sb = l.sandbox;
        if !sb.is_running() && !self.all && self.limit.is_none() {
            return false;
        }
        self.filters
            .iter()
            .all(|(key, vals)| self.key_matches(key, vals, l))
            && self.before.as_ref().is_none_or(|c| sb.created < *c)
            && self.since.as_ref().is_none_or(|c| sb.created > *c)
    }

    fn key_matches(&self, key: &str, vals: &[String], l: &Listed<'_>) -> bool {
        let sb = l.sandbox;
        match key {
            "name" => self.name.matches(&format!("/{}", sb.name)) || self.name.matches(&sb.name),
            "id" => self.id.matches(&sb.id),
            "label" => labels_match(vals, &sb.labels),
            "status" => vals.iter().any(|v| v == state(sb)),
            "exited" => match sb.state {
                RunState::Exited { code } => self.exited.contains(&code),
                _ => false,
            },
            "network" => vals.iter().any(|v| {
                l.networks
                    .iter()
                    .any(|n| n.name == *v || n.id.starts_with(v.as_str()))
            }),
            "publish" | "expose" => self.port_matches(key, sb),
            "health" => vals.iter().any(|v| v == "none"),
            "is-task" => vals.iter().any(|v| v == "false" || v == "0"),
            "isolation" => vals.iter().any(|v| v == "default"),
            "before" | "since" => true, // by creation, in `includes`
            // No images and no volumes: nothing descends from an image or mounts one.
            _ => false,
        }
    }

    fn port_matches(&self, key: &str, sb: &Sandbox) -> bool {
        let wanted = self.ports.get(key).map(Vec::as_slice).unwrap_or_default();
        let published = sb
            .endpoints
            .iter()
            .filter_map(|e| e.live.as_ref())
            .flat_map(|l| &l.published);
        published.into_iter().any(|p| {
            let ports = if key == "publish" {
                p.host_ports
            } else {
                p.container_ports
            };
            wanted
                .iter()
                .any(|(r, proto)| *proto == p.proto && r.overlaps(ports))
        })
    }
}

/// Docker's `State` string of a sandbox.
pub fn state(sb: &Sandbox) -> &'static str {
    match sb.state {
        RunState::Created => "created",
        RunState::Running { .. } => "running",
        RunState::Exited { .. } => "exited",
    }
}

#[cfg(test)]
mod tests;
