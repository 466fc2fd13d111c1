//! The kernel side of a network's bridge: made (with `route_localnet`, for published
//! 127.0.0.1 ports), handed back when ferry adopted it, and the check that a published
//! host port is free.

use ferry_core::ports::Published;
use ferry_core::CoreError;
use ferry_kernel::{BridgeSpec, KernelOps};

use super::Daemon;
use crate::error::Result;

impl<K: KernelOps> Daemon<K> {
    /// Create a network's bridge and let published 127.0.0.1 ports reach it.
    pub(crate) async fn prepare_bridge(&self, spec: &BridgeSpec) -> Result<()> {
        self.kernel.ensure_bridge(spec).await?;
        self.kernel
            .sysctl(&["net", "ipv4", "conf", &spec.name, "route_localnet"], "1")
            .await?;
        Ok(())
    }

    /// The kernel side of a network: its bridge (the firewall's elements for it went in
    /// with the commit: they name it, and nothing matches them before it exists). On
    /// failure the bridge goes if it was not there before (else it is handed back); the
    /// caller takes the state back.
    pub(crate) async fn make_bridge(&self, spec: &BridgeSpec) -> Result<()> {
        let existed = self.kernel.link_kind(&spec.name).await?.is_some();
        let programmed = self.prepare_bridge(spec).await;
        if programmed.is_err() {
            let undo = match existed {
                false => self
                    .kernel
                    .delete_link(&spec.name)
                    .await
                    .map_err(Into::into),
                true => self.hand_back_bridge(&spec.name, spec.gateway).await,
            };
            if let Err(e) = undo {
                tracing::warn!("create network {}: undo: {e}", spec.name);
            }
        }
        programmed
    }

    /// A host port that a host process already holds would be shadowed by the DNAT
    /// rule: refuse it, as Docker's proxy would fail to bind it.
    pub(crate) async fn check_host_free(&self, p: &[Published]) -> Result<()> {
        for m in p {
            let ip = m.host_ip.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
            for port in m.host_ports.iter() {
                match self.kernel.host_port_free(m.proto, ip, port).await {
                    Ok(true) => {}
                    Ok(false) => {
                        return Err(CoreError::PortTaken {
                            host_ip: m.host_ip_string(),
                            port,
                        }
                        .into())
                    }
                    Err(e) if e.errno() == Some(libc::EADDRNOTAVAIL) => {
                        return Err(CoreError::Invalid(format!(
                            "cannot publish on {ip}: it is not an address of this host"
                        ))
                        .into())
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// A bridge ferry used but did not make (`-o bridge=BR`) is handed back: off goes
    /// `route_localnet`, which without ferry's input rule would let whatever sits on
    /// that bridge reach the host's loopback services.
    pub(crate) async fn release_bridge(&self, name: &str) -> Result<()> {
        self.kernel
            .sysctl(&["net", "ipv4", "conf", name, "route_localnet"], "0")
            .await?;
        Ok(())
    }

    /// A bridge adopted through `com.docker.network.bridge.name` is left as ferry found
    /// it: without ferry's gateway address, and released. Both steps run.
    pub(crate) async fn hand_back_bridge(
        &self,
        name: &str,
        gateway: Option<ipnet::IpNet>,
    ) -> Result<()> {
        let unaddr = match gateway {
            Some(gw) => self.kernel.remove_address(name, gw).await,
            None => Ok(()),
        };
        let released = self.release_bridge(name).await;
        unaddr?;
        released
    }
}
