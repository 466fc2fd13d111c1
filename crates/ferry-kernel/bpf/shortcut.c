// ferry's shortcut (tc/BPF): frames between endpoints of one network handed straight to
// where they go, past the bridge, the IPv4 forward and every hook of ferryd's namespace.
// Compiled by crates/ferry-kernel/build.rs with clang; loaded and fed by
// crates/ferry-kernel/src/shortcut.rs. Two programs:
//
// `shortcut`, at the ingress of each endpoint's veth host end (what its sandbox sends):
//
//   - a frame to a neighbour on the same bridge goes straight into the neighbour's
//     namespace (bpf_redirect_peer on its host end);
//   - a frame to an overlay address another host holds goes straight out of the overlay's
//     VXLAN device (bpf_redirect to its egress), addressed as the host's route and
//     neighbour entry would address it, so the far host's kernel sees the same datagram;
//   - any other frame to the bridge's MAC (traffic the host routes: out through
//     masquerade, replies to a published port, other networks) goes straight up to the
//     host as if the bridge had passed it up (bpf_redirect to the bridge device's
//     ingress), past the bridge's port processing and hooks, which such a frame only
//     meets for the anti-spoofing check done here; except a frame to the network's
//     gateway (the embedded DNS: the bridge's path leaves its queries untracked).
//
// `arrive`, at the ingress of each overlay's VXLAN device (what other hosts send): a frame
// for a local endpoint goes straight into its namespace, addressed as the bridge would
// deliver it after the host routed it.
//
// `deliver`, at the egress of each bridge with an endpoint the shortcut carries (what the
// host routes to the bridge's sandboxes: replies from outside, a published port's
// requests): a frame for such an endpoint, addressed to its MAC, goes straight to its
// veth (bpf_redirect to the host end's egress), past the bridge's forwarding, which
// would have sent it there.
//
// A frame is taken only when everything the slow path would check holds, so the result
// is what the bridge and the host would deliver:
//
//   - the gate is open: ferryd closes it while the administrator's `user` chain holds
//     rules (they see this traffic through br_netfilter or the forward hook, and must
//     keep seeing it);
//   - the sender is a known endpoint (`sources`, by the host end's ifindex) and the frame
//     carries its own MAC and IPv4 address (the anti-spoofing check of the bridge
//     family's `guard` chain, which the shortcut skips);
//   - the destination is an endpoint on the same bridge (`targets`, keyed by the bridge's
//     ifindex: another network's endpoint, or one of an ICC-off network, is not there, so
//     isolation and ICC stay with the slow path), the frame addressed to its MAC; or a
//     block of the same overlay that another live host owns (`remotes`, by bridge and
//     address), the frame addressed to the bridge (the gateway's MAC, which proxy ARP
//     gives for remote addresses); or, for a frame to the bridge, anything but the
//     gateway and the addresses an overlay keeps on the bridge: the host's IPv4 hooks
//     (conntrack, NAT, ferry's forward chain, the administrator's `user` chain) see it
//     as they would have, entering from the bridge;
//   - on arrival, the frame came through the overlay's own device (`tunnels`), addressed
//     to this host's device, for an endpoint on the overlay's bridge;
//   - on delivery, the frame leaves the bridge for a carried endpoint of that bridge
//     (`targets`), addressed to its MAC (what the host's neighbour entry gave it).
//
// Anything else returns TC_ACT_UNSPEC (TCX_NEXT): the next program, or the normal path.
//
// Built with -DCONNTRACK (build.rs: shortcut_ct.o), the object also carries established
// routed TCP flows past the host's stack, doing their NAT from their conntrack entries:
// `ferry_inbound` on the uplinks, and `shortcut` for what a sandbox sends to be routed
// (bpf/conntrack.h says exactly when).
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>

#define SEC(n) __attribute__((section(n), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

static void *(*map_lookup)(void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;
static long (*redirect)(__u32 ifindex, __u64 flags) = (void *)BPF_FUNC_redirect;
static long (*redirect_peer)(__u32 ifindex, __u64 flags) = (void *)BPF_FUNC_redirect_peer;
static long (*store_bytes)(struct __sk_buff *skb, __u32 offset, const void *from, __u32 len,
                           __u64 flags) = (void *)BPF_FUNC_skb_store_bytes;

// Must match ferry-kernel's shortcut.rs (#[repr(C)] twins).
struct source {
    __u32 bridge; // the endpoint's bridge's ifindex
    __u32 ip;     // its IPv4 address, network order
    __u8 mac[6];
    __u8 bridge_mac[6];
    __u32 gateway; // its network's gateway, network order
    __u32 overlay; // 1: its network is an overlay (look in `remotes`)
};
struct target_key {
    __u32 bridge;
    __u32 ip;
};
struct target {
    __u32 host_end; // the endpoint's veth host end's ifindex
    __u8 mac[6];
    __u16 pad;
};
struct remote_key {
    __u32 prefixlen; // 32 (the bridge) + the block's prefix length
    __u32 bridge;
    __u32 ip;
};
struct remote {
    __u32 tunnel; // the overlay's VXLAN device's ifindex; 0: the address stays here
    __u8 src[6];  // its MAC
    __u8 dst[6];  // the far host's device's MAC (the FDB sends that to its address)
};
struct tunnel {
    __u32 bridge;
    __u8 bridge_mac[6];
    __u8 mac[6]; // the device's own MAC
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 65536);
    __type(key, __u32);
    __type(value, struct source);
} sources SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 65536);
    __type(key, struct target_key);
    __type(value, struct target);
} targets SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LPM_TRIE);
    __uint(max_entries, 65536);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, struct remote_key);
    __type(value, struct remote);
} remotes SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 4096);
    __type(key, __u32);
    __type(value, struct tunnel);
} tunnels SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32);
} gate SEC(".maps");

