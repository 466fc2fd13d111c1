//! plughost's errors: each names the plugin and the call, as the user sees them.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin {0:?} not found")]
    NotFound(String),
    #[error("plugin spec {path}: {why}")]
    BadSpec { path: PathBuf, why: String },
    #[error("plugin {plugin:?} ({addr}): {call}: cannot connect: {source}")]
    Unreachable {
        plugin: String,
        addr: String,
        call: String,
        #[source]
        source: std::io::Error,
    },
    #[error("plugin {plugin:?}: {call}: no answer within {secs} s")]
    TimedOut {
        plugin: String,
        call: String,
        secs: u64,
    },
    #[error("plugin {plugin:?}: {call}: the exchange broke: {why}")]
    Broken {
        plugin: String,
        call: String,
        why: String,
    },
    #[error("plugin {plugin:?}: {call}: {msg}")]
    Refused {
        plugin: String,
        call: String,
        msg: String,
    },
    #[error("plugin {plugin:?}: {call}: not implemented (404)")]
    NotImplemented { plugin: String, call: String },
    #[error("plugin {plugin:?}: {call}: bad answer: {why}")]
    Garbage {
        plugin: String,
        call: String,
        why: String,
    },
    #[error("plugin {plugin:?} is not a {role} (it implements {implements:?})")]
    WrongRole {
        plugin: String,
        role: &'static str,
        implements: Vec<String>,
    },
}

impl PluginError {
    pub fn status(&self) -> u16 {
        match self {
            PluginError::NotFound(_) => 404,
            PluginError::WrongRole { .. } => 400,
            _ => 500,
        }
    }
    pub(super) fn is_unreachable(&self) -> bool {
        matches!(
            self,
            PluginError::Unreachable { .. }
                | PluginError::TimedOut { .. }
                | PluginError::Broken { .. }
        )
    }
}
