//! A recording fake of the kernel edge: every request is written down as a typed
//! [`Call`] (shown as a line: "attach fy0123 eth0 10.0.0.2/24 via 10.0.0.1"), links and
//! namespaces are tracked so reconcile sees a consistent world, and a chosen request can
//! be made to fail so rollback paths are tested without root.

use std::collections::{BTreeMap, BTreeSet};

use ferry_core::shortcut::{Entry, Tunnel};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ipnet::{IpNet, Ipv4Net};

use crate::fault::{AttachStep, Faults};
use crate::{AttachSpec, BridgeSpec, KernelError, KernelOps, LinkSpec, VethPairSpec, VxlanSpec};

/// One request the fake was given, as a value. Tests match on these ([`Recorder::calls`])
/// or on their lines ([`Recorder::lines`]); `fail_on` and `hold_on` match the lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Bridge(BridgeSpec),
    DeleteIn {
        netns: PathBuf,
        name: String,
    },
    Delete(String),
    NetnsAdd(PathBuf),
    NetnsDel(PathBuf),
    NameNetns {
        link: PathBuf,
        target: PathBuf,
    },
    Unname(PathBuf),
    /// A sandbox's file, written (the fake writes it too: it is in the test's directory).
    File(PathBuf),
    Attach(AttachSpec),
    Route {
        netns: PathBuf,
        via: IpAddr,
    },
    Veth(VethPairSpec),
    /// A script, its lines joined by "; ".
    Nft(String),
    Sysctl {
        key: String,
        value: String,
    },
    Vxlan(VxlanSpec),
    Entry {
        dev: String,
        ip: Ipv4Addr,
        mac: [u8; 6],
        vtep: Ipv4Addr,
    },
    Unentry {
        dev: String,
        ip: Ipv4Addr,
        mac: [u8; 6],
    },
    TunnelRoute {
        dev: String,
        dst: Ipv4Net,
        via: Option<Ipv4Addr>,
    },
    Unroute {
        dev: String,
        dst: Ipv4Net,
    },
    Unaddr {
        name: String,
        net: IpNet,
    },
    Adopt(crate::AdoptSpec),
    HandBack {
        netns: PathBuf,
        ifname: String,
        back: String,
    },
    /// A request held at `hold_on`'s gate before it was carried out.
    Held(Box<Call>),
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mac = ferry_core::model::mac_string;
        match self {
            Call::Bridge(s) => write!(
                f,
                "bridge {} {:?} mtu {}",
                s.name,
                s.gateway.map(|g| g.to_string()),
                s.mtu
            ),
            Call::DeleteIn { netns, name } => write!(f, "delete {name} in {}", netns.display()),
            Call::Delete(name) => write!(f, "delete {name}"),
            Call::NetnsAdd(p) => write!(f, "netns add {}", p.display()),
            Call::NetnsDel(p) => write!(f, "netns del {}", p.display()),
            Call::NameNetns { link, target } => {
                write!(f, "name {} as {}", target.display(), link.display())
            }
            Call::Unname(l) => write!(f, "unname {}", l.display()),
            Call::File(p) => write!(f, "file {}", p.display()),
            Call::Attach(s) => attach_line(f, s),
            Call::Route { netns, via } => write!(f, "route {} via {via}", netns.display()),
            Call::Veth(s) => {
                let hairpin = if s.hairpin { " hairpin" } else { "" };
                write!(
                    f,
                    "veth {} {} on {}{hairpin}",
                    s.host_if, s.peer_if, s.bridge
                )
            }
            Call::Nft(script) => write!(f, "nft {script}"),
            Call::Sysctl { key, value } => write!(f, "sysctl {key}={value}"),
            Call::Vxlan(s) => write!(
                f,
                "vxlan {} vni {} local {} port {} mtu {}",
                s.name, s.vni, s.local, s.port, s.mtu
            ),
            Call::Entry {
                dev,
                ip,
                mac: m,
                vtep,
            } => {
                write!(f, "entry {dev} {ip} {} via {vtep}", mac(m))
            }
            Call::Unentry { dev, ip, mac: m } => write!(f, "unentry {dev} {ip} {}", mac(m)),
            Call::TunnelRoute {
                dev,
                dst,
                via: Some(v),
            } => write!(f, "route {dst} via {v} dev {dev}"),
            Call::TunnelRoute {
                dev,
                dst,
                via: None,
            } => write!(f, "route {dst} dev {dev}"),
            Call::Unroute { dev, dst } => write!(f, "unroute {dst} dev {dev}"),
            Call::Unaddr { name, net } => write!(f, "unaddr {name} {net}"),
            Call::Adopt(s) => write!(f, "adopt {} as {} {}", s.src, s.ifname, s.addr),
            Call::HandBack {
                netns,
                ifname,
                back,
            } => {
                write!(f, "hand back {ifname} of {} as {back}", netns.display())
            }
            Call::Held(c) => write!(f, "held {c}"),
        }
    }
}

