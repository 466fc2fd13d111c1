//! IpamDriver: pools and addresses Docker asks ferry's IPAM for.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use ferry_core::docker::plugin::{
    parse_addr, ReleaseAddressRequest, ReleasePoolRequest, RequestAddressRequest,
    RequestAddressResponse, RequestPoolRequest, RequestPoolResponse,
};
use ferry_core::ipam::pools::next_pool;
use ferry_core::ipam::AddressPool;
use ferry_core::remote::{IpamPool, DOCKER_IPAM_OWNER};
use ferry_core::validate::{first_host, ip_range, usable_subnet};
use ferry_core::CoreError;
use ferry_kernel::KernelOps;

use super::overlay::overlay_of_pool;
use super::{no_ipv6, no_pool, pool_key, pool_mut, taken_subnets, with_len};
use crate::error::Result;
use crate::ops::{new_id, Daemon};
use crate::overlay::DOCKER_HELD;
use crate::state::Key;

impl<K: KernelOps> Daemon<K> {
    pub async fn plugin_request_pool(
        &self,
        req: RequestPoolRequest,
    ) -> Result<RequestPoolResponse> {
        if req.v6 {
            return Err(no_ipv6().into());
        }
        let mut st = self.state.lock().await;
        if let Some(resp) = self.overlay_pool(&mut st, &req)? {
            return Ok(resp);
        }
        let routes = self.kernel.route_destinations().await?;
        let taken = taken_subnets(&st);
        let mut cursor = st.meta.pool_cursor;
        let subnet = match req.pool.trim() {
            "" => {
                let (subnet, c) = next_pool(cursor, &taken, &routes)?;
                cursor = Some(c);
                subnet
            }
            // The rules of `network create --subnet`, as dockerd's default IPAM keeps them.
            s => usable_subnet(s, &taken)?,
        };
        let range = match req.sub_pool.trim() {
            "" => None,
            r => Some(ip_range(r, subnet)?),
        };
        let id = format!("ferry-{}", &new_id()[..24]);
        let keys = [Key::PluginPool(id.clone()), Key::Meta];
        let staged = self.stage(&mut st, &keys, |st| {
            let pool = AddressPool::new(
                subnet.into(),
                first_host(subnet.into()),
                range.map(IpNet::V4),
            );
            st.plugin.pools.insert(
                id.clone(),
                IpamPool {
                    id: id.clone(),
                    pool: Some(pool),
                    network_id: None,
                    released: false,
                },
            );
            st.meta.pool_cursor = cursor;
            Ok(())
        })?;
        self.commit_staged(&mut st, staged)?;
        Ok(RequestPoolResponse {
            pool_id: id,
            pool: subnet.to_string(),
            data: BTreeMap::new(),
        })
    }

    pub async fn plugin_request_address(
        &self,
        req: RequestAddressRequest,
    ) -> Result<RequestAddressResponse> {
        let asked = match req.address.trim() {
            "" => None,
            a => Some(IpAddr::from(parse_addr("address", a)?)),
        };
        let mut st = self.state.lock().await;
        if let Some(ov) = overlay_of_pool(&st, &req.pool_id) {
            let pool = st.networks[&ov]
                .pool
                .as_ref()
                .expect("overlays have a subnet");
            if req.is_gateway() {
                // The overlay's, the same on every host: nothing to allocate.
                return match asked {
                    Some(g) if g != pool.gateway => Err(CoreError::Invalid(format!(
                        "overlay {} has gateway {}, not {g}",
                        st.networks[&ov].name, pool.gateway
                    ))
                    .into()),
                    _ => Ok(RequestAddressResponse {
                        address: with_len(pool.gateway, pool),
                        data: BTreeMap::new(),
                    }),
                };
            }
            // This host's block of the overlay (and a static address) come from etcd.
            drop(st);
            self.prepare_overlay(&ov, asked, DOCKER_HELD, &[]).await?;
            st = self.state.lock().await;
        }
        let key = pool_key(&st, &req.pool_id);
        let net_name = match &key {
            Key::Net(id) => st.networks[id].name.clone(),
            _ => req.pool_id.clone(),
        };
        let staged = self.stage(&mut st, &[key], |st| {
            let pool = pool_mut(st, &req.pool_id).ok_or_else(|| no_pool(&req.pool_id))?;
            request_address(pool, asked, req.is_gateway(), &net_name)
        })?;
        let address = self.commit_staged(&mut st, staged)?.plan;
        Ok(RequestAddressResponse {
            address,
            data: BTreeMap::new(),
        })
    }

