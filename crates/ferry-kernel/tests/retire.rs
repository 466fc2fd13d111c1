//! Detaching an endpoint does not wait for the kernel's slow veth deletion: the pair is
//! out of service and out of the way when `delete_link` returns, and gone soon after.
//! Root only (skipped otherwise, failed when CI is set); everything happens in a network
//! namespace this test unshares on its own thread, and a sandbox namespace pinned under a
//! temporary directory that a guard unpins even if the test fails.

#![allow(clippy::unwrap_used, clippy::too_many_lines)] // test code: a failed unwrap is a failed test

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod common;

use common::in_own_netns;
use ferry_kernel::link::get;
use ferry_kernel::{netns, AttachSpec, BridgeSpec, KernelOps, LinkSpec, Netlink, VethLink};

struct Unpin(PathBuf);
impl Drop for Unpin {
    fn drop(&mut self) {
        let _ = netns::remove(&self.0);
    }
}

fn spec(sb: &Path, host_if: &str, ip: u8) -> AttachSpec {
    AttachSpec {
        netns: sb.to_path_buf(),
        ifname: "eth0".into(),
        mac: [0x02, 0x42, 10, 77, 0, ip],
        addr: format!("10.77.0.{ip}/24").parse().expect("net"),
        default_via: Some(Ipv4Addr::new(10, 77, 0, 1).into()),
        link: LinkSpec::Veth(VethLink {
            bridge: "fy-7e570001".into(),
            host_if: host_if.into(),
            mtu: 1500,
            hairpin: false,
        }),
    }
}

async fn sandbox_links(sb: &Path) -> Vec<String> {
    let h = netns::netlink_in(sb).await.expect("netlink in sandbox");
    get::names(&h).await.expect("sandbox links")
}

/// A sysctl as the sandbox sees it (read on a thread that joined its namespace);
/// None on a kernel without the file.
fn sandbox_sysctl(sb: &Path, key: &str) -> Option<String> {
    let (sb, key) = (sb.to_path_buf(), key.to_string());
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&sb).expect("open sandbox netns");
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        std::fs::read_to_string(format!("/proc/sys/{key}")).ok()
    })
    .join()
    .expect("sysctl thread")
}

/// A netlink handle in the test's namespace (the one the bridge is in).
fn k_handle() -> rtnetlink::Handle {
    let (conn, h, _) = rtnetlink::new_connection().expect("netlink");
    tokio::spawn(conn);
    h
}

async fn bridge_snooping(h: &rtnetlink::Handle) -> Option<bool> {
    use netlink_packet_route::link::{InfoBridge, InfoData, LinkAttribute, LinkInfo};
    let m = get::message_of(h, "fy-7e570001").await.expect("bridge")?;
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Data(InfoData::Bridge(b)) => b.iter().find_map(|x| match x {
                InfoBridge::MulticastSnooping(v) => Some(*v),
                _ => None,
            }),
            _ => None,
        }),
        _ => None,
    })
}

/// ferry's kernel edge in this thread's namespace, with a bridge and a sandbox
/// namespace (unpinned when the returned guard drops).
async fn setup(dir: &Path) -> (Netlink, PathBuf, Unpin) {
    let k = Netlink::new().expect("netlink");
    k.ensure_bridge(&BridgeSpec {
        name: "fy-7e570001".into(),
        gateway: Some("10.77.0.1/24".parse().expect("net")),
        mtu: 1500,
    })
    .await
    .expect("bridge");
    let sb = dir.join("sb");
    let _unpin = Unpin(sb.clone());
    k.create_netns(&sb).await.expect("sandbox netns");
    (k, sb, _unpin)
}

