//! The kernel edge as a trait: what ferryd may ask of the kernel. [`Netlink`] does it;
//! [`crate::fake::Recorder`] records it for tests without root.

use std::fs::File;
use std::future::Future;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;

use crate::link::{addr, bridge, del, get, kind, pair, port, route, up, veth};
use std::sync::Arc;

use crate::nft::Nft;
use crate::{netns, sysctl, KernelError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeSpec {
    pub name: String,
    /// The gateway address with the subnet's prefix length.
    pub gateway: Option<Ipv4Net>,
    pub mtu: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachSpec {
    pub netns: PathBuf,
    pub bridge: String,
    pub host_if: String,
    pub ifname: String,
    pub mac: [u8; 6],
    pub addr: Ipv4Net,
    /// Set the sandbox's default route via this address.
    pub default_via: Option<Ipv4Addr>,
    pub mtu: u32,
    /// Hairpin mode on the bridge port (the endpoint publishes ports).
    pub hairpin: bool,
}

/// A veth pair with both ends in ferryd's namespace (the Docker plugin's Join).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethPairSpec {
    pub bridge: String,
    pub host_if: String,
    /// The end dockerd moves into the container.
    pub peer_if: String,
    pub peer_mac: [u8; 6],
    pub mtu: u32,
    /// Hairpin mode on the bridge port (the endpoint publishes ports).
    pub hairpin: bool,
}

pub trait KernelOps: Send + Sync + 'static {
    fn ensure_bridge(
        &self,
        spec: &BridgeSpec,
    ) -> impl Future<Output = Result<(), KernelError>> + Send;
    /// Delete a link in ferryd's namespace; a missing link is success.
    fn delete_link(&self, name: &str) -> impl Future<Output = Result<(), KernelError>> + Send;
    fn create_netns(&self, path: &Path) -> impl Future<Output = Result<(), KernelError>> + Send;
    /// Unpin and remove a namespace file; a missing one is success.
    fn remove_netns(&self, path: &Path) -> impl Future<Output = Result<(), KernelError>> + Send;
    fn attach(&self, spec: &AttachSpec) -> impl Future<Output = Result<(), KernelError>> + Send;
    fn set_default_route(
        &self,
        netns: &Path,
        via: Ipv4Addr,
    ) -> impl Future<Output = Result<(), KernelError>> + Send;
    fn link_names(&self) -> impl Future<Output = Result<Vec<String>, KernelError>> + Send;
    fn route_destinations(&self) -> impl Future<Output = Result<Vec<Ipv4Net>, KernelError>> + Send;
    /// The kind of the link `name` in ferryd's namespace ("bridge", "veth", "" for none
    /// given), or None when there is no such link.
    fn link_kind(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<String>, KernelError>> + Send;
    /// Make a veth pair in ferryd's namespace, the host end on a bridge and up.
    fn create_veth_pair(
        &self,
        spec: &VethPairSpec,
    ) -> impl Future<Output = Result<(), KernelError>> + Send;
    /// Run an nftables script as one transaction; returns what it printed.
    fn nft(&self, script: &str) -> impl Future<Output = Result<String, KernelError>> + Send;
    /// Set a sysctl in ferryd's namespace (`["net", "ipv4", "ip_forward"]`); true when
    /// the value changed.
    fn sysctl(
        &self,
        key: &[&str],
        value: &str,
    ) -> impl Future<Output = Result<bool, KernelError>> + Send;
}

/// The real kernel, through one rtnetlink connection in ferryd's own namespace plus a
/// short-lived one inside each sandbox being configured.
pub struct Netlink {
    handle: rtnetlink::Handle,
    nft: std::sync::OnceLock<Arc<Nft>>,
}

impl Netlink {
    /// Must be called inside a tokio runtime.
    pub fn new() -> Result<Self, KernelError> {
        let (conn, handle, _) = rtnetlink::new_connection()
            .map_err(|e| KernelError::io("open", "netlink socket", e))?;
        tokio::spawn(conn);
        Ok(Netlink {
            handle,
            nft: Default::default(),
        })
    }

    fn nft_ctx(&self) -> Result<Arc<Nft>, KernelError> {
        if let Some(n) = self.nft.get() {
            return Ok(n.clone());
        }
        let n = Arc::new(Nft::open()?);
        Ok(self.nft.get_or_init(|| n).clone())
    }

    async fn configure_inside(&self, s: &AttachSpec) -> Result<(), KernelError> {
        let nh = netns::netlink_in(&s.netns)?;
        let idx = get::index_of(&nh, &s.ifname)
            .await?
            .ok_or_else(|| KernelError::other("find", &s.ifname, "veth peer missing in sandbox"))?;
        addr::add(&nh, idx, &s.ifname, s.addr).await?;
        up::up(&nh, idx, &s.ifname).await?;
        if let Some(gw) = s.default_via {
            route::replace_default(&nh, gw).await?;
        }
        Ok(())
    }
}

impl KernelOps for Netlink {
    async fn ensure_bridge(&self, spec: &BridgeSpec) -> Result<(), KernelError> {
        bridge::ensure(&self.handle, &spec.name, spec.gateway, spec.mtu)
            .await
            .map(|_| ())
    }

    async fn delete_link(&self, name: &str) -> Result<(), KernelError> {
        del::delete(&self.handle, name).await
    }

    async fn create_netns(&self, path: &Path) -> Result<(), KernelError> {
        let p = path.to_path_buf();
        tokio::task::spawn_blocking(move || netns::create(&p))
            .await
            .map_err(|e| {
                KernelError::other("create netns", path.display().to_string(), e.to_string())
            })?
    }

    async fn remove_netns(&self, path: &Path) -> Result<(), KernelError> {
        netns::remove(path)
    }

    async fn attach(&self, s: &AttachSpec) -> Result<(), KernelError> {
        let bridge_index = get::index_of(&self.handle, &s.bridge)
            .await?
            .ok_or_else(|| KernelError::other("attach to bridge", &s.bridge, "no such bridge"))?;
        let ns = File::open(&s.netns)
            .map_err(|e| KernelError::io("open netns", s.netns.display().to_string(), e))?;
        let pair = veth::VethPair {
            host_if: &s.host_if,
            bridge_index,
            peer_name: &s.ifname,
            peer_netns: &ns,
            peer_mac: s.mac,
            mtu: s.mtu,
        };
        veth::create(&self.handle, &pair).await?;
        let hairpin = async {
            match s.hairpin {
                true => port::hairpin(&self.handle, &s.host_if).await,
                false => Ok(()),
            }
        };
        if let Err(e) = futures::future::try_join(hairpin, self.configure_inside(s)).await {
            let _ = del::delete(&self.handle, &s.host_if).await;
            return Err(e);
        }
        Ok(())
    }

    async fn set_default_route(&self, netns: &Path, via: Ipv4Addr) -> Result<(), KernelError> {
        let nh = netns::netlink_in(netns)?;
        route::replace_default(&nh, via).await
    }

    async fn link_names(&self) -> Result<Vec<String>, KernelError> {
        get::names(&self.handle).await
    }

    async fn route_destinations(&self) -> Result<Vec<Ipv4Net>, KernelError> {
        route::destinations(&self.handle).await
    }

    async fn link_kind(&self, name: &str) -> Result<Option<String>, KernelError> {
        kind::kind_of(&self.handle, name).await
    }

    async fn create_veth_pair(&self, spec: &VethPairSpec) -> Result<(), KernelError> {
        pair::create(&self.handle, spec).await
    }

    async fn nft(&self, script: &str) -> Result<String, KernelError> {
        let nft = self.nft_ctx()?;
        let script = script.to_string();
        tokio::task::spawn_blocking(move || nft.run(&script))
            .await
            .map_err(|e| KernelError::other("apply", "nftables ruleset", e.to_string()))?
    }

    async fn sysctl(&self, key: &[&str], value: &str) -> Result<bool, KernelError> {
        sysctl::set(key, value)
    }
}