    /// Frees an address only while no endpoint holds it; anything else (the gateway, an
    /// address already free or handed out again) is left alone, successfully.
    pub async fn plugin_release_address(&self, req: ReleaseAddressRequest) -> Result<()> {
        let mut st = self.state.lock().await;
        let ip = IpAddr::from(parse_addr("address", &req.address)?);
        let keys = [pool_key(&st, &req.pool_id)];
        let staged = self.stage(&mut st, &keys, |st| {
            let pool = pool_mut(st, &req.pool_id);
            let held = pool.filter(|p| p.owner(ip) == Some(DOCKER_IPAM_OWNER));
            Ok(held.map(|p| p.release(ip)).is_some())
        })?;
        if !staged.plan {
            staged.abandon(&mut st);
            return Ok(());
        }
        self.commit_staged(&mut st, staged).map(drop)
    }

    /// Docker releases the pool before DeleteNetwork: a bound pool is only marked, and
    /// goes with its network.
    pub async fn plugin_release_pool(&self, req: ReleasePoolRequest) -> Result<()> {
        let mut st = self.state.lock().await;
        let keys = [Key::PluginPool(req.pool_id.clone())];
        let staged = self.stage(&mut st, &keys, |st| {
            let Some(rec) = st.plugin.pools.get(&req.pool_id) else {
                return Ok(());
            };
            // An overlay's pool goes now: the overlay outlives Docker's network.
            let bound = rec
                .network_id
                .as_ref()
                .and_then(|n| st.networks.get(n))
                .is_some_and(|n| n.overlay().is_none());
            match (bound, st.plugin.pools.get_mut(&req.pool_id)) {
                (true, Some(rec)) => rec.released = true,
                _ => drop(st.plugin.pools.remove(&req.pool_id)),
            }
            Ok(())
        })?;
        self.commit_staged(&mut st, staged).map(drop)
    }
}

impl<K: KernelOps> Daemon<K> {
    /// RequestPool for exactly an overlay's subnet: a pool bound to the overlay from the
    /// start (its addresses are this host's block of the overlay). None for any other.
    fn overlay_pool(
        &self,
        st: &mut crate::state::State,
        req: &RequestPoolRequest,
    ) -> Result<Option<RequestPoolResponse>> {
        let Ok(asked) = req.pool.trim().parse::<IpNet>() else {
            return Ok(None);
        };
        let Some(net) = st
            .networks
            .values()
            .find(|n| n.overlay().is_some() && n.subnet() == Some(asked))
        else {
            return Ok(None);
        };
        if !req.sub_pool.trim().is_empty() {
            return Err(CoreError::Invalid(format!(
                "overlay {}: --ip-range is not supported through Docker (each host allocates in its own blocks)",
                net.name
            ))
            .into());
        }
        let (net_id, subnet) = (net.id.clone(), asked);
        let id = format!("ferry-{}", &new_id()[..24]);
        let keys = [Key::PluginPool(id.clone())];
        let staged = self.stage(st, &keys, |st| {
            st.plugin.pools.insert(
                id.clone(),
                IpamPool {
                    id: id.clone(),
                    pool: None,
                    network_id: Some(net_id),
                    released: false,
                },
            );
            Ok(())
        })?;
        self.commit_staged(st, staged)?;
        Ok(Some(RequestPoolResponse {
            pool_id: id,
            pool: subnet.to_string(),
            data: BTreeMap::new(),
        }))
    }
}

/// Docker's RequestAddress on one pool: the gateway (the asked one, or the first host),
/// an asked address, or the next free one; answered as `a.b.c.d/len`.
fn request_address(
    pool: &mut AddressPool,
    asked: Option<IpAddr>,
    gateway: bool,
    net_name: &str,
) -> std::result::Result<String, CoreError> {
    let ip = if gateway {
        let ip = asked.unwrap_or_else(|| first_host(pool.subnet));
        let s = pool.subnet;
        if !s.contains(&ip) || ip == s.network() || ip == s.broadcast() {
            return Err(CoreError::GatewayOutOfRange(ip.to_string()));
        }
        if pool.owner(ip).is_some() {
            return Err(CoreError::AddressInUse(ip));
        }
        pool.gateway = ip;
        ip
    } else if let Some(ip) = asked {
        if pool.owner(ip).is_some() {
            return Err(CoreError::AddressInUse(ip));
        }
        pool.allocate_static(ip, DOCKER_IPAM_OWNER)?;
        ip
    } else {
        pool.allocate_dynamic(DOCKER_IPAM_OWNER, net_name)?
    };
    Ok(with_len(ip, pool))
}
