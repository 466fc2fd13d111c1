// The shortcut's conntrack fast path (issue 18): a published port's established TCP
// stream carried past the host's IPv4 stack (routing, conntrack, NAT, ferry's forward
// chain) in both directions, its NAT done here from the flow's own conntrack entry (the
// conntrack kfuncs), as an nftables flowtable would do it on a kernel that has one.
// Included by shortcut.c when built with -DCONNTRACK (build.rs builds shortcut_ct.o);
// crates/ferry-kernel/src/shortcut.rs loads that object where the running kernel's own
// BTF has the kfuncs, the plain one otherwise.
//
// `ferry_inbound`, at the ingress of each uplink (a link of the host's with an IPv4
// address that is not ferry's): a published port's segment addressed to this host gets
// its entry's translation (destination address and port), its TTL lowered, the MACs the bridge would
// give it, and goes straight into the sandbox's namespace (bpf_redirect_peer on its veth
// host end, found in `targets` by the route's bridge: an endpoint the shortcut does not
// carry, or no longer does, is left to the host).
//
// `carry_out`, called by `shortcut` for a frame a sandbox sends to be routed: the
// sandbox's answer gets the reverse translation (source back to the published address
// and port), its TTL lowered, the MACs of the route out, and leaves by that link's
// egress.
//
// Masquerade's flows (a sandbox's connection out) are carried the same way, the other
// way round: out by `carry_out` (the source becomes the masquerade's address and port),
// their replies in by `ferry_inbound` (the destination back to the sandbox's).
//
// `ferry_inbound` sees every segment the host receives on an uplink, the host's own
// traffic too; it looks up conntrack only for a flow whose other direction `carry_out`
// found carriable (`inbound`, a hint): a sandbox answers every flow in, and every flow
// out is its own.
//
// A segment is taken only when the host would have done the same with it:
//
//   - the gate is open (no rule in ferry's `user` chain, which would see every packet);
//   - IPv4 without options or fragments; TCP without SYN, FIN or RST (conntrack sees a
//     flow begin and end); a TTL the host would forward;
//   - its entry is confirmed, assured, destination-NATed and not also source-NATed, not
//     dying, in state ESTABLISHED, and carries ferry's accept bit in its mark (ferry's
//     forward chain accepted the flow, and accepts its every later packet at once: only
//     `user` comes before that, which the gate covers);
//   - the entry is liberal both ways (IP_CT_TCP_FLAG_BE_LIBERAL): conntrack does not see
//     the packets this path carries, so its TCP window falls behind; when the flow comes
//     back to the host's path (the gate closed, the endpoint gone) a strict entry would
//     take the next segment for an out-of-window one and the flow would be reset. A flow
//     not yet liberal takes the host's path and is named to ferryd (`flows`, once a
//     second at most), which marks it (ferry-kernel's conntrack::mark_liberal); its later segments come here;
//   - the route (bpf_fib_lookup, from the link the host would see it enter by) has a
//     resolved neighbour, and the segment fits the link it leaves by.
//
// Each segment carried refreshes its entry's timeout to the namespace's established
// timeout (`established_ms`, set at load), as conntrack would have.

// The kernel's types, as much of them as is read here; CO-RE finds the rest. Every index
// into an array is a constant, so that the loader relocates it by the kernel's sizes.
union nf_inet_addr {
    __u32 all[4];
    __be32 ip;
} __attribute__((preserve_access_index));

struct nf_conntrack_man {
    union nf_inet_addr u3;
    union {
        __be16 all;
        struct {
            __be16 port;
        } tcp;
    } u;
} __attribute__((preserve_access_index));

struct nf_conntrack_tuple {
    struct nf_conntrack_man src;
    struct {
        union nf_inet_addr u3;
        union {
            __be16 all;
            struct {
                __be16 port;
            } tcp;
        } u;
    } dst;
} __attribute__((preserve_access_index));

struct nf_conntrack_tuple_hash {
    struct nf_conntrack_tuple tuple;
} __attribute__((preserve_access_index));

struct ip_ct_tcp_state {
    __u8 flags;
} __attribute__((preserve_access_index));

struct ip_ct_tcp {
    struct ip_ct_tcp_state seen[2];
    __u8 state;
} __attribute__((preserve_access_index));

union nf_conntrack_proto {
    struct ip_ct_tcp tcp;
} __attribute__((preserve_access_index));

struct nf_conn {
    unsigned long status;
    __u32 mark;
    struct nf_conntrack_tuple_hash tuplehash[2];
    union nf_conntrack_proto proto;
} __attribute__((preserve_access_index));

#include <linux/in.h>
#include <linux/tcp.h>

#undef __always_inline
#define __always_inline inline __attribute__((always_inline))

#include "ct_kfuncs.h"

