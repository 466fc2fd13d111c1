//! Published ports: `-p [HOST_IP:][HOST_PORT[-END]:]CONTAINER_PORT[-END][/tcp|/udp]`,
//! the Engine API's `PortBindings` shape, and the rules that make a set of mappings
//! valid (equal range lengths, no host port taken twice).
//!
//! A mapping keeps a port *range* whole: `8000-8010:80-90` is one [`PortMapping`], and
//! the firewall turns it into one map element, not eleven rules. The docker CLI sends
//! ranges expanded port by port; [`coalesce`] joins such runs back into ranges.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::CoreError;

/// The first host port handed out when `-p` names no host port (Docker's ephemeral range).
pub const EPHEMERAL_START: u16 = 49153;
pub const EPHEMERAL_END: u16 = 65535;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn parse(s: &str) -> Result<Proto, CoreError> {
        match s.to_ascii_lowercase().as_str() {
            "" | "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            _ => Err(bad("protocol", s, "only tcp and udp can be published")),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// An inclusive port range, `start <= end`, neither zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortRange {
    start: u16,
    end: u16,
}

impl PortRange {
    pub fn new(start: u16, end: u16) -> Result<PortRange, CoreError> {
        if start == 0 || end == 0 {
            return Err(bad("port", &format!("{start}-{end}"), "ports are 1-65535"));
        }
        if start > end {
            return Err(bad(
                "port range",
                &format!("{start}-{end}"),
                "the range ends before it starts",
            ));
        }
        Ok(PortRange { start, end })
    }
    pub fn single(p: u16) -> Result<PortRange, CoreError> {
        PortRange::new(p, p)
    }
    pub fn start(self) -> u16 {
        self.start
    }
    pub fn end(self) -> u16 {
        self.end
    }
    pub fn len(self) -> u32 {
        u32::from(self.end - self.start) + 1
    }
    pub fn is_empty(self) -> bool {
        false
    }
    pub fn overlaps(self, o: PortRange) -> bool {
        self.start <= o.end && o.start <= self.end
    }
    pub fn iter(self) -> impl Iterator<Item = u16> {
        self.start..=self.end
    }

    /// `80` or `8000-8010`.
    pub fn parse(s: &str) -> Result<PortRange, CoreError> {
        let port = |p: &str| -> Result<u16, CoreError> {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("port", p, "ports are numbers from 1 to 65535"))
        };
        match s.split_once('-') {
            Some((a, b)) => PortRange::new(port(a)?, port(b)?),
            None => PortRange::single(port(s)?),
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

/// One published range, as requested. `host_ports: None` asks for free ephemeral ports;
/// `source: Some(net)` admits only clients from `net` (ferry's `--publish-from`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub proto: Proto,
    pub host_ip: Option<Ipv4Addr>,
    pub host_ports: Option<PortRange>,
    pub container_ports: PortRange,
    #[serde(default)]
    pub source: Option<Ipv4Net>,
}

/// A mapping with its host ports decided, as the firewall programs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Published {
    pub proto: Proto,
    pub host_ip: Option<Ipv4Addr>,
    pub host_ports: PortRange,
    pub container_ports: PortRange,
    #[serde(default)]
    pub source: Option<Ipv4Net>,
}

impl Published {
    /// Two bindings that would both claim a packet: same protocol, overlapping host
    /// ports, and host addresses that meet (unspecified meets everything).
    pub fn collides(&self, o: &Published) -> bool {
        self.proto == o.proto
            && self.host_ports.overlaps(o.host_ports)
            && (self.host_ip.is_none() || o.host_ip.is_none() || self.host_ip == o.host_ip)
    }
    pub fn host_ip_string(&self) -> String {
        self.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED).to_string()
    }
}

fn bad(what: &'static str, value: &str, why: &str) -> CoreError {
    CoreError::BadValue {
        what,
        value: value.to_string(),
        why: why.to_string(),
    }
}

