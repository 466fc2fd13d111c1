// The conntrack kfuncs ferry's BPF objects call, and their options (the kernel's
// `struct bpf_ct_opts`), declared once for bpf/conntrack.h and bpf/kfunc_probe.c.
// crates/ferry-kernel/src/kfuncs.rs resolves the calls before aya loads an object.
#ifndef FERRY_CT_KFUNCS_H
#define FERRY_CT_KFUNCS_H

struct nf_conn;

struct bpf_ct_opts {
    __s32 netns_id;
    __s32 error;
    __u8 l4proto;
    __u8 dir;
    __u16 ct_zone_id;
    __u8 ct_zone_dir;
    __u8 reserved[3];
};

#define __ksym __attribute__((section(".ksyms")))
extern struct nf_conn *bpf_skb_ct_lookup(struct __sk_buff *, struct bpf_sock_tuple *, __u32,
                                         struct bpf_ct_opts *, __u32) __ksym;
extern void bpf_ct_release(struct nf_conn *) __ksym;
extern void bpf_ct_change_timeout(struct nf_conn *, __u32) __ksym;

#endif