static long (*fib_lookup)(void *, struct bpf_fib_lookup *, int, __u32) = (void *)BPF_FUNC_fib_lookup;
static long (*check_mtu)(struct __sk_buff *, __u32, __u32 *, __s32, __u64) =
    (void *)BPF_FUNC_check_mtu;
static long (*l3_csum)(struct __sk_buff *, __u32, __u64, __u64, __u64) =
    (void *)BPF_FUNC_l3_csum_replace;
static long (*l4_csum)(struct __sk_buff *, __u32, __u64, __u64, __u64) =
    (void *)BPF_FUNC_l4_csum_replace;
static long (*map_update)(void *, const void *, const void *, __u64) =
    (void *)BPF_FUNC_map_update_elem;
static long (*map_delete)(void *, const void *) = (void *)BPF_FUNC_map_delete_elem;
static long (*ringbuf_output)(void *, void *, __u64, __u64) = (void *)BPF_FUNC_ringbuf_output;
static __u64 (*ktime_ns)(void) = (void *)BPF_FUNC_ktime_get_ns;

// The namespace's nf_conntrack_tcp_timeout_established, in ms (set by the loader).
volatile const __u32 established_ms = 432000000;

#define ACCEPT_MARK 0x00100000 // ferry-core's nft::ACCEPT_MARK
#define IPS_CONFIRMED (1 << 3)
#define IPS_SRC_NAT (1 << 4)
#define IPS_DST_NAT (1 << 5)
#define IPS_ASSURED (1 << 2)
#define IPS_DYING (1 << 9)
#define TCP_CONNTRACK_ESTABLISHED 3
#define IP_CT_TCP_FLAG_BE_LIBERAL 0x08
#define PACKET_HOST 0

#define OFF_IP 14
#define OFF_TTL (OFF_IP + 8)
#define OFF_IP_CSUM (OFF_IP + 10)
#define OFF_SRC (OFF_IP + 12)
#define OFF_DST (OFF_IP + 16)
#define OFF_TCP (OFF_IP + 20)
#define OFF_SPORT OFF_TCP
#define OFF_DPORT (OFF_TCP + 2)
#define OFF_TCP_CSUM (OFF_TCP + 16)

// A flow by its entry's original direction, as ferryd reads it from `flows`: must match
// parse_flow in ferry-kernel's src/shortcut/routed.rs.
struct flow_key {
    __be32 src;
    __be32 dst;
    __be16 sport;
    __be16 dport;
};

// The flows named to ferryd, and when (ns), so that each is named once a second at most
// (least recently used go first): a marking that failed, or a new flow on an old flow's
// addresses and ports, is named again.
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 16384);
    __type(key, struct flow_key);
    __type(value, __u64);
} named SEC(".maps");

#define RENAME_NS 1000000000ull

// The flows `ferry_inbound` looks for, by the tuple their segments have entering by an
// uplink (the far end's address and port, then the host's), put here by `carry_out` when
// the flow's other direction is carriable (before its route is looked up). A hint, not a
// verdict: ferry_inbound still reads the entry and checks all of the above. So the host's
// own TCP traffic on the uplinks, which is not here, costs one hash lookup instead of a
// conntrack lookup; a flow whose hint was pushed out (least recently used first) takes
// the host's path until its sandbox sends again.
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 65536);
    __type(key, struct flow_key);
    __type(value, __u8);
} inbound SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 64 * 1024);
} flows SEC(".maps");

// What a carried segment becomes: the address and port it gets, as its destination
// (to_dst) or its source.
struct nat {
    __u32 addr;
    __u16 port;
    __u16 to_dst;
};

// The IPv4 and TCP headers of a segment this path may carry, or null.
static __always_inline struct tcphdr *segment(struct __sk_buff *skb, struct iphdr **ipp) {
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end || eth->h_proto != __builtin_bswap16(ETH_P_IP))
        return 0;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end || ip->ihl != 5 || ip->protocol != IPPROTO_TCP ||
        (ip->frag_off & __builtin_bswap16(0x3fff)) || ip->ttl <= 1)
        return 0;
    struct tcphdr *tcp = (void *)(ip + 1);
    if ((void *)(tcp + 1) > end || tcp->syn || tcp->fin || tcp->rst)
        return 0;
    *ipp = ip;
    return tcp;
}

// Names a flow not yet liberal to ferryd, unless it was named within RENAME_NS.
static __always_inline void name_flow(struct nf_conn *ct) {
    struct flow_key k = {
        .src = ct->tuplehash[0].tuple.src.u3.ip,
        .dst = ct->tuplehash[0].tuple.dst.u3.ip,
        .sport = ct->tuplehash[0].tuple.src.u.tcp.port,
        .dport = ct->tuplehash[0].tuple.dst.u.tcp.port,
    };
    __u64 now = ktime_ns();
    __u64 *when = map_lookup(&named, &k);
    if (when && now - *when < RENAME_NS)
        return;
    if (map_update(&named, &k, &now, BPF_ANY))
        return;
    if (ringbuf_output(&flows, &k, sizeof(k), 0))
        map_delete(&named, &k); // the ring is full: name it at its next segment
}

