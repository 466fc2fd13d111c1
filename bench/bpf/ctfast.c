// An experiment for issue 18's routed goal, not ferry's data path: how fast a published
// port's stream gets when its established packets skip the host's IPv4 stack (routing,
// conntrack, NAT, ferry's forward chain) and a tc/BPF program does their NAT itself from
// the flow's conntrack entry (the conntrack kfuncs), as an nftables flowtable would if
// this kernel had one. bench/lib/ctfast.py builds it (with a vmlinux.h that bpftool dumps
// from the running kernel) and attaches it for the bench's `ferry_ctfast` contender.
//
// `inbound`, at the ingress of the link the peer's packets come in on: a TCP packet of
// an established flow (no SYN, FIN or RST) whose conntrack entry is confirmed, assured,
// destination-NATed, in TCP state ESTABLISHED and carries ferry's accept bit in its mark
// gets the entry's
// translation (destination address and port), its TTL lowered, the sandbox's MACs (a FIB
// lookup, as the host's forward would) and goes straight into the sandbox's namespace
// (bpf_redirect_peer on its veth's host end, SRV_VETH, compiled in).
//
// `reply`, at the ingress of ferry's bridge (what the shortcut hands up to the host): the
// same test on the reply's entry, the reverse translation (source back to the published
// address and port), the TTL, the MACs of the route out (a FIB lookup), and out of that
// link's egress.
//
// Each packet that goes past refreshes its entry's timeout. FIN and RST take the host's
// path, so conntrack sees a flow end; it has not seen the middle, so the host namespace
// runs with nf_conntrack_tcp_be_liberal=1 for the experiment (a flowtable marks its
// flows liberal one by one; a BPF program cannot).
#include "vmlinux.h"

#define SEC(n) __attribute__((section(n), used))
#define __ksym __attribute__((section(".ksyms")))
#define __always_inline inline __attribute__((always_inline))

#define TC_ACT_OK 0
#define ETH_P_IP 0x0800
#define AF_INET 2
#define IPPROTO_TCP_ 6
#define ACCEPT_MARK 0x00100000
#define ESTABLISHED_MS 432000000u // conntrack's TCP established timeout, 5 days

extern struct nf_conn *bpf_skb_ct_lookup(struct __sk_buff *, struct bpf_sock_tuple *, u32,
                                         struct bpf_ct_opts *, u32) __ksym;
extern void bpf_ct_release(struct nf_conn *) __ksym;
extern int bpf_ct_change_timeout(struct nf_conn *, u32) __ksym;

static long (*redirect)(u32, u64) = (void *)BPF_FUNC_redirect;
static long (*redirect_peer)(u32, u64) = (void *)BPF_FUNC_redirect_peer;
static long (*fib_lookup)(void *, struct bpf_fib_lookup *, int, u32) = (void *)BPF_FUNC_fib_lookup;
static long (*store_bytes)(struct __sk_buff *, u32, const void *, u32, u64) =
    (void *)BPF_FUNC_skb_store_bytes;
static long (*l3_csum)(struct __sk_buff *, u32, u64, u64, u64) = (void *)BPF_FUNC_l3_csum_replace;
static long (*l4_csum)(struct __sk_buff *, u32, u64, u64, u64) = (void *)BPF_FUNC_l4_csum_replace;

#define IP_OFF 14
#define IP_CSUM (IP_OFF + 10)
#define IP_TTL (IP_OFF + 8)
#define IP_SRC (IP_OFF + 12)
#define IP_DST (IP_OFF + 16)
#define TCP_OFF (IP_OFF + 20)
#define TCP_SPORT TCP_OFF
#define TCP_DPORT (TCP_OFF + 2)
#define TCP_CSUM (TCP_OFF + 16)
#define PSEUDO 0x10 // BPF_F_PSEUDO_HDR

#define WANTED ((1 << IPS_CONFIRMED_BIT) | (1 << IPS_ASSURED_BIT) | (1 << IPS_DST_NAT_BIT))

// The translation a packet gets: the new address and port, and which end they replace.
struct nat {
    u32 addr;
    u16 port;
};

