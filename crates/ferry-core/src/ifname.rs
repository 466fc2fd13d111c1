//! Kernel interface names: at most 15 bytes (IFNAMSIZ - 1), no '/', no whitespace, not
//! "." or "..". A value of this type is always a name the kernel accepts.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::CoreError;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IfName(String);

pub const IFNAME_MAX: usize = 15;

impl IfName {
    pub fn new(name: impl Into<String>) -> Result<Self, CoreError> {
        let name = name.into();
        let why = if name.is_empty() {
            Some("it is empty")
        } else if name.len() > IFNAME_MAX {
            Some("it is longer than 15 bytes, the kernel's limit for interface names")
        } else if name == "." || name == ".." {
            Some("it is reserved")
        } else if name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
        {
            Some("it contains '/', ':' or whitespace")
        } else {
            None
        };
        match why {
            Some(why) => Err(CoreError::BadValue {
                what: "interface name",
                value: name,
                why: why.into(),
            }),
            None => Ok(IfName(name)),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IfName {
    type Error = CoreError;
    fn try_from(s: String) -> Result<Self, CoreError> {
        IfName::new(s)
    }
}

impl From<IfName> for String {
    fn from(n: IfName) -> String {
        n.0
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_fifteen_bytes_and_refuses_sixteen() {
        assert!(IfName::new("a".repeat(15)).is_ok());
        let err = IfName::new("a".repeat(16)).unwrap_err();
        assert!(err.to_string().contains("longer than 15 bytes"), "{err}");
    }

    #[test]
    fn refuses_slash_space_and_empty() {
        for bad in ["", "a/b", "a b", ".", ".."] {
            assert!(IfName::new(bad).is_err(), "{bad:?} accepted");
        }
    }
}
