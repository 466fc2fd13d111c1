// ferry's same-network shortcut (tc/BPF, attached at the ingress of each endpoint's veth
// host end, i.e. to what its sandbox sends). Compiled by crates/ferry-kernel/build.rs
// with clang; loaded and fed by crates/ferry-kernel/src/shortcut.rs.
//
// An IPv4 frame that the bridge would carry to another endpoint of the same network goes
// straight into that endpoint's namespace instead (bpf_redirect_peer on its host end):
// no bridge, no br_netfilter pass, no nftables hook, no backlog queue. It is taken only
// when everything the slow path would check holds, so the result is what the bridge
// would deliver:
//
//   - the gate is open: ferryd closes it while the administrator's `user` chain holds
//     rules (they see bridged traffic through br_netfilter, and must keep seeing it);
//   - the sender is a known endpoint (`sources`, by the host end's ifindex) and the frame
//     carries its own MAC and IPv4 address (the anti-spoofing check of the bridge
//     family's `guard` chain, which the shortcut skips);
//   - the destination address is an endpoint on the same bridge (`targets`, keyed by the
//     bridge's ifindex: another network's endpoint, or one on an ICC-off network, is not
//     there, so isolation and ICC stay with the slow path);
//   - the frame is addressed to that endpoint's MAC: what the bridge would hand it (a
//     frame to the gateway's MAC is routed by the host, and stays on the slow path).
//
// Anything else returns TC_ACT_UNSPEC (TCX_NEXT): the next program, or the normal path.
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>

#define SEC(n) __attribute__((section(n), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

static void *(*map_lookup)(void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;
static long (*redirect_peer)(__u32 ifindex, __u64 flags) = (void *)BPF_FUNC_redirect_peer;

// Must match ferry-kernel's shortcut.rs (#[repr(C)] twins).
struct source {
    __u32 bridge; // the endpoint's bridge's ifindex
    __u32 ip;     // its IPv4 address, network order
    __u8 mac[6];
    __u16 pad;
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
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32);
} gate SEC(".maps");

static int same_mac(const __u8 *a, const __u8 *b) {
    return *(const __u32 *)a == *(const __u32 *)b && *(const __u16 *)(a + 4) == *(const __u16 *)(b + 4);
}

SEC("classifier") int shortcut(struct __sk_buff *skb) {
    __u32 zero = 0, ifindex = skb->ifindex;
    __u32 *open = map_lookup(&gate, &zero);
    if (!open || !*open)
        return TC_ACT_UNSPEC;
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end || eth->h_proto != __builtin_bswap16(ETH_P_IP))
        return TC_ACT_UNSPEC;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end)
        return TC_ACT_UNSPEC;
    struct source *src = map_lookup(&sources, &ifindex);
    if (!src || src->ip != ip->saddr || !same_mac(src->mac, eth->h_source))
        return TC_ACT_UNSPEC;
    struct target_key key = {.bridge = src->bridge, .ip = ip->daddr};
    struct target *dst = map_lookup(&targets, &key);
    if (!dst || dst->host_end == ifindex || !same_mac(dst->mac, eth->h_dest))
        return TC_ACT_UNSPEC;
    return redirect_peer(dst->host_end, 0);
}

char _license[] SEC("license") = "GPL";