#define WANTED (IPS_CONFIRMED | IPS_ASSURED)
#define NATS (IPS_SRC_NAT | IPS_DST_NAT)

// Whether entry `ct` may be carried: exactly one kind of NAT (a published port's or
// masquerade's), and liberal (or it is named, and goes the host's path this time).
static __always_inline int carriable(struct nf_conn *ct) {
    unsigned long status = ct->status;
    unsigned long nat = status & NATS;
    if ((status & (WANTED | IPS_DYING)) != WANTED || nat == 0 || nat == NATS ||
        !(ct->mark & ACCEPT_MARK) || ct->proto.tcp.state != TCP_CONNTRACK_ESTABLISHED)
        return 0;
    __u8 liberal = ct->proto.tcp.seen[0].flags & ct->proto.tcp.seen[1].flags;
    if (!(liberal & IP_CT_TCP_FLAG_BE_LIBERAL)) {
        name_flow(ct);
        return 0;
    }
    return 1;
}

// The translation of a segment of a carriable flow, as the host's NAT would make it: the
// segment ends up as the inverse of the other direction's tuple, which differs from it in
// the destination (a published port's flow in, masquerade's reply) or in the source (a
// published port's reply, masquerade's flow out). 0 if the flow is not carried.
static __always_inline int translation(struct __sk_buff *skb, struct iphdr *ip,
                                       struct tcphdr *tcp, struct nat *n) {
    struct bpf_sock_tuple t = {};
    t.ipv4.saddr = ip->saddr;
    t.ipv4.daddr = ip->daddr;
    t.ipv4.sport = tcp->source;
    t.ipv4.dport = tcp->dest;
    struct bpf_ct_opts opts = {.netns_id = -1, .l4proto = IPPROTO_TCP};
    struct nf_conn *ct = bpf_skb_ct_lookup(skb, &t, sizeof(t.ipv4), &opts, sizeof(opts));
    if (!ct)
        return 0;
    int ok = carriable(ct);
    if (ok) {
        int reply = opts.dir != 0;
        int dnat = (ct->status & IPS_DST_NAT) != 0;
        n->to_dst = dnat != reply;
        // Read with constant indexes only (see the types above).
        if (n->to_dst && reply) {
            n->addr = ct->tuplehash[0].tuple.src.u3.ip;
            n->port = ct->tuplehash[0].tuple.src.u.tcp.port;
        } else if (n->to_dst) {
            n->addr = ct->tuplehash[1].tuple.src.u3.ip;
            n->port = ct->tuplehash[1].tuple.src.u.tcp.port;
        } else if (reply) {
            n->addr = ct->tuplehash[0].tuple.dst.u3.ip;
            n->port = ct->tuplehash[0].tuple.dst.u.tcp.port;
        } else {
            n->addr = ct->tuplehash[1].tuple.dst.u3.ip;
            n->port = ct->tuplehash[1].tuple.dst.u.tcp.port;
        }
        bpf_ct_change_timeout(ct, established_ms);
    }
    bpf_ct_release(ct);
    return ok;
}

// The route of a segment entering by link `from` from `src` to `dst`: its link and MACs
// in `fib`; 0 when the host would not forward it from here (no route, no neighbour yet,
// forwarding off on `from`).
static __always_inline int route(struct __sk_buff *skb, __u32 from, __be32 src, __be32 dst,
                                 struct bpf_fib_lookup *fib) {
    fib->family = 2; // AF_INET
    fib->l4_protocol = IPPROTO_TCP;
    fib->tot_len = 0; // the size is checked against the link it leaves by (check_mtu)
    fib->ipv4_src = src;
    fib->ipv4_dst = dst;
    fib->ifindex = from;
    return fib_lookup(skb, fib, sizeof(*fib), 0) == BPF_FIB_LKUP_RET_SUCCESS;
}

// same_mac for MACs only 2-aligned (bpf_fib_lookup's).
static __always_inline int same_mac_2(const __u8 *a, const __u8 *b) {
    const __u16 *x = (const __u16 *)a, *y = (const __u16 *)b;
    return x[0] == y[0] && x[1] == y[1] && x[2] == y[2];
}

// Whether the segment fits link `out` (each segment of a GSO one, for a GSO one).
static __always_inline int fits(struct __sk_buff *skb, __u32 out) {
    __u32 len = 0;
    return check_mtu(skb, out, &len, 0, 0) == 0;
}