async fn scenario(dir: PathBuf) {
    let (k, sb, _unpin) = setup(&dir).await;

    k.attach(&spec(&sb, "fy0000000000a", 2))
        .await
        .expect("attach");
    // A bridge port carries no IPv6 of its own (so ferryd's IPv6 FIB does not grow with N).
    let v6 = std::fs::read_to_string("/proc/sys/net/ipv6/conf/fy0000000000a/disable_ipv6");
    assert!(
        v6.as_deref().map_or(true, |v| v.trim() == "1"),
        "IPv6 is on on the host end: {v6:?}"
    );
    assert!(sandbox_links(&sb).await.contains(&"eth0".to_string()));
    // Nor does the sandbox side (an IPv4 network: no link-local address, no multicast
    // chatter flooded to every other endpoint).
    let v6 = sandbox_sysctl(&sb, "net/ipv6/conf/eth0/disable_ipv6");
    assert!(
        v6.as_deref().is_none_or(|v| v.trim() == "1"),
        "IPv6 is on on the sandbox side: {v6:?}"
    );
    // ferry's bridges have multicast snooping off (it made every port change O(ports)).
    assert_eq!(
        bridge_snooping(&k_handle()).await,
        Some(false),
        "multicast snooping of a bridge ferry made"
    );

    let t = Instant::now();
    k.delete_link("fy0000000000a").await.expect("detach");
    let took = t.elapsed();
    let pending = k.pending_deletions();
    let host = k.link_names().await.expect("links");
    assert!(
        pending == 1 || host.contains(&"fyz0000000000a".to_string()),
        "the pair was deleted in line, not retired (pending {pending}, links {host:?})"
    );
    assert!(
        !host.contains(&"fy0000000000a".to_string()),
        "host end still named: {host:?}"
    );
    let inside = sandbox_links(&sb).await;
    assert!(
        !inside.contains(&"eth0".to_string()),
        "eth0 still in the sandbox: {inside:?}"
    );

    // The sandbox-side name is free at once: attach again without waiting.
    k.attach(&spec(&sb, "fy0000000000b", 3))
        .await
        .expect("attach again right after the detach");

    assert!(
        k.settle(Duration::from_secs(10)).await,
        "background deletion did not finish"
    );
    let host = k.link_names().await.expect("links");
    assert!(
        !host.iter().any(|l| l.starts_with("fyz")),
        "retired links left after settle: {host:?}"
    );
    let inside = sandbox_links(&sb).await;
    assert!(
        inside.iter().all(|l| l == "lo" || l == "eth0"),
        "sandbox after settle: {inside:?}"
    );
    eprintln!("delete_link returned after {took:?}");

    // Bridges (and anything that is not an endpoint's host end) go synchronously.
    k.delete_link("fy0000000000b").await.expect("detach b");
    k.delete_link("fy-7e570001").await.expect("delete bridge");
    let host = k.link_names().await.expect("links");
    assert!(
        !host.contains(&"fy-7e570001".to_string()),
        "bridge still there: {host:?}"
    );
    assert!(k.settle(Duration::from_secs(10)).await);
    k.remove_netns(&sb).await.expect("remove sandbox netns");
}

#[test]
fn detach_frees_the_names_at_once_and_deletes_the_pair_in_the_background() {
    in_own_netns("retire", 1, scenario);
}

/// Fill `bridge` with ports (veths: this kernel has no dummy links) until the kernel
/// refuses one more (Linux bridges take at most 1023); then free one slot. Returns how
/// many fillers it holds.
async fn fill_bridge(h: &rtnetlink::Handle, bridge: &str) -> usize {
    let br = get::index_of(h, bridge)
        .await
        .expect("bridge")
        .expect("bridge");
    for i in 0.. {
        let filler = rtnetlink::LinkVeth::new(&format!("fyd{i}"), &format!("fye{i}"))
            .controller(br)
            .build();
        match h.link().add(filler).execute().await {
            Ok(()) => {}
            Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::EXFULL => {
                // The refused filler was created and left out of the bridge, or not
                // created at all: either way, delete it and one port more.
                for name in [format!("fyd{i}"), format!("fyd{}", i - 1)] {
                    if let Some(idx) = get::index_of(h, &name).await.expect("lookup") {
                        h.link().del(idx).execute().await.expect("delete filler");
                    }
                }
                return i - 1;
            }
            Err(e) => panic!("filler port {i}: {e}"),
        }
    }
    unreachable!()
}

async fn full_bridge(dir: PathBuf) {
    let (k, sb, _unpin) = setup(&dir).await;
    let fillers = fill_bridge(&k_handle(), "fy-7e570001").await;
    eprintln!("bridge full at {fillers} fillers + 1 free slot");

    k.attach(&spec(&sb, "fy0000000000a", 2))
        .await
        .expect("attach into the last free slot");
    k.delete_link("fy0000000000a").await.expect("detach");
    // The retired host end still holds its port until the reaper deletes it: the attach
    // must wait for that rather than fail with "the bridge is full".
    k.attach(&spec(&sb, "fy0000000000b", 3))
        .await
        .expect("attach right after a detach on a full bridge");
    k.delete_link("fy0000000000b").await.expect("detach b");
    assert!(k.settle(Duration::from_secs(10)).await);
    k.remove_netns(&sb).await.expect("remove sandbox netns");
    // The fillers and the bridge go with this thread's namespace.
}