fn attach_line(f: &mut fmt::Formatter<'_>, s: &AttachSpec) -> fmt::Result {
    let via = s
        .default_via
        .map(|g| format!(" via {g}"))
        .unwrap_or_default();
    match &s.link {
        LinkSpec::Veth(v) => write!(f, "attach {} {} {}{via}", v.host_if, s.ifname, s.addr),
        LinkSpec::Macvlan(m) => write!(f, "macvlan {} on {} {}{via}", s.ifname, m.parent, s.addr),
        LinkSpec::Plugin(p) => write!(f, "plugin link {} {} {}{via}", p.host_if, s.ifname, s.addr),
    }
}

#[derive(Default)]
pub struct Recorder {
    pub log: Mutex<Vec<Call>>,
    pub links: Mutex<BTreeSet<String>>,
    pub netns: Mutex<BTreeSet<String>>,
    /// Links that are bridges (made by ensure_bridge, or by a test as "the user's").
    pub bridges: Mutex<BTreeSet<String>>,
    /// The two ends of each veth pair made by create_veth_pair: deleting one deletes both.
    pub pairs: Mutex<Vec<(String, String)>>,
    /// Requests whose line starts with this fail with EPERM.
    pub fail_on: Mutex<Option<String>>,
    /// An attach, a link deletion or an nft script whose line contains this waits for a
    /// permit of the semaphore before it is carried out (and checked against `fail_on`):
    /// a test's way to hold one request in flight. The log shows `held <line>` while it waits.
    pub hold_on: Mutex<Option<(String, std::sync::Arc<tokio::sync::Semaphore>)>>,
    /// The attach step armed to fail, as `FERRY_FAULT` arms it for the real kernel
    /// ([`crate::fault`]): ferryd's own steps ask [`KernelOps::fault`]; an attach fails
    /// whole, making nothing, when a kernel step of it is armed.
    pub fault_at: Mutex<Option<AttachStep>>,
    /// The same-network shortcut as the kernel would hold it: the endpoints carried, by
    /// host end, and the gate. Kept apart from `log`: it follows the state, not a plan.
    pub shortcut: Mutex<BTreeMap<String, Entry>>,
    pub shortcut_open: Mutex<bool>,
    pub shortcut_tunnels: Mutex<Vec<Tunnel>>,
    /// The links the shortcut was asked to sweep that it did not carry, in order.
    pub shortcut_swept: Mutex<Vec<String>>,
    /// The links last named as ferry's when the uplinks were asked for (None: never).
    pub shortcut_uplinks: Mutex<Option<Vec<String>>>,
}

impl Recorder {
    fn record(&self, call: Call) -> Result<(), KernelError> {
        let line = call.to_string();
        self.log.lock().expect("lock").push(call);
        self.refuse_if_armed(line)
    }

