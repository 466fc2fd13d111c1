#!/usr/bin/env python3
"""Where a data path's busy time goes: `perf script` output (kernel call graphs, as
FBENCH_PERF=DIR bench/run writes them) grouped by the first netfilter, conntrack, bridge,
tc/BPF or stack frame from each sample's leaf, the nftables ones by the hook that called
them. Idle samples are left out; shares are of busy samples.

    bench/lib/perfgroup.py DIR/ferry-out-rr.script [DIR/netavark-out-rr.script ...]
"""

import collections
import sys

# (group, the frame name prefixes that put a sample in it), tried in order from the leaf.
PREFIXES = [
    ("conntrack + nat", ("nf_conntrack", "nf_ct_", "tcp_in_window", "nf_nat", "__nf_conntrack",
                         "nf_confirm", "ipv4_conntrack", "hash_conntrack")),
    ("br_netfilter", ("br_nf", "ip_sabotage_in", "nf_bridge", "br_validate_ipv4")),
    ("nf hook dispatch", ("nf_hook",)),
    ("tc/BPF", ("bpf_", "cls_bpf", "tcf_", "tc_run", "sch_handle", "bpf_prog")),
    ("bridge", ("br_", "nbp_", "__br_")),
    ("copies", ("copy_", "_copy", "rep_movs", "memcpy", "skb_copy_datagram", "simple_copy")),
    ("TCP", ("tcp_", "__tcp")),
    ("IPv4 stack", ("ip_", "__ip", "fib_", "ipv4_", "inet_", "dst_", "rt_")),
    ("veth", ("veth_",)),
    ("core net (dev, skb, neigh, gro)", ("neigh", "__neigh", "dev_", "__dev", "netif_", "__netif", "skb_",
                                         "__skb", "kfree_skb", "consume_skb", "napi", "process_backlog",
                                         "gro", "__napi")),
]

# The frame below an nftables one that tells which hook called it.
HOOKS = [
    ("nft: bridge prerouting (guard)", lambda t: t.startswith("br_handle_frame")),
    ("nft: forward", lambda t: t == "ip_forward"),
    ("nft: prerouting", lambda t: t in ("ip_rcv", "ip_rcv_core", "br_nf_pre_routing", "ip_sabotage_in")),
    ("nft: postrouting/output", lambda t: t.startswith(("ip_output", "ip_finish_output")) or t in (
        "__ip_local_out", "br_nf_post_routing", "ip_forward_finish")),
    ("nft: via br_netfilter (other)", lambda t: t.startswith("br_nf")),
    ("nft: bridge hook (other)", lambda t: t.startswith("br_")),
]


def samples(path):
    """Each sample's frame names, leaf first."""
    cur = []
    for ln in open(path, errors="replace"):
        if not ln.strip():
            if cur:
                yield cur
            cur = []
        elif ln[0] in " \t":
            parts = ln.split()
            if len(parts) >= 2:
                cur.append(parts[1].split("+")[0])
    if cur:
        yield cur


def idle(syms):
    """A sample of an idle CPU (not of softirq work done on its way out of idle)."""
    if "default_idle" in syms or "cpuidle" in syms[0] or syms[0].startswith("pv_native_safe_halt"):
        return True
    return any(s in ("default_idle_call", "cpu_idle_poll") for s in syms[:8]) and not any(
        s in ("__do_softirq", "handle_softirqs") for s in syms)


def classify(syms):
    for i, s in enumerate(syms):
        if s == "nft_do_chain" or s.startswith(("nft_", "nf_tables")):
            return next((g for t in syms[i:] for g, test in HOOKS if test(t)), "nft: other")
        for group, prefixes in PREFIXES:
            if s.startswith(prefixes):
                return group
    return "other"


def main():
    for path in sys.argv[1:]:
        groups = collections.Counter(classify(s) for s in samples(path) if s and not idle(s))
        busy = sum(groups.values())
        print(f"{path}: {busy} busy samples")
        for k, v in groups.most_common():
            print(f"  {k:40s} {100 * v / max(busy, 1):5.1f} %")


if __name__ == "__main__":
    main()
