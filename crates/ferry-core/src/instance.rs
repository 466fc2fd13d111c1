//! Which ferryd this is, when more than one runs in one network namespace.
//!
//! Design note. Everything a ferryd makes in the kernel carries its name: its links
//! (`fy…` host ends and bridges, `fyz…` retired pairs, `ferry0`), its nftables tables
//! (`inet ferry`, `bridge ferry`, whose anti-spoofing guard matches `fy*` ports), and its
//! reconcile removes what carries that name and is not in its store. Two ferryds in one
//! namespace (one hosting a plugin that is the other, as dockerd hosts ferry's plugin)
//! would take each other's things for orphans and replace each other's tables. An
//! instance ID (`ferryd --instance ID`, two characters) gives a second ferryd names of its
//! own: links `ID…` (overlays' `IDo-…`, `IDv-…`), tables `ferry_ID`, default bridge
//! `ferry_ID0`. It is process-wide and set once at start, before anything is named;
//! without it every name is as before. nftables scripts are rendered with ferry's table
//! names and renamed on their way to the kernel ([`rename_tables`]), so the renderer and
//! its tests stay as they are.

use std::borrow::Cow;
use std::sync::OnceLock;

use crate::CoreError;

/// A second ferryd's ID: two characters, a lowercase letter then a lowercase letter or a
/// digit; not `fy`, `fo` or `fv`, the first ferryd's link prefixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceId(String);

impl InstanceId {
    pub fn new(id: &str) -> Result<InstanceId, CoreError> {
        let bad = |why: &str| CoreError::BadValue {
            what: "instance ID",
            value: id.into(),
            why: why.into(),
        };
        let mut c = id.chars();
        let (Some(a), Some(b), None) = (c.next(), c.next(), c.next()) else {
            return Err(bad("two characters, as fz"));
        };
        if !a.is_ascii_lowercase() || !(b.is_ascii_lowercase() || b.is_ascii_digit()) {
            return Err(bad(
                "a lowercase letter, then a lowercase letter or a digit",
            ));
        }
        if id == "fy" || id == "fo" || id == "fv" {
            return Err(bad("fy, fo and fv are the first ferryd's"));
        }
        Ok(InstanceId(id.into()))
    }
}

struct Names {
    link_prefix: String,
    table: String,
    default_bridge: String,
}

static NAMES: OnceLock<Names> = OnceLock::new();

fn names() -> &'static Names {
    NAMES.get_or_init(|| Names {
        link_prefix: "fy".into(),
        table: "ferry".into(),
        default_bridge: "ferry0".into(),
    })
}

/// Make this process the ferryd `id`; once, before anything is named. Refused if names
/// were already handed out.
pub fn set(id: &InstanceId) -> Result<(), CoreError> {
    let n = Names {
        link_prefix: id.0.clone(),
        table: format!("ferry_{}", id.0),
        default_bridge: format!("ferry_{}0", id.0),
    };
    NAMES
        .set(n)
        .map_err(|_| CoreError::Invalid("the instance ID is set once, at start".into()))
}

/// The first two characters of this ferryd's link names (`fy`).
pub fn link_prefix() -> &'static str {
    &names().link_prefix
}

/// This ferryd's nftables table name in both families (`ferry`).
pub fn table() -> &'static str {
    &names().table
}

/// The default bridge's link (`ferry0`).
pub fn default_bridge() -> &'static str {
    &names().default_bridge
}

/// `script` (rendered for `inet ferry` and `bridge ferry`) for this ferryd's tables.
pub fn rename_tables(script: &str) -> Cow<'_, str> {
    rename_to(script, table())
}

fn rename_to<'a>(script: &'a str, table: &str) -> Cow<'a, str> {
    if table == "ferry" {
        return Cow::Borrowed(script);
    }
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(script.len() + 64);
    let mut from = 0;
    // One pass: each `ferry` that is a whole word right after `inet ` or `bridge `.
    for (i, name) in script.match_indices("ferry") {
        let (before, after) = (&script[..i], &script[i + name.len()..]);
        let family = ["inet ", "bridge "]
            .into_iter()
            .find(|f| before.ends_with(f));
        let whole = family.is_some_and(|f| {
            let start = &before[..before.len() - f.len()];
            !start.ends_with(word) && !after.starts_with(word)
        });
        if whole {
            out.push_str(&script[from..i]);
            out.push_str(table);
            from = i + name.len();
        }
    }
    out.push_str(&script[from..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_ferryds_tables_are_renamed_and_nothing_else() {
        let script = "add table inet ferry\nadd chain inet ferry user\n\
                      add element inet ferry bridges { \"ferry0\" }\n\
                      add rule bridge ferry prerouting iifname \"fy*\" jump guard\n\
                      list table bridge ferry";
        let want = "add table inet ferry_fz\nadd chain inet ferry_fz user\n\
                    add element inet ferry_fz bridges { \"ferry0\" }\n\
                    add rule bridge ferry_fz prerouting iifname \"fy*\" jump guard\n\
                    list table bridge ferry_fz";
        assert_eq!(rename_to(script, "ferry_fz"), want);
        assert_eq!(rename_to(script, "ferry"), script);
        assert_eq!(
            rename_to("add table inet ferryx", "ferry_fz"),
            "add table inet ferryx"
        );
    }

    #[test]
    fn an_instance_id_is_two_characters_of_its_own() {
        assert!(InstanceId::new("fz").is_ok());
        assert!(InstanceId::new("q7").is_ok());
        for bad in ["", "f", "fzz", "Fz", "7q", "fy", "fo", "f-"] {
            assert!(InstanceId::new(bad).is_err(), "{bad:?}");
        }
    }
}
