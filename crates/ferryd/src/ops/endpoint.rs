//! `network connect` / `disconnect`: the planners (ferry_core::plan) decide, ferryd
//! applies: one store transaction ([`Daemon::stage`]), then the firewall, /etc/hosts
//! and the kernel.

use std::net::IpAddr;

use ferry_core::docker::network::{ConnectRequest, DisconnectRequest};
use ferry_core::plan::attach::{unplan_attach, Detached, Live};
use ferry_core::plan::connect::{endpoint_keys, plan_connect, plan_disconnect, Asked};
use ferry_kernel::KernelOps;

use super::{new_id, Daemon, FirewallFollows, SandboxTurn};
use crate::error::Result;
use crate::state::{Key, State};

impl<K: KernelOps> Daemon<K> {
    /// `network connect`: resolve, plan and commit; then, for a running sandbox, the
    /// firewall's elements, its /etc/hosts and the kernel's link.
    pub async fn connect(&self, net_ref: &str, req: ConnectRequest) -> Result<()> {
        let asked = Asked::from_request(req.endpoint_config.as_ref())?;
        let name = self.state.lock().await.sandbox_name(&req.container);
        self.prepare_overlay(net_ref, asked.static_ip, &name, &asked.aliases)
            .await?;
        // plughost: an address from an IPAM plugin is leased before anything is planned.
        self.lease_addresses(&req.container, Some(net_ref)).await?;
        let (turn, st) = self.sandbox_turn(&req.container).await?;
        let net_id = st.network_id(net_ref)?;
        self.connect_in_turn(&turn, st, &net_id, asked).await?;
        if let Err(e) = self.settle_way_out(&turn).await {
            // dockerd fails the join it cannot give a way out, and takes it back.
            let st = self.state.lock().await;
            if let Err(u) = self.disconnect_in_turn(&turn, st, &net_id).await {
                tracing::warn!("connect: taking it back: {u}");
            }
            return Err(e);
        }
        Ok(())
    }

    /// A connect in the sandbox's turn, with the state lock the caller took after it.
    pub(crate) async fn connect_in_turn(
        &self,
        turn: &SandboxTurn,
        st: tokio::sync::MutexGuard<'_, State>,
        net_id: &str,
        asked: Asked,
    ) -> Result<()> {
        st.ferry_may_join(net_id)?;
        let (sb_id, net_id) = (turn.id.clone(), net_id.to_string());
        let sb = &st.sandboxes[&sb_id];
        let live = sb.is_running().then(|| Live {
            netns: self.netns_path(sb),
            endpoint_id: new_id(),
        });
        let keys = endpoint_keys(&sb_id, &net_id);
        let (mut st, staged) = self
            .stage_taking_addresses(st, &keys, |st| {
                let mut plan = plan_connect(st, &sb_id, &net_id, asked.clone(), live.clone())?;
                // plughost: a MAC an IPAM plugin was told.
                self.lease_macs(st, &sb_id, plan.attach.as_mut_slice());
                Ok(plan)
            })
            .await?;
        if let Err(e) = self.check_host_free(&staged.plan.published).await {
            staged.abandon(&mut st);
            return Err(e);
        }
        let applied = self
            .apply_staged(&mut st, staged, FirewallFollows::BeforeLinks)
            .await?;
        let Some(spec) = applied.plan.attach else {
            return Ok(());
        };
        if let Err(e) = self.attach_names() {
            self.take_back(&mut st, applied.before, &keys, "undoing a connect")
                .await;
            return Err(e);
        }
        // The host link of the endpoint that gives the default route up, if one does.
        let gives_up = applied.plan.default_from.as_ref().and_then(|n| {
            let l = st.sandboxes[&sb_id].endpoint(n)?.live.as_ref()?;
            l.host_if.as_ref().map(|h| h.to_string())
        });
        drop(st);
        // The kernel work runs without the state lock; this sandbox's turn is still held.
        // Its one step, the link, takes back what it made if it fails (plughost:
        // attach_endpoint is kernel.attach, or a plugin's Join).
        if let Err(e) = self.attach_endpoint(&spec).await {
            let mut st = self.state.lock().await;
            self.undo_connect(
                &mut st,
                &sb_id,
                &net_id,
                applied.plan.cursor_before,
                &applied.plan.default_from,
            )
            .await;
            return Err(e);
        }
        if let Some(h) = gives_up {
            // plughost: a plugin's endpoint that held the role hears so, as from dockerd.
            self.default_route_lost(&h).await;
        }
        Ok(())
    }