/// Parse one `-p` value.
pub fn parse_publish(spec: &str) -> Result<PortMapping, CoreError> {
    let err = |why: &str| bad("publish spec", spec, why);
    let (body, proto) = match spec.rsplit_once('/') {
        Some((b, p)) => (
            b,
            Proto::parse(p).map_err(|_| err("the protocol must be tcp or udp"))?,
        ),
        None => (spec, Proto::Tcp),
    };
    let parts: Vec<&str> = body.split(':').collect();
    let (host_ip, host, ctr) = match parts.as_slice() {
        [c] => (None, None, *c),
        [h, c] => (None, Some(*h), *c),
        [ip, h, c] => (Some(*ip), Some(*h).filter(|h| !h.is_empty()), *c),
        _ => return Err(err("expected [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]")),
    };
    let host_ip = match host_ip.filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => {
            let ip: Ipv4Addr = s
                .parse()
                .map_err(|_| err("the host address is not an IPv4 address"))?;
            (!ip.is_unspecified()).then_some(ip)
        }
    };
    let container_ports = PortRange::parse(ctr)?;
    let host_ports = host.map(PortRange::parse).transpose()?;
    let m = PortMapping {
        proto,
        host_ip,
        host_ports,
        container_ports,
        source: None,
    };
    check_lengths(&m)?;
    Ok(m)
}

/// A host range must be exactly as long as the container range. (Docker also reads
/// `8000-8010:80` as "any one of these host ports"; ferry refuses it as ambiguous.)
fn check_lengths(m: &PortMapping) -> Result<(), CoreError> {
    if let Some(h) = m.host_ports {
        if h.len() != m.container_ports.len() {
            return Err(bad(
                "publish spec",
                &format!("{h}:{}", m.container_ports),
                "the host and container port ranges must be the same length",
            ));
        }
    }
    Ok(())
}

/// One entry of the Engine API's `PortBindings` / `Ports` maps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortBinding {
    #[serde(default)]
    pub host_ip: String,
    #[serde(default)]
    pub host_port: String,
    /// ferry only (Docker ignores it): admit only clients from this CIDR.
    #[serde(
        default,
        rename = "FerrySource",
        skip_serializing_if = "Option::is_none"
    )]
    pub source: Option<String>,
}

pub type PortBindings = BTreeMap<String, Option<Vec<PortBinding>>>;

/// `PortBindings` (`"80/tcp": [{"HostIp": "", "HostPort": "8081"}]`) as mappings, with
/// runs of consecutive ports joined into ranges. Keys and host ports may be ranges.
pub fn from_bindings(b: &PortBindings) -> Result<Vec<PortMapping>, CoreError> {
    let mut out = vec![];
    for (key, list) in b {
        let (ports, proto) = match key.split_once('/') {
            Some((p, proto)) => (p, Proto::parse(proto)?),
            None => (key.as_str(), Proto::Tcp),
        };
        let container_ports = PortRange::parse(ports)?;
        let list = list.clone().unwrap_or_default();
        let list = if list.is_empty() {
            vec![PortBinding::default()]
        } else {
            list
        };
        for pb in list {
            let host_ip =
                match pb.host_ip.trim() {
                    "" => None,
                    s => Some(s.parse::<Ipv4Addr>().map_err(|_| {
                        bad("host IP", s, "only IPv4 host addresses can be published")
                    })?),
                }
                .filter(|ip| !ip.is_unspecified());
            let host_ports = match pb.host_port.trim() {
                "" => None,
                s => Some(PortRange::parse(s)?),
            };
            let source = pb
                .source
                .as_deref()
                .map(|s| {
                    s.parse::<Ipv4Net>()
                        .map(|n| n.trunc())
                        .map_err(|_| bad("source CIDR", s, "not an IPv4 CIDR"))
                })
                .transpose()?;
            let m = PortMapping {
                proto,
                host_ip,
                host_ports,
                container_ports,
                source,
            };
            check_lengths(&m)?;
            out.push(m);
        }
    }
    Ok(coalesce(out))
}

/// The inverse of [`from_bindings`]: the shape `HostConfig.PortBindings` echoes.
pub fn to_bindings(maps: &[PortMapping]) -> PortBindings {
    let mut b = PortBindings::new();
    for m in maps {
        b.entry(format!("{}/{}", m.container_ports, m.proto.as_str()))
            .or_insert_with(|| Some(vec![]))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: m.host_ip.map(|i| i.to_string()).unwrap_or_default(),
                host_port: m.host_ports.map(|p| p.to_string()).unwrap_or_default(),
                source: m.source.map(|s| s.to_string()),
            });
    }
    b
}

