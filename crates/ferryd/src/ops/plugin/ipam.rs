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

use super::{no_ipv6, no_pool, pool_key, pool_mut, taken_subnets, with_len};
use crate::error::Result;
use crate::ops::{new_id, Daemon};
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
        let mut st = self.state.lock().await;
        let key = pool_key(&st, &req.pool_id);
        let net_name = match &key {
            Key::Net(id) => st.networks[id].name.clone(),
            _ => req.pool_id.clone(),
        };
        let asked = match req.address.trim() {
            "" => None,
            a => Some(IpAddr::from(parse_addr("address", a)?)),
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
            let bound = rec
                .network_id
                .as_ref()
                .is_some_and(|n| st.networks.contains_key(n));
            match (bound, st.plugin.pools.get_mut(&req.pool_id)) {
                (true, Some(rec)) => rec.released = true,
                _ => drop(st.plugin.pools.remove(&req.pool_id)),
            }
            Ok(())
        })?;
        self.commit_staged(&mut st, staged).map(drop)
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
