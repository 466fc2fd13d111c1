// bench/bpf/probe's bridge experiment (issue 18): a tc/BPF shortcut between two sandboxes
// on one of ferry's bridges, to measure how much of the same-network path's cost is the
// bridge and the hooks of ferryd's namespace. Not ferry's data path: the values are
// compiled in (-D) for one pair of sandboxes.
//
// On a sandbox's veth host end (ingress: what the sandbox sends), an IPv4 packet to the
// other sandbox goes straight into that sandbox's namespace (bpf_redirect_peer on the
// other host end: no bridge, no br_netfilter, no nftables hook, no backlog); the frame is
// already addressed to the other sandbox's MAC. Anything else falls through.
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>

#define SEC(n) __attribute__((section(n), used))

static long (*redirect_peer)(__u32, __u64) = (void *)BPF_FUNC_redirect_peer;

SEC("fshort") int shortcut(struct __sk_buff *skb) {
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end || eth->h_proto != __builtin_bswap16(ETH_P_IP))
        return TC_ACT_OK;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end || ip->daddr != PEER_IP)
        return TC_ACT_OK;
    return redirect_peer(PEER_VETH, 0);
}

char _license[] SEC("license") = "GPL";
