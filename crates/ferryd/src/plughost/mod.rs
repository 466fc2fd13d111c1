//! plughost: ferryd drives third-party libnetwork plugins (remote network drivers),
//! the other direction of `crate::plugin`, where dockerd drives ferry.
//!
//! Mechanism, as dockerd (docker-protocols.md, part A):
//! - **Discovery** ([`discovery`]) is lazy: a driver name ferry does not have is looked
//!   up in the plugin directories on first use; while nothing names it, the lookup is
//!   retried after 1, 2, 4, 8 … s until the retry budget (dockerd's is 30 s: five
//!   tries, ~15 s) is spent, then the name is "not found" (404).
//! - **Activation** (`Plugin.Activate`, then `NetworkDriver.GetCapabilities`, and for a
//!   plugin that is also an IPAM driver `IpamDriver.GetCapabilities` and
//!   `GetDefaultAddressSpaces`) happens once and is cached. Unlike dockerd, a plugin that
//!   stops answering is forgotten, so a restarted plugin is activated again on next use,
//!   and a failed activation does not poison the name until ferryd restarts.
//! - **Calls** ([`client`]) are bounded by `--plugin-timeout`; connection failures of
//!   set-up calls are retried within the retry budget, teardown calls are tried once
//!   (dockerd's 15 s per teardown step made `rm -f` take 45 s with a dead plugin).
//! - **Networks** (`crate::ops::plughost::network`) keep ferry's IPAM: the pool is
//!   ferry's, the plugin gets it in `IPv4Data`; **endpoints**
//!   (`crate::ops::plughost::endpoint`) run CreateEndpoint → Join → ferry
//!   moves `SrcName` into the sandbox → ProgramExternalConnectivity, and back again,
//!   undoing in reverse what was done when a step fails.
//!
//! Cost: nothing until a plugin driver is used; then one connection per call, about six
//! calls per endpoint's life.

pub mod answers;
pub mod client;
pub mod discovery;
mod error;
pub mod leases;
pub mod tls;
#[cfg(test)]
mod tls_tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use client::{Addr, Failure};
pub use discovery::{Dirs, Found};
pub use error::PluginError;

/// plughost's settings (ferryd flags).
#[derive(Debug, Clone)]
pub struct Conf {
    pub dirs: Dirs,
    /// Bound on one plugin call.
    pub call_timeout: Duration,
    /// How long a lookup or a refused connection is retried (dockerd: 30 s).
    pub retry_budget: Duration,
    /// Where endpoint records live (under the exec root).
    pub records: PathBuf,
}

impl Conf {
    /// No plugin directories: discovery finds nothing (a ferryd under a test root).
    pub fn none(exec_root: &std::path::Path) -> Conf {
        Conf {
            dirs: Dirs::default(),
            call_timeout: Duration::from_secs(30),
            retry_budget: Duration::from_secs(30),
            records: exec_root.join("plughost"),
        }
    }
}

/// An activated plugin.
#[derive(Debug, Clone)]
pub struct Plugin {
    pub found: Found,
    pub implements: Vec<String>,
    /// An IPAM plugin's `LocalDefaultAddressSpace`, sent back in `RequestPool`.
    pub address_space: String,
    /// An IPAM plugin's `RequiresMACAddress`: it is told each endpoint's MAC when asked
    /// for its address, and the endpoint gets that MAC.
    pub requires_mac: bool,
}

impl Plugin {
    pub fn is(&self, role: &str) -> bool {
        self.implements.iter().any(|r| r == role)
    }
}

/// The activated plugins, by name, for ferryd's life (or until one stops answering),
/// and the addresses IPAM plugins granted.
#[derive(Default)]
pub struct PlugHost {
    active: std::sync::Mutex<HashMap<String, Arc<Plugin>>>,
    leases: std::sync::Mutex<Vec<leases::Lease>>,
    /// Leases ferry's pools no longer hold, to release at their plugin ([`leases::watch`]).
    releases: std::sync::Mutex<Vec<leases::Lease>>,
    released: tokio::sync::Notify,
    /// Network name → the IPAM pool its create in progress got, and the address space.
    pub(crate) pending_ipam:
        std::sync::Mutex<HashMap<String, (ferry_core::model::RemoteIpam, String)>>,
}