    /// Fails with EPERM when `fail_on` matches `line`. Reads (`list routes`) are checked
    /// here without being logged: they change nothing a test compares.
    fn refuse_if_armed(&self, line: String) -> Result<(), KernelError> {
        let fail = self
            .fail_on
            .lock()
            .expect("lock")
            .as_ref()
            .is_some_and(|p| line.starts_with(p.as_str()));
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

    async fn hold(&self, call: &Call) {
        let line = call.to_string();
        let gate = match &*self.hold_on.lock().expect("lock") {
            Some((pat, sem)) if line.contains(pat.as_str()) => sem.clone(),
            _ => return,
        };
        self.log
            .lock()
            .expect("lock")
            .push(Call::Held(Box::new(call.clone())));
        // A closed semaphore lets everything through.
        let _ = gate.acquire().await.map(|p| p.forget());
    }

    /// Every request so far, as values.
    pub fn calls(&self) -> Vec<Call> {
        self.log.lock().expect("lock").clone()
    }

    /// Every request so far, as lines.
    pub fn lines(&self) -> Vec<String> {
        self.log
            .lock()
            .expect("lock")
            .iter()
            .map(Call::to_string)
            .collect()
    }
}

impl KernelOps for Recorder {
    async fn ensure_bridge(&self, s: &BridgeSpec) -> Result<(), KernelError> {
        self.record(Call::Bridge(s.clone()))?;
        self.links.lock().expect("lock").insert(s.name.clone());
        self.bridges.lock().expect("lock").insert(s.name.clone());
        Ok(())
    }
    async fn delete_link_in(&self, netns: &Path, name: &str) -> Result<(), KernelError> {
        self.record(Call::DeleteIn {
            netns: netns.to_path_buf(),
            name: name.into(),
        })
    }
    async fn delete_link(&self, name: &str) -> Result<(), KernelError> {
        let call = Call::Delete(name.into());
        self.hold(&call).await;
        self.record(call)?;
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
        self.record(Call::NetnsAdd(path.to_path_buf()))?;
        self.netns
            .lock()
            .expect("lock")
            .insert(path.display().to_string());
        Ok(())
    }
    async fn remove_netns(&self, path: &Path) -> Result<(), KernelError> {
        self.record(Call::NetnsDel(path.to_path_buf()))?;
        self.netns
            .lock()
            .expect("lock")
            .remove(&path.display().to_string());
        Ok(())
    }
    async fn name_netns(&self, link: &Path, target: &Path) -> Result<(), KernelError> {
        self.record(Call::NameNetns {
            link: link.to_path_buf(),
            target: target.to_path_buf(),
        })
    }
    async fn unname_netns(&self, link: &Path) -> Result<(), KernelError> {
        self.record(Call::Unname(link.to_path_buf()))
    }
    async fn write_sandbox_file(&self, path: &Path, contents: &str) -> Result<(), KernelError> {
        self.record(Call::File(path.to_path_buf()))?;
        crate::files::write_in_place(path, contents)
    }
    async fn attach(&self, s: &AttachSpec) -> Result<(), KernelError> {
        let call = Call::Attach(s.clone());
        self.hold(&call).await;
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
        self.record(call)?;
        if let Some(h) = s.host_if() {
            self.links.lock().expect("lock").insert(h.to_string());
        }
        Ok(())
    }
    async fn set_default_route(&self, netns: &Path, via: IpAddr) -> Result<(), KernelError> {
        self.record(Call::Route {
            netns: netns.to_path_buf(),
            via,
        })
    }
    async fn link_names(&self) -> Result<Vec<String>, KernelError> {
        Ok(self.links.lock().expect("lock").iter().cloned().collect())
    }
    async fn route_destinations(&self) -> Result<Vec<IpNet>, KernelError> {
        self.refuse_if_armed("list routes".into())?;
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
        self.record(Call::Veth(s.clone()))?;
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
        let call = Call::Nft(script.trim_end().replace('\n', "; "));
        self.hold(&call).await;
        self.record(call)?;
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
        self.record(Call::Sysctl {
            key: key.join("."),
            value: value.into(),
        })?;
        Ok(false)
    }
    async fn ensure_vxlan(&self, s: &VxlanSpec) -> Result<(), KernelError> {
        self.record(Call::Vxlan(s.clone()))?;
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
        let dev = dev.into();
        self.record(Call::Entry { dev, ip, mac, vtep })
    }
    async fn overlay_entry_delete(
        &self,
        dev: &str,
        mac: [u8; 6],
        ip: Ipv4Addr,
    ) -> Result<(), KernelError> {
        let dev = dev.into();
        self.record(Call::Unentry { dev, ip, mac })
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
        let dev = dev.into();
        self.record(Call::TunnelRoute { dev, dst, via })
    }
    async fn tunnel_route_delete(&self, dev: &str, dst: Ipv4Net) -> Result<(), KernelError> {
        let dev = dev.into();
        self.record(Call::Unroute { dev, dst })
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
        let name = name.into();
        self.record(Call::Unaddr { name, net })
    }
    /// An endpoint whose host veth the fake does not know is wired again (recorded as an
    /// attach); otherwise nothing is wrong with it.
    async fn adopt_link(&self, s: &crate::AdoptSpec) -> Result<(), KernelError> {
        self.record(Call::Adopt(s.clone()))
    }
    async fn hand_back_link(
        &self,
        netns: &Path,
        ifname: &str,
        back: &str,
    ) -> Result<(), KernelError> {
        self.record(Call::HandBack {
            netns: netns.to_path_buf(),
            ifname: ifname.into(),
            back: back.into(),
        })
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
    fn shortcut_add(&self, e: &Entry) -> Result<(), KernelError> {
        let links = self.links.lock().expect("lock");
        if let Some(gone) = [&e.host_end, &e.bridge]
            .into_iter()
            .find(|l| !links.contains(l.as_str()))
        {
            return Err(KernelError::Failed {
                action: "find link",
                object: gone.to_string(),
                message: "No such device".into(),
                errno: Some(libc::ENODEV),
            });
        }
        let mut carried = self.shortcut.lock().expect("lock");
        carried.insert(e.host_end.to_string(), e.clone());
        Ok(())
    }
    fn shortcut_remove(&self, host_end: &str) {
        self.shortcut.lock().expect("lock").remove(host_end);
    }
    fn shortcut_gate(&self, open: bool) -> Result<(), KernelError> {
        *self.shortcut_open.lock().expect("lock") = open;
        Ok(())
    }
    fn shortcut_tunnels(&self, want: &[Tunnel]) -> Result<(), KernelError> {
        *self.shortcut_tunnels.lock().expect("lock") = want.to_vec();
        Ok(())
    }
    /// Records the links it would take a program off: those that are not a carried
    /// host end, a carried endpoint's bridge (`deliver`) or a carried tunnel's device.
    fn shortcut_sweep(&self, links: &[String]) {
        let carried = self.shortcut.lock().expect("lock");
        let tunnels = self.shortcut_tunnels.lock().expect("lock");
        let kept = |l: &str| {
            carried
                .values()
                .any(|e| e.host_end.as_str() == l || e.bridge.as_str() == l)
                || tunnels.iter().any(|t| t.device.as_str() == l)
        };
        let swept = links.iter().filter(|l| !kept(l));
        self.shortcut_swept
            .lock()
            .expect("lock")
            .extend(swept.cloned());
    }
    fn shortcut_uplinks(&self, ferry_links: &[String]) -> Result<(), KernelError> {
        *self.shortcut_uplinks.lock().expect("lock") = Some(ferry_links.to_vec());
        Ok(())
    }
}