/// `NetworkSettings.Ports` for decided mappings: one key per container port, as
/// dockerd answers (a range is listed port by port).
pub fn ports_json(published: &[Published]) -> BTreeMap<String, Vec<PortBinding>> {
    let mut b: BTreeMap<String, Vec<PortBinding>> = BTreeMap::new();
    for p in published {
        for (i, cport) in p.container_ports.iter().enumerate() {
            b.entry(format!("{cport}/{}", p.proto.as_str()))
                .or_default()
                .push(PortBinding {
                    host_ip: p.host_ip_string(),
                    host_port: (p.host_ports.start() as usize + i).to_string(),
                    source: None,
                });
        }
    }
    b
}

/// Join mappings that continue one another (same protocol, address, source and
/// offset, adjacent ports) into one range.
pub fn coalesce(mut v: Vec<PortMapping>) -> Vec<PortMapping> {
    let key = |m: &PortMapping| {
        (
            m.proto,
            m.host_ip,
            m.source,
            m.host_ports.is_some(),
            m.container_ports.start(),
        )
    };
    v.sort_by_key(key);
    let mut out: Vec<PortMapping> = vec![];
    for m in v {
        if let Some(last) = out.last_mut() {
            if let Some(joined) = join(last, &m) {
                *last = joined;
                continue;
            }
        }
        out.push(m);
    }
    out
}

fn join(a: &PortMapping, b: &PortMapping) -> Option<PortMapping> {
    let same = a.proto == b.proto && a.host_ip == b.host_ip && a.source == b.source;
    let (ah, bh) = (a.host_ports?, b.host_ports?);
    let adjacent = u32::from(a.container_ports.end()) + 1 == u32::from(b.container_ports.start())
        && u32::from(ah.end()) + 1 == u32::from(bh.start());
    if !(same && adjacent) {
        return None;
    }
    Some(PortMapping {
        host_ports: Some(PortRange::new(ah.start(), bh.end()).ok()?),
        container_ports: PortRange::new(a.container_ports.start(), b.container_ports.end()).ok()?,
        ..a.clone()
    })
}

/// Decide host ports: keep the asked ones, give ephemeral ones to the rest, and refuse
/// any that collide with `taken` or with each other (Docker's message).
pub fn decide(maps: &[PortMapping], taken: &[Published]) -> Result<Vec<Published>, CoreError> {
    let mut done: Vec<Published> = vec![];
    for m in maps {
        let p = match m.host_ports {
            Some(h) => Published {
                proto: m.proto,
                host_ip: m.host_ip,
                host_ports: h,
                container_ports: m.container_ports,
                source: m.source,
            },
            None => ephemeral(m, taken.iter().chain(done.iter()))?,
        };
        if let Some(other) = taken.iter().chain(done.iter()).find(|o| o.collides(&p)) {
            return Err(CoreError::PortTaken {
                host_ip: p.host_ip_string(),
                port: first_common(p.host_ports, other.host_ports),
            });
        }
        done.push(p);
    }
    Ok(done)
}

fn first_common(a: PortRange, b: PortRange) -> u16 {
    a.start().max(b.start())
}

fn ephemeral<'a>(
    m: &PortMapping,
    taken: impl Iterator<Item = &'a Published> + Clone,
) -> Result<Published, CoreError> {
    let n = m.container_ports.len();
    let mut start = u32::from(EPHEMERAL_START);
    while start + n - 1 <= u32::from(EPHEMERAL_END) {
        let h = PortRange::new(start as u16, (start + n - 1) as u16)?;
        let p = Published {
            proto: m.proto,
            host_ip: m.host_ip,
            host_ports: h,
            container_ports: m.container_ports,
            source: m.source,
        };
        match taken.clone().find(|o| o.collides(&p)) {
            None => return Ok(p),
            Some(o) => start = u32::from(o.host_ports.end()) + 1,
        }
    }
    Err(CoreError::Invalid(format!(
        "no free host port range of {n} ports for {}/{}",
        m.container_ports,
        m.proto.as_str()
    )))
}

#[cfg(test)]
mod tests;
