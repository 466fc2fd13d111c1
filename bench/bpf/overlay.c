// bench/bpf/probe's experiment (issue 14): a tc/BPF fast path for one overlay flow
// between two sandboxes on two hosts, to measure how close to a hand-built VXLAN pair a
// path that skips the bridge, the IPv4 forward and the host's hooks can get. Not ferry's
// data path: every value is compiled in (-D) for the one pair of sandboxes.
//
// tx, on the sandbox's veth host end (ingress: what the sandbox sends): an IPv4 packet to
// the peer sandbox gets the tunnel's metadata (remote host VTEP, VNI) and goes straight
// out of the host's external-mode VXLAN device. rx, on that device (ingress): an IPv4
// packet for this host's sandbox gets the sandbox's MAC as destination and goes straight
// into the sandbox's namespace (bpf_redirect_peer: no second pass through the veth).
// Anything else falls through to the normal path (TC_ACT_OK).
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>

#define SEC(n) __attribute__((section(n), used))

static long (*skb_store_bytes)(struct __sk_buff *, __u32, const void *, __u32, __u64) =
    (void *)BPF_FUNC_skb_store_bytes;
static long (*skb_set_tunnel_key)(struct __sk_buff *, struct bpf_tunnel_key *, __u32, __u64) =
    (void *)BPF_FUNC_skb_set_tunnel_key;
static long (*redirect)(__u32, __u64) = (void *)BPF_FUNC_redirect;
static long (*redirect_peer)(__u32, __u64) = (void *)BPF_FUNC_redirect_peer;

static __always_inline struct iphdr *ipv4_to(struct __sk_buff *skb, __u32 daddr) {
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end || eth->h_proto != __builtin_bswap16(ETH_P_IP))
        return 0;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end || ip->daddr != daddr)
        return 0;
    return ip;
}

SEC("ftx") int tx_prog(struct __sk_buff *skb) {
    if (!ipv4_to(skb, PEER_IP))
        return TC_ACT_OK;
    struct bpf_tunnel_key key = {};
    key.remote_ipv4 = VTEP; /* host byte order */
    key.tunnel_id = VNI;
    key.tunnel_ttl = 64;
    if (skb_set_tunnel_key(skb, &key, sizeof(key), 0))
        return TC_ACT_OK;
    return redirect(FX, 0);
}

SEC("frx") int rx_prog(struct __sk_buff *skb) {
    if (!ipv4_to(skb, MY_IP))
        return TC_ACT_OK;
    unsigned char mac[6] = MY_MAC;
    skb_store_bytes(skb, 0, mac, 6, 0);
    return redirect_peer(VETH, 0);
}

char _license[] SEC("license") = "GPL";
