// A program that calls kernel functions (kfuncs) and reads what one returns through
// CO-RE, for the tests of crates/ferry-kernel/src/kfuncs.rs: what a conntrack fast path
// (docs/PERFORMANCE.md, "a conntrack fast path") needs from the loader. Never attached:
// the tests only patch it and have the verifier accept it.
#include <linux/bpf.h>
#include <linux/pkt_cls.h>

#define SEC(n) __attribute__((section(n), used))

// The kernel's own types, as much of them as this reads; CO-RE finds the rest.
struct nf_conn {
    __u32 mark;
} __attribute__((preserve_access_index));

#include "ct_kfuncs.h"

SEC("classifier") int probe(struct __sk_buff *skb) {
    struct bpf_sock_tuple t = {};
    struct bpf_ct_opts opts = {.netns_id = -1, .l4proto = 6};
    struct nf_conn *ct = bpf_skb_ct_lookup(skb, &t, sizeof(t.ipv4), &opts, sizeof(opts));
    if (!ct)
        return TC_ACT_UNSPEC;
    __u32 mark = ct->mark;
    bpf_ct_release(ct);
    return mark ? TC_ACT_OK : TC_ACT_UNSPEC;
}

char _license[] SEC("license") = "GPL";
