//! A running sandbox's way out, settled after its endpoints changed (a start, a
//! connect, a disconnect): who carries the default route, and whether it needs the
//! gateway bridge (`docker_gwbridge`) because no network of its own gives one.
//!
//! The decisions are ferry_core's ([`move_default_route`], [`plan_gateway_service`]);
//! this module applies them in the sandbox's turn, with the ordinary connect and
//! disconnect, so the gateway bridge's endpoint is planned, committed, wired, firewalled
//! and undone as any other.

use ferry_core::model::Membership;
use ferry_core::plan::attach::{default_route_if, default_route_network, move_default_route};
use ferry_core::plan::connect::Asked;
use ferry_core::plan::gateway_service::{
    gateway_bridge_request, plan_gateway_service, GatewayServiceStep, GATEWAY_BRIDGE,
};
use ferry_kernel::KernelOps;

use super::{Daemon, SandboxTurn};
use crate::error::Result;
use crate::state::{Key, State};
use tokio::sync::MutexGuard;

impl<K: KernelOps> Daemon<K> {
    /// Settle the way out of the sandbox whose turn this is; nothing for one that does
    /// not run. One look at the state when there is nothing to do (every connect and
    /// disconnect asks).
    pub(crate) async fn settle_way_out(&self, turn: &SandboxTurn) -> Result<()> {
        let st = self
            .settle_default_route(turn, self.state.lock().await)
            .await?;
        match plan_gateway_service(&st, &turn.id) {
            GatewayServiceStep::Keep => Ok(()),
            GatewayServiceStep::Remove(net_id) => self.disconnect_in_turn(turn, st, &net_id).await,
            GatewayServiceStep::Add(ports) => {
                let (st, net_id) = self.gateway_bridge(st).await?;
                let asked = Asked {
                    membership: Membership::GatewayService,
                    ports,
                    ..Asked::default()
                };
                self.connect_in_turn(turn, st, &net_id, asked).await
            }
        }
    }

    /// An endpoint that could not keep the default route (a plugin's whose `Join` named
    /// no gateway) left it: the next endpoint in dockerd's order takes it, in the state
    /// and in the kernel. Hands the state lock back.
    async fn settle_default_route<'a>(
        &'a self,
        turn: &SandboxTurn,
        mut st: MutexGuard<'a, State>,
    ) -> Result<MutexGuard<'a, State>> {
        let running = st.sandboxes.get(&turn.id).is_some_and(|s| s.is_running());
        if !running || default_route_network(&st, &turn.id).is_some() {
            return Ok(st);
        }
        let Some(gw) = move_default_route(&mut st, &turn.id) else {
            return Ok(st);
        };
        let host_if = default_route_if(&st, &turn.id);
        let keys = [Key::Sbx(turn.id.clone())];
        self.commit_or_log(&st, &keys, "moving the default route");
        let netns = self.netns_path(&st.sandboxes[&turn.id]);
        drop(st);
        // plughost: kernel.set_default_route, or a plugin endpoint's gateway role.
        self.default_route_moved(&netns, gw, host_if.as_deref())
            .await?;
        Ok(self.state.lock().await)
    }

    /// The gateway bridge's ID, made as dockerd makes it if it is not there (a user may
    /// have made it beforehand, with a subnet of their choosing). Hands the state lock
    /// back.
    async fn gateway_bridge<'a>(
        &'a self,
        st: MutexGuard<'a, State>,
    ) -> Result<(MutexGuard<'a, State>, String)> {
        if let Ok(id) = st.network_id(GATEWAY_BRIDGE) {
            return Ok((st, id));
        }
        drop(st);
        let made = self.create_network(gateway_bridge_request()).await;
        let st = self.state.lock().await;
        let id = match made {
            Ok(id) => id,
            // Another sandbox made it meanwhile.
            Err(e) => st.network_id(GATEWAY_BRIDGE).map_err(|_| e)?,
        };
        Ok((st, id))
    }
}
