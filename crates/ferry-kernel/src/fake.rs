//! A recording fake of the kernel edge: every request is written down as a line
//! ("attach fy0123 eth0 10.0.0.2/24 via 10.0.0.1"), links and namespaces are tracked
//! so reconcile sees a consistent world, and a chosen request can be made to fail so
//! rollback paths are tested without root.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Mutex;

use ipnet::{IpNet, Ipv4Net};

use crate::fault::{AttachStep, Faults};
use crate::{AttachSpec, BridgeSpec, KernelError, KernelOps, LinkSpec, VethPairSpec, VxlanSpec};

#[derive(Default)]
pub struct Recorder {
    pub log: Mutex<Vec<String>>,
    pub links: Mutex<BTreeSet<String>>,
    pub netns: Mutex<BTreeSet<String>>,
    /// Links that are bridges (made by ensure_bridge, or by a test as "the user's").
    pub bridges: Mutex<BTreeSet<String>>,
    /// The two ends of each veth pair made by create_veth_pair: deleting one deletes both.
    pub pairs: Mutex<Vec<(String, String)>>,
    /// Requests whose line starts with this fail with EPERM.
    pub fail_on: Mutex<Option<String>>,
    /// An attach or a link deletion whose line contains this waits for a permit of the
    /// semaphore before it is carried out (and checked against `fail_on`): a test's way
    /// to hold one request in flight. The log shows `held <line>` while it waits.
    pub hold_on: Mutex<Option<(String, std::sync::Arc<tokio::sync::Semaphore>)>>,
    /// The attach step armed to fail, as `FERRY_FAULT` arms it for the real kernel
    /// ([`crate::fault`]): ferryd's own steps ask [`KernelOps::fault`]; an attach fails
    /// whole, making nothing, when a kernel step of it is armed.
    pub fault_at: Mutex<Option<AttachStep>>,
}

impl Recorder {
    fn record(&self, line: String) -> Result<(), KernelError> {
        let fail = self
            .fail_on
            .lock()
            .expect("lock")
            .as_ref()
            .is_some_and(|p| line.starts_with(p.as_str()));
        self.log.lock().expect("lock").push(line.clone());
        if fail {
            return Err(KernelError::Failed {
                action: "fake",
                object: line,
                message: "injected failure".into(),
                errno: Some(libc::EPERM),
            });
        }
        Ok(())
    }

    async fn hold(&self, line: &str) {
        let gate = match &*self.hold_on.lock().expect("lock") {
            Some((pat, sem)) if line.contains(pat.as_str()) => sem.clone(),
            _ => return,
        };
        self.log.lock().expect("lock").push(format!("held {line}"));
        // A closed semaphore lets everything through.
        let _ = gate.acquire().await.map(|p| p.forget());
    }

    pub fn lines(&self) -> Vec<String> {
        self.log.lock().expect("lock").clone()
    }
}

