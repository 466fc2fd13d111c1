//! A macvlan network's settings from `-o parent=IFACE -o macvlan_mode=bridge|private`,
//! with libnetwork's rules: a parent is required here (libnetwork's dummy parent for an
//! isolated network is not made), and one parent serves one macvlan network.

use std::collections::BTreeMap;

use crate::model::{MacvlanConf, MacvlanMode, Network};
use crate::{CoreError, IfName};

pub const OPT_PARENT: &str = "parent";
pub const OPT_MODE: &str = "macvlan_mode";

/// Options a macvlan network takes besides the MTU; anything else is refused by name.
const KNOWN: [&str; 3] = [OPT_PARENT, OPT_MODE, super::OPT_MTU];

pub fn conf(opts: &BTreeMap<String, String>) -> Result<MacvlanConf, CoreError> {
    if let Some(k) = opts.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(CoreError::BadValue {
            what: "option",
            value: k.clone(),
            why: format!("the macvlan driver takes {}", KNOWN.join(", ")),
        });
    }
    let parent = match opts.get(OPT_PARENT).map(|p| p.trim()) {
        None | Some("") => {
            return Err(CoreError::Invalid(
                "the macvlan driver needs -o parent=IFACE: the host interface its sandboxes' links hang from".into(),
            ))
        }
        Some(p) => IfName::new(p.to_string()).map_err(|e| CoreError::BadValue {
            what: "option",
            value: format!("{OPT_PARENT}={p}"),
            why: e.to_string(),
        })?,
    };
    let mode = match opts.get(OPT_MODE).map(String::as_str) {
        None | Some("") | Some("bridge") => MacvlanMode::Bridge,
        Some("private") => MacvlanMode::Private,
        Some(m) => {
            return Err(CoreError::BadValue {
                what: "option",
                value: format!("{OPT_MODE}={m}"),
                why: "ferry's macvlan modes are bridge and private".into(),
            })
        }
    };
    Ok(MacvlanConf {
        parent,
        mode,
        mtu: super::mtu_option(opts)?,
    })
}

/// libnetwork's rule: a parent interface serves one macvlan network.
pub fn check_parent_free(m: &MacvlanConf, existing: &[Network]) -> Result<(), CoreError> {
    match existing
        .iter()
        .find(|n| n.macvlan().is_some_and(|o| o.parent == m.parent))
    {
        Some(n) => Err(CoreError::Invalid(format!(
            "network {} is already using parent interface {}",
            n.name, m.parent
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parent_and_mode_are_read_and_bridge_is_the_default() {
        let c = conf(&opts(&[("parent", "eth0")])).unwrap();
        assert_eq!(
            (c.parent.as_str(), c.mode, c.mtu),
            ("eth0", MacvlanMode::Bridge, None)
        );
        let c = conf(&opts(&[("parent", "up0"), ("macvlan_mode", "private")])).unwrap();
        assert_eq!(c.mode, MacvlanMode::Private);
    }

    #[test]
    fn a_missing_parent_an_unknown_mode_or_option_is_refused_by_name() {
        let e = conf(&opts(&[])).unwrap_err().to_string();
        assert!(e.contains("-o parent=IFACE"), "{e}");
        let e = conf(&opts(&[("parent", "eth0"), ("macvlan_mode", "vepa")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("macvlan_mode=vepa") && e.contains("bridge and private"),
            "{e}"
        );
        let e = conf(&opts(&[("parent", "eth0"), ("colour", "red")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("colour"), "{e}");
        let e = conf(&opts(&[("parent", "a-name-far-too-long")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("parent=a-name-far-too-long"), "{e}");
    }
}