static int same_mac(const __u8 *a, const __u8 *b) {
    return *(const __u32 *)a == *(const __u32 *)b && *(const __u16 *)(a + 4) == *(const __u16 *)(b + 4);
}

// The frame's two MACs, rewritten through the helper rather than by direct packet
// writes: a program with direct writes gets a prologue that uncloses every packet it sees
// (a copy of the head of each TCP segment, which a sender's stack clones), where the
// helper makes only the rewritten ones writable.
static int set_macs(struct __sk_buff *skb, const __u8 *dst, const __u8 *src) {
    __u8 macs[12];
    __builtin_memcpy(macs, dst, 6);
    __builtin_memcpy(macs + 6, src, 6);
    return store_bytes(skb, 0, macs, sizeof(macs), 0);
}

static int open(void) {
    __u32 zero = 0;
    __u32 *open = map_lookup(&gate, &zero);
    return open && *open;
}

// The IPv4 header of an Ethernet frame, or NULL.
static struct iphdr *ipv4(struct __sk_buff *skb, struct ethhdr **eth) {
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    *eth = data;
    if ((void *)(*eth + 1) > end || (*eth)->h_proto != __builtin_bswap16(ETH_P_IP))
        return 0;
    struct iphdr *ip = (void *)(*eth + 1);
    if ((void *)(ip + 1) > end)
        return 0;
    return ip;
}

// The IPv4 header of a frame the programs may take: the gate open, an IPv4 frame; or NULL.
static struct iphdr *takeable(struct __sk_buff *skb, struct ethhdr **eth) {
    if (!open())
        return 0;
    return ipv4(skb, eth);
}

#ifdef CONNTRACK
#include "conntrack.h"
#endif

// A frame to the bridge's MAC: for an address of a block another host owns, out of the
// overlay's device, addressed as the host's neighbour entry would address it; for an
// address that an overlay keeps here, or the gateway, the bridge's path; anything else
// up into the host, entering from the bridge.
static int to_bridge(struct __sk_buff *skb, struct iphdr *ip, struct source *src) {
    if (ip->daddr == src->gateway)
        return TC_ACT_UNSPEC;
    if (src->overlay) {
        struct remote_key key = {.prefixlen = 64, .bridge = src->bridge, .ip = ip->daddr};
        struct remote *r = map_lookup(&remotes, &key);
        if (r && !r->tunnel) // an address that stays here
            return TC_ACT_UNSPEC;
        if (r) {
            __u32 tunnel = r->tunnel;
            if (set_macs(skb, r->dst, r->src))
                return TC_ACT_UNSPEC;
            return redirect(tunnel, 0);
        }
    }
#ifdef CONNTRACK
    int carried = carry_out(skb, src);
    if (carried >= 0)
        return carried;
#endif
    return redirect(src->bridge, BPF_F_INGRESS);
}

SEC("classifier") int shortcut(struct __sk_buff *skb) {
    __u32 ifindex = skb->ifindex;
    struct ethhdr *eth;
    struct iphdr *ip = takeable(skb, &eth);
    if (!ip)
        return TC_ACT_UNSPEC;
    struct source *src = map_lookup(&sources, &ifindex);
    if (!src || src->ip != ip->saddr || !same_mac(src->mac, eth->h_source))
        return TC_ACT_UNSPEC;
    if (same_mac(eth->h_dest, src->bridge_mac))
        return to_bridge(skb, ip, src);
    struct target_key key = {.bridge = src->bridge, .ip = ip->daddr};
    struct target *dst = map_lookup(&targets, &key);
    if (!dst || dst->host_end == ifindex || !same_mac(dst->mac, eth->h_dest))
        return TC_ACT_UNSPEC;
    return redirect_peer(dst->host_end, 0);
}

SEC("classifier") int arrive(struct __sk_buff *skb) {
    __u32 ifindex = skb->ifindex;
    struct ethhdr *eth;
    if (!open())
        return TC_ACT_UNSPEC;
    struct tunnel *t = map_lookup(&tunnels, &ifindex);
    if (!t)
        return TC_ACT_UNSPEC;
    struct iphdr *ip = ipv4(skb, &eth);
    if (!ip || !same_mac(eth->h_dest, t->mac))
        return TC_ACT_UNSPEC;
    struct target_key key = {.bridge = t->bridge, .ip = ip->daddr};
    struct target *dst = map_lookup(&targets, &key);
    if (!dst)
        return TC_ACT_UNSPEC;
    __u32 host_end = dst->host_end;
    if (set_macs(skb, dst->mac, t->bridge_mac))
        return TC_ACT_UNSPEC;
    return redirect_peer(host_end, 0);
}

SEC("classifier") int deliver(struct __sk_buff *skb) {
    __u32 bridge = skb->ifindex;
    struct ethhdr *eth;
    struct iphdr *ip = takeable(skb, &eth);
    if (!ip)
        return TC_ACT_UNSPEC;
    struct target_key key = {.bridge = bridge, .ip = ip->daddr};
    struct target *dst = map_lookup(&targets, &key);
    if (!dst || !same_mac(dst->mac, eth->h_dest))
        return TC_ACT_UNSPEC;
    return redirect(dst->host_end, 0);
}

char _license[] SEC("license") = "GPL";
