"""An experiment for issue 18's routed goal (FBENCH_CTFAST=1): ferry's routed path in
through DNAT with bench/bpf/ctfast.c attached, which carries a published port's
established packets past the host's IPv4 stack, doing their NAT from the flow's conntrack
entry (see the program's head). Not ferry's data path; a contender of the routed phase,
`ferry_ctfast`, so its figures sit in the same rounds as ferry's and the peers'."""

import contextlib
import os
import subprocess

from world import sh

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREF = "49"  # the filters' priority, so that they come off alone


def build(out_dir, srv_veth_ifindex):
    """Compile the program for the server's veth (its host end's ifindex) with a vmlinux.h
    dumped from the running kernel; returns the object's path."""
    # clang and bpftool: scripts/setup installs both (bench/run runs it first)
    os.makedirs(out_dir, exist_ok=True)
    header = os.path.join(out_dir, "vmlinux.h")
    with open(header, "w") as f:
        subprocess.run(["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "c"],
                       stdout=f, check=True)
    obj = os.path.join(out_dir, "ctfast.o")
    sh(["clang", "-O2", "-g", "-target", "bpf", f"-I{out_dir}", f"-DSRV_VETH={srv_veth_ifindex}",
        "-c", os.path.join(HERE, "bpf", "ctfast.c"), "-o", obj])
    return obj


def ifindex(ns, dev):
    """A link's ifindex in namespace `ns`."""
    return int(sh(["ip", "-n", ns, "-o", "link", "show", "dev", dev]).stdout.split(":")[0])


@contextlib.contextmanager
def carried(ns, obj, uplink, bridge):
    """The program on `uplink`'s ingress (`inbound`) and on `bridge`'s (`reply`) in
    namespace `ns`, with conntrack liberal there, for the block; everything back after."""
    liberal = "/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal"
    before = sh(["ip", "netns", "exec", ns, "cat", liberal]).stdout.strip()
    sh(["ip", "netns", "exec", ns, "sh", "-c", f"echo 1 > {liberal}"])
    for dev, sec in ((uplink, "inbound"), (bridge, "reply")):
        # ferryd's own filters may sit under this clsact already: add it only if missing
        sh(["tc", "-n", ns, "qdisc", "add", "dev", dev, "clsact"], check=False)
        sh(["tc", "-n", ns, "filter", "add", "dev", dev, "ingress", "pref", PREF, "bpf", "da", "obj", obj,
            "sec", sec])
    try:
        yield
    finally:
        for dev in (uplink, bridge):
            sh(["tc", "-n", ns, "filter", "del", "dev", dev, "ingress", "pref", PREF], check=False)
        sh(["ip", "netns", "exec", ns, "sh", "-c", f"echo {before} > {liberal}"], check=False)


def forwarded(ns):
    """Datagrams the host's IPv4 stack has forwarded (/proc/net/snmp, Ip: ForwDatagrams):
    the fast path's packets are not among them."""
    lines = [ln.split() for ln in sh(["ip", "netns", "exec", ns, "cat", "/proc/net/snmp"]).stdout.splitlines()
             if ln.startswith("Ip:")]
    return int(lines[1][lines[0].index("ForwDatagrams")])