/// dockerd's backoff: 1, 2, 4, 8 … s; give up when the next wait would end past the
/// budget.
fn backoff(retries: u32) -> Duration {
    Duration::from_secs(1u64 << retries.min(5))
}

impl PlugHost {
    fn cached(&self, name: &str) -> Option<Arc<Plugin>> {
        self.active
            .lock()
            .expect("plughost lock")
            .get(name)
            .cloned()
    }

    /// Forget `name` (it stopped answering): the next use finds and activates it again.
    pub fn forget(&self, name: &str) {
        self.active.lock().expect("plughost lock").remove(name);
    }

    /// The plugin `name`, found and activated, implementing `role`.
    pub async fn get(
        &self,
        conf: &Conf,
        name: &str,
        role: &'static str,
    ) -> Result<Arc<Plugin>, PluginError> {
        self.get_within(conf, name, role, conf.retry_budget).await
    }

    /// [`PlugHost::get`] without retries (teardown: a plugin that is gone is not
    /// waited for).
    pub async fn get_now(
        &self,
        conf: &Conf,
        name: &str,
        role: &'static str,
    ) -> Result<Arc<Plugin>, PluginError> {
        self.get_within(conf, name, role, Duration::ZERO).await
    }

    async fn get_within(
        &self,
        conf: &Conf,
        name: &str,
        role: &'static str,
        budget: Duration,
    ) -> Result<Arc<Plugin>, PluginError> {
        let p = match self.cached(name) {
            Some(p) => p,
            None => {
                let p = Arc::new(self.activate(conf, name, budget).await?);
                self.active
                    .lock()
                    .expect("plughost lock")
                    .insert(name.to_string(), p.clone());
                p
            }
        };
        if !p.is(role) {
            return Err(PluginError::WrongRole {
                plugin: name.into(),
                role,
                implements: p.implements.clone(),
            });
        }
        Ok(p)
    }

    /// dockerd probes every role a plugin advertises, before the call that needed it:
    /// a network driver's capabilities, an IPAM driver's capabilities and address space.
    async fn probe_roles(
        &self,
        conf: &Conf,
        name: &str,
        plugin: &mut Plugin,
    ) -> Result<(), PluginError> {
        if plugin.is("NetworkDriver") {
            let caps = self
                .call(conf, plugin, "NetworkDriver.GetCapabilities", None)
                .await?;
            if let Some(scope) = caps.get("Scope").and_then(Value::as_str) {
                if scope != "local" {
                    tracing::warn!("plugin {name}: scope {scope:?}; ferryd treats it as local");
                }
            }
        }
        if plugin.is("IpamDriver") {
            match self
                .call(conf, plugin, "IpamDriver.GetCapabilities", None)
                .await
            {
                Ok(caps) => {
                    plugin.requires_mac = caps["RequiresMACAddress"].as_bool() == Some(true);
                }
                Err(PluginError::NotImplemented { .. }) => {}
                Err(e) => return Err(e),
            }
            let spaces = self
                .call(conf, plugin, "IpamDriver.GetDefaultAddressSpaces", None)
                .await?;
            plugin.address_space = spaces["LocalDefaultAddressSpace"]
                .as_str()
                .unwrap_or_default()
                .to_string();
        }
        Ok(())
    }