impl KernelOps for Recorder {
    async fn ensure_bridge(&self, s: &BridgeSpec) -> Result<(), KernelError> {
        self.record(format!(
            "bridge {} {:?} mtu {}",
            s.name,
            s.gateway.map(|g| g.to_string()),
            s.mtu
        ))?;
        self.links.lock().expect("lock").insert(s.name.clone());
        self.bridges.lock().expect("lock").insert(s.name.clone());
        Ok(())
    }
    async fn delete_link_in(&self, netns: &Path, name: &str) -> Result<(), KernelError> {
        self.record(format!("delete {name} in {}", netns.display()))
    }
    async fn delete_link(&self, name: &str) -> Result<(), KernelError> {
        let line = format!("delete {name}");
        self.hold(&line).await;
        self.record(line)?;
        let mut links = self.links.lock().expect("lock");
        links.remove(name);
        self.bridges.lock().expect("lock").remove(name);
        self.pairs.lock().expect("lock").retain(|(a, b)| {
            let hit = a == name || b == name;
            if hit {
                links.remove(a);
                links.remove(b);
            }
            !hit
        });
        Ok(())
    }
    async fn create_netns(&self, path: &Path) -> Result<(), KernelError> {
        self.record(format!("netns add {}", path.display()))?;
        self.netns
            .lock()
            .expect("lock")
            .insert(path.display().to_string());
        Ok(())
    }
    async fn remove_netns(&self, path: &Path) -> Result<(), KernelError> {
        self.record(format!("netns del {}", path.display()))?;
        self.netns
            .lock()
            .expect("lock")
            .remove(&path.display().to_string());
        Ok(())
    }
    async fn attach(&self, s: &AttachSpec) -> Result<(), KernelError> {
        let via = s
            .default_via
            .map(|g| format!(" via {g}"))
            .unwrap_or_default();
        let line = match &s.link {
            LinkSpec::Veth(v) => format!("attach {} {} {}{via}", v.host_if, s.ifname, s.addr),
            LinkSpec::Macvlan(m) => {
                format!("macvlan {} on {} {}{via}", s.ifname, m.parent, s.addr)
            }
            LinkSpec::Plugin(p) => {
                format!("plugin link {} {} {}{via}", p.host_if, s.ifname, s.addr)
            }
        };
        self.hold(&line).await;
        let faults = Faults::armed(*self.fault_at.lock().expect("lock"));
        for step in [
            AttachStep::Veth,
            AttachStep::Move,
            AttachStep::Address,
            AttachStep::Up,
        ] {
            faults.check(step)?;
        }
        if s.default_via.is_some() {
            faults.check(AttachStep::Route)?;
        }
        self.record(line)?;
        if let Some(h) = s.host_if() {
            self.links.lock().expect("lock").insert(h.to_string());
        }
        Ok(())
    }
    async fn set_default_route(&self, netns: &Path, via: IpAddr) -> Result<(), KernelError> {
        self.record(format!("route {} via {via}", netns.display()))
    }
    async fn link_names(&self) -> Result<Vec<String>, KernelError> {
        Ok(self.links.lock().expect("lock").iter().cloned().collect())
    }
    async fn route_destinations(&self) -> Result<Vec<IpNet>, KernelError> {
        Ok(vec![])
    }
    async fn link_kind(&self, name: &str) -> Result<Option<String>, KernelError> {
        if self.bridges.lock().expect("lock").contains(name) {
            return Ok(Some("bridge".into()));
        }
        Ok(self
            .links
            .lock()
            .expect("lock")
            .contains(name)
            .then(|| "veth".to_string()))
    }
    async fn create_veth_pair(&self, s: &VethPairSpec) -> Result<(), KernelError> {
        let hairpin = if s.hairpin { " hairpin" } else { "" };
        self.record(format!(
            "veth {} {} on {}{hairpin}",
            s.host_if, s.peer_if, s.bridge
        ))?;
        let mut links = self.links.lock().expect("lock");
        links.insert(s.host_if.clone());
        links.insert(s.peer_if.clone());
        self.pairs
            .lock()
            .expect("lock")
            .push((s.host_if.clone(), s.peer_if.clone()));
        Ok(())
    }
    /// No host process holds anything here (a query: not recorded).
    async fn host_port_free(
        &self,
        _proto: ferry_core::ports::Proto,
        _ip: Ipv4Addr,
        _port: u16,
    ) -> Result<bool, KernelError> {
        Ok(true)
    }
    /// Scripts are recorded; a `list` finds nothing, as in a kernel with no ruleset.
    async fn nft(&self, script: &str) -> Result<String, KernelError> {
        self.record(format!("nft {}", script.trim_end().replace('\n', "; ")))?;
        if script.starts_with("list ") {
            return Err(KernelError::Failed {
                action: "fake",
                object: script.trim().into(),
                message: "No such file or directory".into(),
                errno: Some(libc::ENOENT),
            });
        }
        Ok(String::new())
    }
    async fn sysctl(&self, key: &[&str], value: &str) -> Result<bool, KernelError> {
        self.record(format!("sysctl {}={value}", key.join(".")))?;
        Ok(false)
    }
    async fn ensure_vxlan(&self, s: &VxlanSpec) -> Result<(), KernelError> {
        self.record(format!(
            "vxlan {} vni {} local {} port {} mtu {}",
            s.name, s.vni, s.local, s.port, s.mtu
        ))?;
        self.links.lock().expect("lock").insert(s.name.clone());
        Ok(())
    }
    async fn overlay_entry_replace(
        &self,
        dev: &str,
        mac: [u8; 6],
        ip: Ipv4Addr,
        vtep: Ipv4Addr,
    ) -> Result<(), KernelError> {
        let mac = ferry_core::model::mac_string(&mac);
        self.record(format!("entry {dev} {ip} {mac} via {vtep}"))
    }
    async fn overlay_entry_delete(
        &self,
        dev: &str,
        mac: [u8; 6],
        ip: Ipv4Addr,
    ) -> Result<(), KernelError> {
        let mac = ferry_core::model::mac_string(&mac);
        self.record(format!("unentry {dev} {ip} {mac}"))
    }
    /// The fake programs nothing it could read back (a query: not recorded).
    async fn overlay_entries(&self, _dev: &str) -> Result<Vec<(Ipv4Addr, [u8; 6])>, KernelError> {
        Ok(Vec::new())
    }
    async fn tunnel_route_replace(
        &self,
        dev: &str,
        dst: Ipv4Net,
        via: Option<Ipv4Addr>,
    ) -> Result<(), KernelError> {
        match via {
            Some(v) => self.record(format!("route {dst} via {v} dev {dev}")),
            None => self.record(format!("route {dst} dev {dev}")),
        }
    }
    async fn tunnel_route_delete(&self, dev: &str, dst: Ipv4Net) -> Result<(), KernelError> {
        self.record(format!("unroute {dst} dev {dev}"))
    }
    /// The fake programs nothing it could read back (a query: not recorded).
    async fn tunnel_routes(&self, _dev: &str) -> Result<Vec<Ipv4Net>, KernelError> {
        Ok(Vec::new())
    }
    /// The fake's underlay: `eth0`, MTU 1500 (a query: not recorded).
    async fn underlay_of(&self, _ip: Ipv4Addr) -> Result<(String, u32), KernelError> {
        Ok(("eth0".into(), 1500))
    }
    async fn address_of(&self, name: &str) -> Result<Ipv4Addr, KernelError> {
        Err(KernelError::other(
            "find the address of",
            name,
            "the fake has no interfaces",
        ))
    }
    async fn remove_address(&self, name: &str, net: IpNet) -> Result<(), KernelError> {
        self.record(format!("unaddr {name} {net}"))
    }
    /// An endpoint whose host veth the fake does not know is wired again (recorded as an
    /// attach); otherwise nothing is wrong with it.
    async fn adopt_link(&self, s: &crate::AdoptSpec) -> Result<(), KernelError> {
        self.record(format!("adopt {} as {} {}", s.src, s.ifname, s.addr))
    }
    async fn hand_back_link(
        &self,
        netns: &Path,
        ifname: &str,
        back: &str,
    ) -> Result<(), KernelError> {
        self.record(format!(
            "hand back {ifname} of {} as {back}",
            netns.display()
        ))
    }
    async fn ensure_attached(&self, s: &AttachSpec) -> Result<Vec<String>, KernelError> {
        let Some(host_if) = s.host_if() else {
            return Ok(vec![]);
        };
        if self.links.lock().expect("lock").contains(host_if) {
            return Ok(vec![]);
        }
        self.attach(s).await?;
        Ok(vec![format!("host veth {host_if} is missing")])
    }
    fn fault(&self, step: AttachStep) -> Result<(), KernelError> {
        Faults::armed(*self.fault_at.lock().expect("lock")).check(step)
    }
}