// The flow's entry, if the fast path may carry this packet; `dir` is the entry's
// direction this packet travels (0: as the peer sent it, 1: the sandbox's reply).
static __always_inline int flow(struct __sk_buff *skb, struct iphdr *ip, struct tcphdr *tcp,
                                int dir, struct nat *out) {
    struct bpf_sock_tuple t = {};
    t.ipv4.saddr = ip->saddr;
    t.ipv4.daddr = ip->daddr;
    t.ipv4.sport = tcp->source;
    t.ipv4.dport = tcp->dest;
    struct bpf_ct_opts opts = {.netns_id = -1, .l4proto = IPPROTO_TCP_};
    struct nf_conn *ct = bpf_skb_ct_lookup(skb, &t, sizeof(t.ipv4), &opts, sizeof(opts));
    if (!ct)
        return 0;
    int ok = (ct->status & WANTED) == WANTED && (ct->mark & ACCEPT_MARK) && opts.dir == dir &&
             ct->proto.tcp.state == TCP_CONNTRACK_ESTABLISHED;
    if (ok) {
        // In: the destination becomes the reply's source (the sandbox). Out: the source
        // becomes the original's destination (the published address and port).
        struct nf_conntrack_tuple *o = &ct->tuplehash[dir ? 0 : 1].tuple;
        out->addr = dir ? o->dst.u3.ip : o->src.u3.ip;
        out->port = dir ? o->dst.u.tcp.port : o->src.u.tcp.port;
        bpf_ct_change_timeout(ct, ESTABLISHED_MS);
    }
    bpf_ct_release(ct);
    return ok;
}

// Rewrites the address at `addr_off` and the port at `port_off`, lowers the TTL, and
// addresses the frame for the route to `dst`; returns the route's ifindex or 0.
static __always_inline u32 rewrite(struct __sk_buff *skb, struct iphdr *ip, struct nat *n,
                                   int addr_off, int port_off, u32 old_addr, u16 old_port,
                                   u32 dst) {
    struct bpf_fib_lookup fib = {};
    fib.family = AF_INET;
    fib.l4_protocol = IPPROTO_TCP_;
    // tot_len 0: the kernel checks the MTU against the skb, GSO segments as they will leave
    fib.tot_len = 0;
    fib.ipv4_src = addr_off == IP_SRC ? n->addr : ip->saddr;
    fib.ipv4_dst = dst;
    fib.ifindex = skb->ingress_ifindex;
    if (fib_lookup(skb, &fib, sizeof(fib), 0) != 0)
        return 0;
    u16 old_ttl = *(u16 *)&ip->ttl; // ttl and protocol, one 16-bit word of the checksum
    u8 ttl = ip->ttl - 1;
    if (ttl == 0)
        return 0;
    u16 new_ttl = (old_ttl & 0xff00) | ttl;
    l4_csum(skb, TCP_CSUM, old_addr, n->addr, PSEUDO | 4);
    l4_csum(skb, TCP_CSUM, old_port, n->port, 2);
    l3_csum(skb, IP_CSUM, old_addr, n->addr, 4);
    l3_csum(skb, IP_CSUM, old_ttl, new_ttl, 2);
    store_bytes(skb, addr_off, &n->addr, 4, 0);
    store_bytes(skb, port_off, &n->port, 2, 0);
    store_bytes(skb, IP_TTL, &ttl, 1, 0);
    store_bytes(skb, 0, fib.dmac, 6, 0);
    store_bytes(skb, 6, fib.smac, 6, 0);
    return fib.ifindex;
}

// The IPv4 and TCP headers of a plain established segment, or null.
static __always_inline struct tcphdr *segment(struct __sk_buff *skb, struct iphdr **ipp) {
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end || eth->h_proto != __builtin_bswap16(ETH_P_IP))
        return 0;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end || ip->ihl != 5 || ip->protocol != IPPROTO_TCP_ ||
        (ip->frag_off & __builtin_bswap16(0x3fff)))
        return 0;
    struct tcphdr *tcp = (void *)(ip + 1);
    if ((void *)(tcp + 1) > end || tcp->syn || tcp->fin || tcp->rst)
        return 0;
    *ipp = ip;
    return tcp;
}

// Carries a segment of a flow in direction `dir` (0: in, rewriting the destination;
// 1: the reply, rewriting the source); returns the route's ifindex, or 0 to pass it on.
static __always_inline u32 carry(struct __sk_buff *skb, int dir) {
    struct iphdr *ip;
    struct tcphdr *tcp = segment(skb, &ip);
    struct nat n;
    if (!tcp || !flow(skb, ip, tcp, dir, &n))
        return 0;
    u32 old_addr = dir ? ip->saddr : ip->daddr;
    u16 old_port = dir ? tcp->source : tcp->dest;
    u32 route_to = dir ? ip->daddr : n.addr;
    return rewrite(skb, ip, &n, dir ? IP_SRC : IP_DST, dir ? TCP_SPORT : TCP_DPORT, old_addr,
                   old_port, route_to);
}

SEC("inbound") int ct_inbound(struct __sk_buff *skb) {
    return carry(skb, 0) ? redirect_peer(SRV_VETH, 0) : TC_ACT_OK;
}

SEC("reply") int ct_reply(struct __sk_buff *skb) {
    u32 out = carry(skb, 1);
    return out ? redirect(out, 0) : TC_ACT_OK;
}

char _license[] SEC("license") = "GPL";