// Rewrites the segment as the host's forward and NAT would: address and port, TTL, the
// checksums, and the MACs `dmac` and `smac`.
static __always_inline int rewrite(struct __sk_buff *skb, struct iphdr *ip, struct tcphdr *tcp,
                                   struct nat *n, const __u8 *dmac, const __u8 *smac) {
    __u32 old_addr = n->to_dst ? ip->daddr : ip->saddr;
    __u16 old_port = n->to_dst ? tcp->dest : tcp->source;
    __u32 addr_off = n->to_dst ? OFF_DST : OFF_SRC;
    __u32 port_off = n->to_dst ? OFF_DPORT : OFF_SPORT;
    __u16 old_ttl = *(__u16 *)&ip->ttl; // ttl and protocol: one word of the checksum
    __u8 ttl = ip->ttl - 1;
    __u16 new_ttl = (old_ttl & 0xff00) | ttl; // as read: ttl in the low byte
    __u8 macs[12];
    __builtin_memcpy(macs, dmac, 6);
    __builtin_memcpy(macs + 6, smac, 6);
    // The helpers invalidate every packet pointer: nothing of `ip` or `tcp` is read below.
    if (l4_csum(skb, OFF_TCP_CSUM, old_addr, n->addr, BPF_F_PSEUDO_HDR | 4) ||
        l4_csum(skb, OFF_TCP_CSUM, old_port, n->port, 2) ||
        l3_csum(skb, OFF_IP_CSUM, old_addr, n->addr, 4) || l3_csum(skb, OFF_IP_CSUM, old_ttl, new_ttl, 2) ||
        store_bytes(skb, addr_off, &n->addr, 4, 0) || store_bytes(skb, port_off, &n->port, 2, 0) ||
        store_bytes(skb, OFF_TTL, &ttl, 1, 0))
        return -1;
    return store_bytes(skb, 0, macs, sizeof(macs), 0) ? -1 : 0;
}

// Tells `ferry_inbound` to look for the other direction of the flow whose segment a
// sandbox sends, translated by `n`: from where it goes, to what it comes from after NAT.
static __always_inline void hint_inbound(struct iphdr *ip, struct tcphdr *tcp, struct nat *n) {
    struct flow_key k = {ip->daddr, n->addr, tcp->dest, n->port};
    __u8 one = 1;
    if (!map_lookup(&inbound, &k))
        map_update(&inbound, &k, &one, BPF_ANY);
}

// A segment in through an uplink (a published port's flow in, masquerade's reply): into
// its sandbox, if the shortcut carries the endpoint the route leads to.
SEC("classifier") int ferry_inbound(struct __sk_buff *skb) {
    struct iphdr *ip;
    struct tcphdr *tcp;
    struct nat n;
    struct bpf_fib_lookup fib = {};
    if (skb->pkt_type != PACKET_HOST || !open() || !(tcp = segment(skb, &ip)))
        return TC_ACT_UNSPEC;
    struct flow_key hint = {ip->saddr, ip->daddr, tcp->source, tcp->dest};
    if (!map_lookup(&inbound, &hint))
        return TC_ACT_UNSPEC;
    if (!translation(skb, ip, tcp, &n) || !n.to_dst ||
        !route(skb, skb->ifindex, ip->saddr, n.addr, &fib))
        return TC_ACT_UNSPEC;
    struct target_key key = {.bridge = fib.ifindex, .ip = n.addr};
    struct target *dst = map_lookup(&targets, &key);
    if (!dst || !same_mac_2(dst->mac, fib.dmac))
        return TC_ACT_UNSPEC;
    __u32 host_end = dst->host_end;
    if (!fits(skb, host_end))
        return TC_ACT_UNSPEC;
    // Rewritten, it cannot go back to the host's path: a failed rewrite drops it, as a
    // packet the host could not forward (TCP sends it again).
    if (rewrite(skb, ip, tcp, &n, fib.dmac, fib.smac))
        return TC_ACT_SHOT;
    return redirect_peer(host_end, 0);
}

// A segment a sandbox (`src`) sends to be routed (a published port's reply, masquerade's
// flow out): out by the route's link. -1: not carried here.
static __always_inline int carry_out(struct __sk_buff *skb, struct source *src) {
    struct iphdr *ip;
    struct tcphdr *tcp;
    struct nat n;
    struct bpf_fib_lookup fib = {};
    if (!(tcp = segment(skb, &ip)) || !translation(skb, ip, tcp, &n) || n.to_dst)
        return -1;
    hint_inbound(ip, tcp, &n);
    if (!route(skb, src->bridge, n.addr, ip->daddr, &fib) || !fits(skb, fib.ifindex))
        return -1;
    if (rewrite(skb, ip, tcp, &n, fib.dmac, fib.smac))
        return TC_ACT_SHOT;
    return redirect(fib.ifindex, 0);
}