    async fn activate(
        &self,
        conf: &Conf,
        name: &str,
        budget: Duration,
    ) -> Result<Plugin, PluginError> {
        let start = Instant::now();
        let mut retries = 0;
        let (found, answer) = loop {
            let err = match conf.dirs.find(name)? {
                Some(found) => {
                    match call_once(
                        conf,
                        &found.name,
                        &found.addr,
                        "Plugin.Activate",
                        None,
                        "Err",
                    )
                    .await
                    {
                        Ok(v) => break (found, v),
                        Err(e) if e.is_unreachable() => e,
                        Err(e) => return Err(e),
                    }
                }
                None => PluginError::NotFound(name.into()),
            };
            let wait = backoff(retries);
            if start.elapsed() + wait >= budget {
                return Err(err);
            }
            tracing::warn!("plugin {name}: {err}; retrying in {wait:?}");
            tokio::time::sleep(wait).await;
            retries += 1;
        };
        let mut plugin = Plugin {
            found,
            implements: implements_of(name, &answer)?,
            address_space: String::new(),
            requires_mac: false,
        };
        self.probe_roles(conf, name, &mut plugin).await?;
        tracing::info!(
            "plugin {name} activated at {} (from {}): {:?}",
            plugin.found.addr,
            plugin.found.source.display(),
            plugin.implements
        );
        Ok(plugin)
    }

    /// One set-up call: a refused connection is retried within the budget; a plugin
    /// that stays unreachable is forgotten.
    pub async fn call(
        &self,
        conf: &Conf,
        p: &Plugin,
        method: &str,
        body: Option<&Value>,
    ) -> Result<Value, PluginError> {
        let key = err_key(method);
        let start = Instant::now();
        let mut retries = 0;
        loop {
            match call_once(conf, &p.found.name, &p.found.addr, method, body, key).await {
                Err(e @ PluginError::Unreachable { .. }) => {
                    let wait = backoff(retries);
                    if start.elapsed() + wait >= conf.retry_budget {
                        self.forget(&p.found.name);
                        return Err(e);
                    }
                    tokio::time::sleep(wait).await;
                    retries += 1;
                }
                Err(e) if e.is_unreachable() => {
                    self.forget(&p.found.name);
                    return Err(e);
                }
                r => return r,
            }
        }
    }

    /// One teardown call: tried once; a failure is the caller's to log.
    pub async fn call_once(
        &self,
        conf: &Conf,
        p: &Plugin,
        method: &str,
        body: Option<&Value>,
    ) -> Result<Value, PluginError> {
        let r = call_once(
            conf,
            &p.found.name,
            &p.found.addr,
            method,
            body,
            err_key(method),
        )
        .await;
        if r.as_ref().err().is_some_and(PluginError::is_unreachable) {
            self.forget(&p.found.name);
        }
        r
    }
}

/// A network driver's success-with-error key is `Err`, an IPAM driver's `Error`.
fn err_key(method: &str) -> &'static str {
    if method.starts_with("IpamDriver.") {
        "Error"
    } else {
        "Err"
    }
}

pub(crate) async fn call_once(
    conf: &Conf,
    plugin: &str,
    addr: &Addr,
    method: &str,
    body: Option<&Value>,
    err_key: &str,
) -> Result<Value, PluginError> {
    match client::post(addr, method, body, conf.call_timeout).await {
        Ok(reply) => client::decode(plugin, method, reply, err_key),
        Err(Failure::Unreachable(source)) => Err(PluginError::Unreachable {
            plugin: plugin.into(),
            addr: addr.to_string(),
            call: method.into(),
            source,
        }),
        Err(Failure::TimedOut) => Err(PluginError::TimedOut {
            plugin: plugin.into(),
            call: method.into(),
            secs: conf.call_timeout.as_secs(),
        }),
        Err(Failure::Broken(why)) => Err(PluginError::Broken {
            plugin: plugin.into(),
            call: method.into(),
            why,
        }),
    }
}

#[cfg(test)]
mod tests;

/// The roles `Plugin.Activate` says a plugin implements.
fn implements_of(name: &str, answer: &Value) -> Result<Vec<String>, PluginError> {
    answer
        .get("Implements")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .ok_or_else(|| PluginError::Garbage {
            plugin: name.into(),
            call: "Plugin.Activate".into(),
            why: format!("no Implements list in {answer}"),
        })
}