    /// Take back a connect whose kernel work failed after the state lock was let go:
    /// only this endpoint and its address, since other operations may have changed the
    /// same network meanwhile. (attach removes what it made before it fails.)
    async fn undo_connect(
        &self,
        st: &mut State,
        sb_id: &str,
        net_id: &str,
        cursor_before: Option<IpAddr>,
        default_from: &Option<String>,
    ) {
        unplan_attach(st, sb_id, net_id, false, cursor_before);
        if let Some(sb) = st.sandboxes.get_mut(sb_id) {
            sb.endpoints.retain(|e| e.network_id != net_id);
            // The endpoint this one took the default route from has it back (the kernel
            // still routes through it: the failed attach never replaced the route).
            let from = sb
                .endpoints
                .iter_mut()
                .filter(|e| Some(&e.network_id) == default_from.as_ref());
            for l in from.filter_map(|e| e.live.as_mut()) {
                l.default_route = true;
            }
        }
        let keys = [Key::Net(net_id.to_string()), Key::Sbx(sb_id.to_string())];
        self.settle(st, &keys, "undoing a connect").await;
    }

    pub async fn disconnect(&self, net_ref: &str, req: DisconnectRequest) -> Result<()> {
        let (turn, st) = self.sandbox_turn(&req.container).await?;
        let net_id = st.network_id(net_ref)?;
        // The way out ferry added is not the user's to take: the sandbox is not connected
        // to docker_gwbridge as far as its inspect says, nor as dockerd would say.
        let sb = &st.sandboxes[&turn.id];
        if sb
            .endpoint(&net_id)
            .is_some_and(|e| !e.membership.is_asked())
        {
            return Err(ferry_core::CoreError::NotConnected {
                sandbox: sb.name.clone(),
                network: st.networks[&net_id].name.clone(),
            }
            .into());
        }
        self.disconnect_in_turn(&turn, st, &net_id).await?;
        // The network that leaves may have been the sandbox's way out, or the reason for
        // the gateway bridge: the disconnect stands either way.
        if let Err(e) = self.settle_way_out(&turn).await {
            tracing::warn!("disconnect: {e}");
        }
        Ok(())
    }

    /// A disconnect in the sandbox's turn, with the state lock the caller took after it.
    pub(crate) async fn disconnect_in_turn(
        &self,
        turn: &SandboxTurn,
        mut st: tokio::sync::MutexGuard<'_, State>,
        net_id: &str,
    ) -> Result<()> {
        let (sb_id, net_id) = (turn.id.clone(), net_id.to_string());
        let netns = self.netns_path(&st.sandboxes[&sb_id]);
        let keys = endpoint_keys(&sb_id, &net_id);
        let staged = self.stage(&mut st, &keys, |st| plan_disconnect(st, &sb_id, &net_id))?;
        let plan = self
            .apply_staged(&mut st, staged, FirewallFollows::Teardown("disconnect"))
            .await?
            .plan;
        // The veth is retired (down and renamed: well under a millisecond) before the
        // state lock goes: its address is free in the state now, and another connect must
        // not bring the same address and MAC up on the bridge while the old pair is up.
        let removed = match &plan.detached {
            // plughost: detach_link is kernel.delete_link, or a plugin's Leave.
            Some(Detached {
                host_if: Some(h), ..
            }) => Some(self.detach_link(h).await),
            Some(u) => Some(self.kernel.delete_link_in(&netns, &u.ifname).await),
            None => None,
        };
        if let Some(Err(e)) = removed {
            tracing::warn!("disconnect: {e}; reconcile will remove it");
        }
        drop(st);
        // The default route is the sandbox's own: this sandbox's turn is still held.
        // plughost: the endpoint that took it may be a plugin's.
        if let Some((gw, gw_if)) = plan.new_default {
            // plughost: kernel.set_default_route, or a plugin endpoint's gateway role.
            if let Err(e) = self.default_route_moved(&netns, gw, gw_if.as_deref()).await {
                tracing::warn!("disconnect: moving the default route: {e}");
            }
        }
        Ok(())
    }
}