#[test]
fn an_attach_on_a_full_bridge_waits_for_retired_ports() {
    in_own_netns("retire", 1, full_bridge);
}

fn host_of(s: &AttachSpec) -> String {
    s.host_if().expect("a veth").to_string()
}

fn spec_n(sb: &Path, i: u8) -> AttachSpec {
    AttachSpec {
        ifname: format!("eth{i}"),
        default_via: None,
        ..spec(sb, &format!("fy00000000{i:03x}"), i + 2)
    }
}

async fn group_of(h: &rtnetlink::Handle, name: &str) -> Option<u32> {
    use netlink_packet_route::link::LinkAttribute;
    let m = get::message_of(h, name).await.expect("lookup")?;
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::Group(g) => Some(*g),
        _ => None,
    })
}

async fn set_group(h: &rtnetlink::Handle, name: &str, group: u32) {
    let i = get::index_of(h, name).await.expect("lookup").expect(name);
    let msg = rtnetlink::LinkUnspec::new_with_index(i)
        .link_group(group)
        .build();
    h.link().set(msg).execute().await.expect("set group");
}

async fn graves(dir: PathBuf) {
    use ferry_kernel::link::{del, retire};
    let (k, sb, _unpin) = setup(&dir).await;
    let h = k_handle();

    // A retired host end is in the grave group; one deletion by group takes every pair
    // there, both ends.
    for i in 0..3 {
        k.attach(&spec_n(&sb, i)).await.expect("attach");
    }
    for i in 0..3 {
        let host_if = host_of(&spec_n(&sb, i));
        let got = retire::retire(&h, &host_if, &sb, &format!("eth{i}"))
            .await
            .expect("retire");
        let retire::Retired::As(name) = got else {
            panic!("{host_if} was not retired: {got:?}");
        };
        assert_eq!(
            group_of(&h, &name).await,
            Some(retire::grave_group()),
            "{name}"
        );
    }
    del::delete_group(&h, retire::grave_group())
        .await
        .expect("delete by group");
    let host = k.link_names().await.expect("links");
    assert!(!host.iter().any(|l| l.starts_with("fyz")), "{host:?}");
    let inside = sandbox_links(&sb).await;
    assert_eq!(inside, vec!["lo".to_string()], "peers left in the sandbox");
    // Nothing left in the group: still fine.
    del::delete_group(&h, retire::grave_group())
        .await
        .expect("delete an empty group");

    // A burst of detaches through the reaper: every pair goes.
    for i in 0..20 {
        k.attach(&spec_n(&sb, i)).await.expect("attach");
    }
    for i in 0..20 {
        k.delete_link(&host_of(&spec_n(&sb, i)))
            .await
            .expect("detach");
    }
    assert!(k.settle(Duration::from_secs(10)).await, "burst not deleted");
    let host = k.link_names().await.expect("links");
    assert!(
        !host
            .iter()
            .any(|l| l.starts_with("fy0") || l.starts_with("fyz")),
        "{host:?}"
    );
    assert_eq!(sandbox_links(&sb).await, vec!["lo".to_string()]);

    // A device that cannot be deleted in the group (here lo) makes the kernel refuse
    // the group deletion; the reaper then deletes by name, and lo stays.
    set_group(&h, "lo", retire::grave_group()).await;
    k.attach(&spec_n(&sb, 0)).await.expect("attach");
    k.delete_link(&host_of(&spec_n(&sb, 0)))
        .await
        .expect("detach");
    assert!(
        k.settle(Duration::from_secs(10)).await,
        "fallback did not finish"
    );
    let host = k.link_names().await.expect("links");
    assert!(!host.iter().any(|l| l.starts_with("fyz")), "{host:?}");
    assert!(host.contains(&"lo".to_string()), "lo was deleted: {host:?}");
    set_group(&h, "lo", 0).await;
    k.remove_netns(&sb).await.expect("remove sandbox netns");
}

#[test]
fn retired_pairs_go_by_link_group_in_one_request_or_by_name_when_the_kernel_refuses() {
    in_own_netns("retire", 1, graves);
}
