#!/usr/bin/env python3
"""ferry's peer benchmarks. Started by bench/run (which builds ferry in release mode and
gives this process private mounts); see docs/PERFORMANCE.md for what each figure means.

Every comparison is taken round by round in one run: each round runs every contender once,
in the same order, so a noisy neighbour slows all of them alike, and a ratio is the median
of the per-round ratios. Figures are medians with min and max over the rounds (after one
warm-up round that is thrown away).
"""

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tools import BUSYBOX, DP_PORT, Cni, Docker, Ferry, Floor, Netavark, count_rules  # noqa: E402
from world import World, log, sh  # noqa: E402

MODES = {
    # rounds of the attach/detach latency, scale sizes, rounds at each size,
    # data-plane rounds and seconds per iperf3 run
    "quick": dict(rounds=10, sizes=[0, 100], scale_rounds=8, dp_rounds=5, dp_secs=3, rr_secs=2, parallel=100),
    "full": dict(rounds=30, sizes=[0, 100, 1000], scale_rounds=20, dp_rounds=5, dp_secs=10, rr_secs=5, parallel=100),
}


def ms(ns):
    return ns / 1e6


def stats(xs):
    return dict(median=statistics.median(xs), min=min(xs), max=max(xs), n=len(xs))


def fmt(s, unit="ms", digits=1):
    if s is None:
        return "—"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


def ahead(ratios):
    """In how many rounds a ratio is above 1, and the sign test's chance of at least that
    many were ferry and the other equal (one-sided binomial, p = 1/2): whether a median
    ratio near 1 says anything at all."""
    n, k = len(ratios), sum(r > 1 for r in ratios)
    if not n:
        return "—"
    p = sum(math.comb(n, i) for i in range(k, n + 1)) / 2 ** n
    return f"{k} of {n} (p {p:.2f})"


def set_bridge_nf(value):
    """br_netfilter's calls into the IP, IPv6 and ARP hooks, in the current namespace."""
    for fam in ("iptables", "ip6tables", "arptables"):
        sh(["sysctl", "-q", "-w", f"net.bridge.bridge-nf-call-{fam}={value}"])


class Bench:
    def __init__(self, mode, bindir, only, phases, verify=False):
        self.mode = mode
        self.verify = verify
        self.phases = phases
        self.cfg = MODES[mode]
        self.w = World()
        self.bindir = bindir
        self.only = only
        self.results = dict(mode=mode, started=datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"), machine=machine())
        self.md = []

    # -- phases -------------------------------------------------------------------
    def setup_tools(self):
        want = self.only or ["floor", "ferry", "netavark", "cni", "docker"]
        if "ferry" in want and "scale" in self.phases:
            want = want + ["ferry0"]
        ctor = dict(floor=lambda: Floor(self.w), ferry=lambda: Ferry(self.w, self.bindir, verify=self.verify),
                    ferry0=lambda: Ferry(self.w, self.bindir, tag="ferry0", grows=False,
                                         name="ferry, a second ferryd left empty", verify=self.verify),
                    netavark=lambda: Netavark(self.w), cni=lambda: Cni(self.w), docker=lambda: Docker(self.w))
        self.tools = {}
        for k in ["floor", "ferry", "ferry0", "netavark", "cni", "docker"]:
            if k in want:
                log(f"bench: setting up {k}")
                t0 = time.time()
                t = ctor[k]()
                t.setup()
                self.tools[k] = t
                log(f"bench:   {k} ready in {time.time() - t0:.1f}s")
        self.w.go_home()

    def cases(self, port_too=True, keys=None):
        out = []
        for k, t in self.tools.items():
            if keys and k not in keys:
                continue
            out.append((k, t, False))
            if port_too and k != "floor":
                out.append((k, t, True))
        return out

    def rounds(self, n, cases):
        """Run n rounds (plus a warm-up) of attach+detach over every case, interleaved.
        Returns {case: {"attach": [...ms], "detach": [...], "total": [...]}}."""
        res = {}
        skipped = {}
        for r in range(n + 1):
            for k, t, port in alternate(cases, r):
                key = (k, port)
                if port and not t.supports_port:
                    skipped[key] = t.port_refusal if hasattr(t, "port_refusal") else "no port support"
                    continue
                a = t.attach(port)
                t.check_attached(port)  # untimed; only with --smoke
                d = t.detach(port)
                t.check_detached(port)
                if r == 0:
                    continue  # warm-up
                e = res.setdefault(key, dict(attach=[], detach=[], total=[]))
                e["attach"].append(ms(a))
                e["detach"].append(ms(d))
                e["total"].append(ms(a + d))
        self.w.go_home()
        return res, skipped

    def latency(self):
        n = self.cfg["rounds"]
        log(f"bench: attach+detach latency, {n} rounds")
        res, skipped = self.rounds(n, self.cases())
        rules = {k: t.rules() for k, t in self.tools.items()}
        self.w.go_home()
        self.results["latency"] = dict(rounds=n, cases={f"{k}{'+port' if p else ''}": v for (k, p), v in res.items()},
                                       skipped={f"{k}+port": why for (k, p), why in skipped.items()}, rules_n0=rules)
        floor = res.get(("floor", False))
        rows = []
        for k, _, port in self.cases():
            v = res.get((k, port))
            if v is None:
                rows.append((self.tools[k].name + " + 1 port", skipped.get((k, port), "?")))
                continue
            ratio = None
            if floor:
                ratio = stats([a / b for a, b in zip(v["total"], floor["total"])])
            rows.append((self.tools[k].name + (" + 1 port" if port else ""), stats(v["attach"]), stats(v["detach"]),
                         stats(v["total"]), ratio))
        self.md.append(f"### Attach + detach of one endpoint (N=0, {n} rounds)\n")
        self.md.append("ms, median (min–max); ratio = this total / the floor's total in the same round.\n")
        self.md.append("| contender | attach | detach | attach+detach | × floor |")
        self.md.append("|---|---|---|---|---|")
        for row in rows:
            if len(row) == 2:
                self.md.append(f"| {row[0]} | not supported by this build: `{row[1]}` | | | |")
                continue
            name, a, d, tot, ratio = row
            self.md.append(f"| {name} | {fmt(a)} | {fmt(d)} | {fmt(tot)} | {fmt(ratio, digits=2)} |")
        self.md.append("")

    def scale(self):
        sizes = [s for s in self.cfg["sizes"] if s > 0]
        n = self.cfg["scale_rounds"]
        table = {}
        rules = {0: self.results["latency"]["rules_n0"]}
        for size in sizes:
            for k, t in self.tools.items():
                if k == "docker" and size > 100:
                    continue  # a containerd shim per container: 1000 is beyond this machine
                if not getattr(t, "grows", True):
                    continue  # ferry's empty twin stays at N=0
                log(f"bench: scale: filling {k} to {size} endpoints")
                t0 = time.time()
                t.fill(size, port=t.supports_port and k != "floor")
                log(f"bench:   {k} filled in {time.time() - t0:.1f}s")
            self.w.go_home()
            keys = [k for k in self.tools if not (k == "docker" and size > 100)]
            log(f"bench: scale: {n} rounds at N={size}")
            res, _ = self.rounds(n, self.cases(keys=keys))
            table[size] = res
            rules[size] = {k: self.tools[k].rules() for k in keys}
            self.w.go_home()
        self.results["scale"] = dict(rounds=n, sizes=sizes, rules=rules, cases={
            str(size): {f"{k}{'+port' if p else ''}": v for (k, p), v in res.items()} for size, res in table.items()})
        lat = self.results["latency"]["cases"]
        self.md.append(f"### Scale: one more attach+detach with N endpoints present ({n} rounds at each N)\n")
        self.md.append("Fillers carry one published port each where the contender publishes ports. "
                       "ms, median (min–max); growth = median at N / median at N=0.\n")
        head = "| contender | N=0 | " + " | ".join(f"N={s} | growth" for s in sizes) + " |"
        self.md.append(head)
        self.md.append("|---" * (2 + 2 * len(sizes)) + "|")
        for k, t in self.tools.items():
            for port in (False, True):
                key = f"{k}{'+port' if port else ''}"
                if key not in lat:
                    continue
                base = statistics.median(lat[key]["total"])
                cells = [t.name + (" + 1 port" if port else ""), fmt(stats(lat[key]["total"]))]
                for s in sizes:
                    v = table[s].get((k, port))
                    if v is None:
                        cells += ["—", "—"]
                    else:
                        cells += [fmt(stats(v["total"])), f"{statistics.median(v['total']) / base:.2f}×"]
                self.md.append("| " + " | ".join(cells) + " |")
        self.md.append("")
        self.twin_growth(table, sizes)
        self.md.append("Firewall rules each contender leaves in its namespace (`nft -j list ruleset`, which "
                       "includes iptables-nft rules), with the measured endpoint detached:\n")
        allsizes = [0] + sizes
        self.md.append("| contender | " + " | ".join(f"N={s}" for s in allsizes) + " |")
        self.md.append("|---" * (1 + len(allsizes)) + "|")
        for k, t in self.tools.items():
            self.md.append("| " + t.name + " | " + " | ".join(str(rules[s].get(k, "—")) for s in allsizes) + " |")
        self.md.append("")

    def twin_growth(self, table, sizes):
        """ferry at N against its empty twin in the same rounds: the growth with N with the
        machine held still (the table above compares phases minutes apart, and by N=1000
        every contender's fillers are on the machine)."""
        lat = self.results["latency"]["cases"]
        if "ferry0" not in self.tools or "ferry" not in lat:
            return
        self.md.append("ferry's growth in the same rounds: the filled ferryd's attach+detach over that of a "
                       "second ferryd left empty (its own namespace and bridge, N=0), measured in the same "
                       "rounds, the two swapping places every other round; median (min–max) of the ratios "
                       "per pair of rounds. At N=0 both are empty: that column is the method's own error.\n")
        self.md.append("| contender | N=0 | " + " | ".join(f"N={s}" for s in sizes) + " |")
        self.md.append("|---" * (2 + len(sizes)) + "|")
        twin = {0: lat}
        for s in sizes:
            twin[s] = {f"{k}{'+port' if p else ''}": v for (k, p), v in table[s].items()}
        out = {}
        for port in ("", "+port"):
            cells = ["ferry" + (" + 1 port" if port else "")]
            for s in [0] + sizes:
                a, b = twin[s].get("ferry" + port), twin[s].get("ferry0" + port)
                if not a or not b:
                    cells.append("—")
                    continue
                r = stats(pair_ratios(a["total"], b["total"]))
                out[f"{s}{port}"] = r
                cells.append(fmt(r, digits=2) + "×")
            self.md.append("| " + " | ".join(cells) + " |")
        self.results["scale"]["twin_growth"] = out
        self.md.append("")

    def parallel(self):
        f = self.tools.get("ferry")
        if not f:
            return
        count = self.cfg["parallel"]
        f.fill(count)
        sh(f.cli("network", "create", "--subnet", "10.206.0.0/16", "fbpar"))
        names = [f"f{i}" for i in range(count)]
        log(f"bench: parallel: {count} attaches from 16 clients")

        def launch(clients, verb):
            # The CLI processes are started by xargs, not by Python threads: a Python
            # launcher (fork from a big process, the GIL) took longer than ferryd's work.
            t = time.perf_counter_ns()
            subprocess.run(["xargs", "-P", str(clients), "-n", "1", *f.cli("network", verb, "fbpar")],
                           input="\n".join(names).encode(), check=True, stdout=subprocess.DEVNULL)
            return time.perf_counter_ns() - t

        cpu0 = proc_cpu_ms(f.proc.pid)
        total = launch(16, "connect")
        par_cpu = proc_cpu_ms(f.proc.pid) - cpu0
        insp = json.loads(sh(f.cli("network", "inspect", "fbpar")).stdout)
        addrs = [c["IPv4Address"].split("/")[0] for c in insp[0]["Containers"].values()]
        kernel_addrs = []
        for name in names:
            out = sh(f.cli("exec", name, "--", BUSYBOX, "ip", "-4", "-o", "addr")).stdout
            kernel_addrs += [ln.split()[3].split("/")[0] for ln in out.splitlines() if "10.206." in ln]
        ok = len(addrs) == count and len(set(addrs)) == count and sorted(kernel_addrs) == sorted(addrs)
        # The same attaches one after another through the same launcher, for comparison
        # (disconnect first); ferryd's CPU time across each, from /proc.
        launch(16, "disconnect")
        cpu0 = proc_cpu_ms(f.proc.pid)
        seq = launch(1, "connect")
        seq_cpu = proc_cpu_ms(f.proc.pid) - cpu0
        # Detaches in a burst: each CLI call returns once the pair is retired; the kernel's
        # deletions follow in the background. Time until no retired pair is left.
        burst = launch(1, "disconnect")
        t3 = time.perf_counter_ns()
        f.enter()
        try:
            while "fyz" in sh(["ip", "-o", "link", "show"]).stdout and time.perf_counter_ns() - t3 < 30e9:
                time.sleep(0.002)
        finally:
            self.w.go_home()
        drain = time.perf_counter_ns() - t3
        self.results["parallel"] = dict(count=count, clients=16, total_ms=ms(total), ferryd_cpu_ms=par_cpu,
                                        sequential_ms=ms(seq), sequential_ferryd_cpu_ms=seq_cpu,
                                        addresses=len(addrs), unique=len(set(addrs)),
                                        kernel_matches=sorted(kernel_addrs) == sorted(addrs),
                                        burst_detach_ms=ms(burst), burst_drain_ms=ms(drain))
        self.md.append(f"### Parallel: {count} attaches from 16 clients against one ferryd\n")
        self.md.append(f"- total wall time: **{ms(total):.0f} ms** ({ms(total) / count:.1f} ms per attach); "
                       f"ferryd's CPU time across it {par_cpu:.0f} ms")
        self.md.append(f"- the same {count} attaches one after another: {ms(seq):.0f} ms (ferryd's CPU {seq_cpu:.0f} ms)")
        self.md.append(f"- then {count} detaches one after another: {ms(burst):.0f} ms; the kernel had deleted "
                       f"every pair {ms(drain):.0f} ms after the last one returned")
        self.md.append(f"- addresses: {len(addrs)} in `network inspect`, {len(set(addrs))} distinct; "
                       f"the sandboxes' own interfaces hold exactly those: "
                       f"{'yes' if sorted(kernel_addrs) == sorted(addrs) else 'NO'} → "
                       f"{'no address repeats' if ok else 'FAILED'}\n")
        if not ok:
            raise RuntimeError(f"parallel attach: addresses repeat or disagree: {sorted(addrs)} vs {sorted(kernel_addrs)}")

    def dataplane(self):
        f = self.tools.get("ferry")
        if not f:
            return
        rounds, secs, rr_secs = self.cfg["dp_rounds"], self.cfg["dp_secs"], self.cfg["rr_secs"]
        # More rounds, and the routed paths alone, for a question one run cannot settle.
        rounds = int(os.environ.get("FBENCH_DP_ROUNDS", rounds))
        routed_only = os.environ.get("FBENCH_DP_ONLY") == "routed"
        log(f"bench: data plane: {rounds} rounds of {secs} s iperf3 runs and {rr_secs} s sockperf ping-pongs")
        w = self.w
        # The limit: a bare veth pair between two namespaces.
        w.netns("fb-vA")
        w.netns("fb-vB")
        sh(["ip", "-n", "fb-vA", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", "fb-vB"])
        sh(["ip", "-n", "fb-vA", "addr", "add", "10.207.0.1/24", "dev", "eth0"])
        sh(["ip", "-n", "fb-vB", "addr", "add", "10.207.0.2/24", "dev", "eth0"])
        sh(["ip", "-n", "fb-vA", "link", "set", "eth0", "up"])
        sh(["ip", "-n", "fb-vB", "link", "set", "eth0", "up"])
        # A plain Linux bridge made with iproute2 (what ferry's bridge should cost), and
        # the same with br_netfilter's calls into iptables/nftables off in its namespace
        # (the kernel here has br_netfilter built in, so every namespace starts with
        # bridge-nf-call-iptables=1 and bridged packets pass the IP hooks).
        for h, a, b, net, nf in (("fb-brH", "fb-brA", "fb-brB", "10.209.0", "1"),
                                 ("fb-bnH", "fb-bnA", "fb-bnB", "10.211.0", "0")):
            for ns in (h, a, b):
                w.netns(ns)
            w.enter(h)
            sh(["ip", "link", "add", "br0", "type", "bridge"])
            sh(["ip", "link", "set", "br0", "up"])
            set_bridge_nf(nf)
            for ns, addr in ((a, f"{net}.1/24"), (b, f"{net}.2/24")):
                sh(["ip", "link", "add", f"v{ns[-1]}", "master", "br0", "up", "type", "veth", "peer", "name",
                    "eth0", "netns", ns])
                sh(["ip", "-n", ns, "addr", "add", addr, "dev", "eth0"])
                sh(["ip", "-n", ns, "link", "set", "eth0", "up"])
        # The peers' bridges, each with two more containers, where those peers are in the run.
        w.go_home()
        peers = [(k, self.tools[k].dataplane_pair()) for k in ("netavark", "cni", "docker") if k in self.tools]
        servers = []

        def serve(prefix, bind=None):
            # iperf3 on its port (the same-network and masquerade paths) and on 80 (behind
            # each contender's published port, the DNAT path), sockperf's TCP server.
            b = ["-B", bind] if bind else []
            for cmd in (["iperf3", "-s", *b], ["iperf3", "-s", "-p", "80", *b], ["sockperf", "sr", "--tcp", "-p", "11111"]):
                servers.append(subprocess.Popen(prefix + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        for ns, addr in (("fb-vA", "10.207.0.1"), ("fb-brA", "10.209.0.1"), ("fb-bnA", "10.211.0.1")):
            serve(["nsenter", f"--net=/run/netns/{ns}"], addr)
        for _, (srv, _, addr) in peers:
            serve(srv, addr)
        w.on_cleanup("stop the data plane's servers", lambda: [(p.kill(), p.wait()) for p in servers])
        # ferry: two sandboxes on one bridge network; the server publishes DP_PORT.
        sh(f.cli("network", "create", "--subnet", "10.208.0.0/16", "fbdp"))
        sh(f.cli("run", "-d", "--name", "dpsrv", "--network", "fbdp", "-p", f"{DP_PORT}:80", "--", BUSYBOX, "sh",
                 "-c", "iperf3 -s -p 80 & sockperf sr --tcp -p 11111 & exec iperf3 -s"))
        f.run_sleeper("dpcli", "fbdp")
        srv_ip = json.loads(sh(f.cli("inspect", "dpsrv")).stdout)[0]["NetworkSettings"]["Networks"]["fbdp"]["IPAddress"]
        time.sleep(0.5)

        def ferry_nf_off(fn):
            # ferry's bridge with br_netfilter's calls off in ferryd's namespace, for this
            # run only: the kernel state `ferryd --br-netfilter off` makes.
            def run(*a):
                f.enter()
                set_bridge_nf("0")
                w.go_home()
                try:
                    return fn(*a)
                finally:
                    f.enter()
                    set_bridge_nf("1")
                    w.go_home()
            return run

        def ferry_slow(fn):
            # ferry's bridge without the shortcut (the tc/BPF program that hands frames
            # between two sandboxes of a network straight to the receiver), for this run
            # only. The shortcut's gain is ferry ÷ this row.
            def run(*a):
                with self.shortcut_closed(f):
                    return fn(*a)
            return run

        ferry_cli = f.cli("exec", "dpcli", "--")
        rows = [("veth", "bare veth pair between two namespaces (the limit)", ["nsenter", "--net=/run/netns/fb-vB"], "10.207.0.1"),
                ("plain", "two namespaces on a plain bridge made with iproute2", ["nsenter", "--net=/run/netns/fb-brB"], "10.209.0.1"),
                ("ferry", "two sandboxes on a ferry bridge", ferry_cli, srv_ip),
                ("plain_nf0", "plain bridge, bridge-nf-call-*=0 in its namespace", ["nsenter", "--net=/run/netns/fb-bnB"], "10.211.0.1"),
                ("ferry_nf0", "ferry bridge, bridge-nf-call-*=0 in ferryd's namespace (`--br-netfilter off`)", ferry_cli, srv_ip),
                ("ferry_slow", "ferry bridge without the shortcut (its gate closed by a rule in `user` for the run)",
                 ferry_cli, srv_ip)]
        rows += [(k, f"two containers on {self.tools[k].name}'s bridge (its own namespace, br_netfilter's calls on as "
                     f"there)", cli, ip) for k, (_, cli, ip) in peers]
        res = {k: dict(gbps=[], cpu=[], own_cpu=[], p50=[], p99=[], tps=[]) for k, *_ in rows}
        if routed_only:
            self.dataplane_routed(f, peers, secs, rr_secs, rounds)
            return
        for r in range(rounds + 1):
            # Every other round in reverse order, so that drift in the machine's load
            # does not favour whichever path comes first; round 0 is a warm-up.
            for k, _, prefix, addr in (rows if r % 2 == 0 else rows[::-1]):
                ip_fn, rr_fn = {"ferry_nf0": (ferry_nf_off(iperf), ferry_nf_off(rr)),
                                "ferry_slow": (ferry_slow(iperf), ferry_slow(rr))}.get(k, (iperf, rr))
                t = ip_fn(prefix, addr, 5201, secs)
                lat = rr_fn(prefix, addr, rr_secs)
                if r == 0:
                    continue
                for m, v in {**t, **lat}.items():
                    res[k][m].append(v)
        self.results["dataplane"] = dict(rounds=rounds, secs=secs, rr_secs=rr_secs, paths=res)
        label = {k: lab for k, lab, *_ in rows}
        self.md.append(f"### Data plane, same network: {rounds} rounds (after a warm-up) of a {secs} s iperf3 TCP "
                       f"stream and a {rr_secs} s sockperf TCP ping-pong (64 B) per path\n")
        self.md.append("Medians (min–max) over the rounds. Gbit/s is one stream; CPU is busy CPU-seconds per Gbit "
                       "transferred, from /proc/stat over the iperf3 run (the whole machine: other load counts), and "
                       "iperf3's own sender+receiver CPU per Gbit (its processes only, softirq work done in their "
                       "context included); round trip in µs at p50 and p99.\n")
        self.md.append("| path | Gbit/s | × bare veth | CPU s/Gbit (/proc/stat) | iperf3's CPU s/Gbit | RTT p50 µs | "
                       "RTT p99 µs |")
        self.md.append("|---|---|---|---|---|---|---|")
        veth = res["veth"]["gbps"]
        for k, *_ in rows:
            x = res[k]
            self.md.append(f"| {label[k]} | {fmt(stats(x['gbps']), digits=2)} | "
                           f"{fmt(stats([a / v for a, v in zip(x['gbps'], veth)]), digits=3)} | "
                           f"{fmt(stats(x['cpu']), digits=3)} | {fmt(stats(x['own_cpu']), digits=3)} | "
                           f"{fmt(stats(x['p50']), digits=1)} | {fmt(stats(x['p99']), digits=1)} |")
        self.md.append("")
        self.md.append("ferry against each, per round (throughput: ferry ÷ other, goal ≥ 1; CPU per Gbit and round "
                       "trip: ferry ÷ other, goal ≤ 1; the goal against the plain bridge is ≥ 0.95 and ≤ 1/0.95):\n")
        self.md.append("| ferry ÷ | Gbit/s | rounds ferry ahead (sign test) | CPU/Gbit (/proc/stat) | "
                       "iperf3's CPU/Gbit | RTT p50 | RTT p99 |")
        self.md.append("|---|---|---|---|---|---|---|")
        for mine, other in ([("ferry", "plain"), ("ferry_nf0", "plain_nf0"), ("ferry", "ferry_slow")]
                            + [("ferry", k) for k, _ in peers]):
            cells = [fmt(stats([a / b for a, b in zip(res[mine][m], res[other][m])]), digits=3)
                     for m in ("gbps", "cpu", "own_cpu", "p50", "p99")]
            cells.insert(1, ahead([a / b for a, b in zip(res[mine]["gbps"], res[other]["gbps"])]))
            self.md.append(f"| {label[mine]} ÷ {label[other]} | " + " | ".join(cells) + " |")
        self.md.append("")
        self.dataplane_routed(f, peers, secs, rr_secs, rounds)

    @contextlib.contextmanager
    def shortcut_closed(self, f):
        """ferry without its shortcut for a while: a rule in the `user` chain closes the
        gate, as any rule there does, and the bridge and the host carry everything as they
        did before the shortcut."""
        f.enter()
        sh(["nft", "add rule inet ferry user meta mark 0x7e57 counter"])
        self.w.go_home()
        time.sleep(0.3)  # ferryd hears the rule and closes the gate
        try:
            yield
        finally:
            f.enter()
            sh(["nft", "flush chain inet ferry user"])
            self.w.go_home()
            time.sleep(0.3)

    @contextlib.contextmanager
    def unguarded(self, f):
        """ferry without its anti-spoofing check for a while (the bridge-family prerouting
        chain that sends frames from ferry's veths to `guard`)."""
        hook = ("add chain bridge ferry prerouting { type filter hook prerouting priority -200; "
                "policy accept; }\nflush chain bridge ferry prerouting\n"
                "add rule bridge ferry prerouting iifname \"fy*\" jump guard\n")
        f.enter()
        sh(["nft", "delete chain bridge ferry prerouting"])
        self.w.go_home()
        try:
            yield
        finally:
            f.enter()
            subprocess.run(["nft", "-f", "-"], input=hook, text=True, check=True)
            self.w.go_home()

    def dataplane_routed(self, f, peers, secs, rr_secs, rounds):
        """Routed paths: out through masquerade (a sandbox to a peer namespace joined to the
        contender's host namespace by a veth pair) and in through DNAT (that peer to the
        server's published port at the host's address on the link), for ferry and each peer
        in the same rounds."""
        w = self.w
        # (key, host namespace, the server's client-side prefix for masquerade)
        who = [("ferry", f.host, f.cli("exec", "dpcli", "--"))]
        who += [(k, self.tools[k].host, cli) for k, (_, cli, _) in peers]
        servers = []
        links = {}
        for i, (k, host, _) in enumerate(who):
            up = f"fb-up{i}"
            w.netns(up)
            sh(["ip", "-n", host, "link", "add", "fbup0", "type", "veth", "peer", "name", "eth0", "netns", up])
            sh(["ip", "-n", host, "addr", "add", f"172.30.{i}.1/24", "dev", "fbup0"])
            sh(["ip", "-n", host, "link", "set", "fbup0", "up"])
            sh(["ip", "-n", up, "addr", "add", f"172.30.{i}.2/24", "dev", "eth0"])
            sh(["ip", "-n", up, "link", "set", "eth0", "up"])
            pre = ["nsenter", f"--net=/run/netns/{up}"]
            for cmd in (["iperf3", "-s"], ["sockperf", "sr", "--tcp", "-p", "11111"]):
                servers.append(subprocess.Popen(pre + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            links[k] = (pre, f"172.30.{i}.1", f"172.30.{i}.2")
        w.on_cleanup("stop the routed paths' servers", lambda: [(p.kill(), p.wait()) for p in servers])
        time.sleep(0.5)
        # ferry's own paths again, without its shortcut and without its anti-spoofing check:
        # what each costs on routed traffic is ferry ÷ that row.
        variants = {"ferry_slow": lambda: self.shortcut_closed(f), "ferry_noguard": lambda: self.unguarded(f)}
        if os.environ.get("FBENCH_DP_CONTROL") == "1":
            # ferry's own path once more in a variant's slot: whether the slot alone moves a figure
            variants["ferry_again"] = contextlib.nullcontext
        who += [(k, f.host, who[0][2]) for k in variants]
        links.update({k: links["ferry"] for k in variants})
        res = {(k, p): dict(gbps=[], cpu=[], own_cpu=[], p50=[], p99=[], tps=[]) for k, *_ in who
               for p in ("masq", "dnat")}
        for r in range(rounds + 1):
            for k, _, cli in (who if r % 2 == 0 else who[::-1]):
                up, host_ip, peer_ip = links[k]
                with variants.get(k, contextlib.nullcontext)():
                    got = {("masq"): {**iperf(cli, peer_ip, 5201, secs), **rr(cli, peer_ip, rr_secs)},
                           ("dnat"): iperf(up, host_ip, DP_PORT, secs)}
                if r == 0:
                    continue
                for p, t in got.items():
                    for m, v in t.items():
                        res[(k, p)][m].append(v)
        self.results["dataplane_routed"] = {f"{k}/{p}": v for (k, p), v in res.items()}
        perf_dir = os.environ.get("FBENCH_PERF")
        if perf_dir:
            for k, _, cli in who:
                up, host_ip, peer_ip = links[k]
                with variants.get(k, contextlib.nullcontext)():
                    profiled(perf_dir, f"{k}-out-rr", lambda: rr(cli, peer_ip, 4))
                    profiled(perf_dir, f"{k}-out", lambda: iperf(cli, peer_ip, 5201, 4))
                    profiled(perf_dir, f"{k}-in", lambda: iperf(up, host_ip, DP_PORT, 4))
        name = {"ferry": "ferry", "ferry_slow": "ferry without the shortcut",
                "ferry_noguard": "ferry without the anti-spoofing check",
                "ferry_again": "ferry again, in a variant's slot (a control)",
                **{k: self.tools[k].name for k, _ in peers}}
        self.md.append(f"### Data plane, routed: {rounds} rounds (after a warm-up), the same runs\n")
        self.md.append("Out: a sandbox to a peer namespace joined to the contender's namespace by a veth pair, "
                       "through its masquerade. In: that peer to the server's published port "
                       f"({DP_PORT}→80) at the host's address on the link, through its DNAT (dockerd's "
                       "docker-proxy is not on this path: the peer is not the host's loopback).\n")
        self.md.append("| contender, path | Gbit/s | CPU s/Gbit (/proc/stat) | iperf3's CPU s/Gbit | RTT p50 µs | RTT p99 µs |")
        self.md.append("|---|---|---|---|---|---|")
        for (k, p), x in res.items():
            lat = (f"{fmt(stats(x['p50']), digits=1)} | {fmt(stats(x['p99']), digits=1)}" if x["p50"] else "— | —")
            self.md.append(f"| {name[k]}, {'out (masquerade)' if p == 'masq' else 'in (DNAT)'} | "
                           f"{fmt(stats(x['gbps']), digits=2)} | {fmt(stats(x['cpu']), digits=3)} | "
                           f"{fmt(stats(x['own_cpu']), digits=3)} | {lat} |")
        self.md.append("")
        self.md.append("ferry ÷ each peer, per round (Gbit/s: goal ≥ 1; CPU and round trip: goal ≤ 1):\n")
        self.md.append("| path | ferry ÷ | Gbit/s | rounds ferry ahead (sign test) | CPU/Gbit (/proc/stat) | "
                       "iperf3's CPU/Gbit | RTT p50 | RTT p99 |")
        self.md.append("|---|---|---|---|---|---|---|---|")
        for p in ("masq", "dnat"):
            for k in [k for k, _ in peers] + list(variants):
                a, b = res[("ferry", p)], res[(k, p)]
                cells = [fmt(stats([x / y for x, y in zip(a[m], b[m])]), digits=3) if a[m] else "—"
                         for m in ("gbps", "cpu", "own_cpu", "p50", "p99")]
                cells.insert(1, ahead([x / y for x, y in zip(a["gbps"], b["gbps"])]))
                self.md.append(f"| {'out (masquerade)' if p == 'masq' else 'in (DNAT)'} | {name[k]} | "
                               + " | ".join(cells) + " |")
        self.md.append("")

    def dns(self):
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        script = os.path.join(here, "dns", "run")
        if not os.access(script, os.X_OK):
            self.md.append("### DNS\n\n(bench/dns/run is not in this tree yet.)\n")
            return
        log("bench: DNS (bench/dns/run)")
        r = subprocess.run([script, f"--{self.mode}"], capture_output=True, text=True, timeout=1800,
                           env={**os.environ, "FERRY_BIN_DIR": self.bindir})
        self.md.append("### DNS\n")
        self.md.append(r.stdout.strip() or "(no output)")
        if r.returncode != 0:
            self.md.append(f"\nbench/dns/run failed (exit {r.returncode}): `{r.stderr.strip()[-500:]}`")
        self.md.append("")


def profiled(out_dir, label, run):
    """With FBENCH_PERF=DIR: `run` under a system-wide perf recording (kernel stacks, 999 Hz),
    written as DIR/LABEL.script for bench/lib/perfgroup-style grouping. An aid for finding
    where a path's time goes in ferry and in each peer alike; no figure in the report."""
    os.makedirs(out_dir, exist_ok=True)
    data = os.path.join(out_dir, f"{label}.data")
    rec = subprocess.Popen(["perf", "record", "-a", "-g", "-F", "999", "-e", "cpu-clock", "-o", data],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        got = run()
    finally:
        rec.send_signal(signal.SIGINT)
        rec.wait()
    with open(os.path.join(out_dir, f"{label}.script"), "w") as fh:
        subprocess.run(["perf", "script", "-i", data], stdout=fh, stderr=subprocess.DEVNULL)
    os.unlink(data)
    log(f"bench: profiled {label}: {got}")


def busy_cpu_s():
    """The machine's busy CPU-seconds so far (user, nice, system, irq, softirq), /proc/stat."""
    with open("/proc/stat") as fh:
        v = [int(x) for x in fh.readline().split()[1:8]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def iperf(prefix, addr, port, secs):
    """One iperf3 TCP stream: Gbit/s, the machine's busy CPU-seconds per Gbit over the run,
    and iperf3's own (sender + receiver) CPU-seconds per Gbit."""
    pin = os.environ.get("FBENCH_IPERF_AFFINITY")
    pin = ["-A", pin] if pin else []
    c0 = busy_cpu_s()
    r = sh(prefix + ["iperf3", "-c", addr, "-p", str(port), "-t", str(secs), "-J", *pin], timeout=secs + 60)
    c1 = busy_cpu_s()
    end = json.loads(r.stdout)["end"]
    rx = end["sum_received"]
    gbit = rx["bytes"] * 8 / 1e9
    own = end["cpu_utilization_percent"]
    own_s = (own["host_total"] + own["remote_total"]) / 100 * rx["seconds"]
    return dict(gbps=rx["bits_per_second"] / 1e9, cpu=(c1 - c0) / gbit, own_cpu=own_s / gbit)


def rr(prefix, addr, secs):
    """A sockperf TCP ping-pong of 64-byte messages: round trip p50 and p99 (µs) and
    exchanges per second."""
    r = sh(prefix + ["sockperf", "ping-pong", "--tcp", "-i", addr, "-p", "11111", "-t", str(secs), "-m", "64",
                     "--full-rtt"], timeout=secs + 60)
    out = r.stdout + r.stderr
    pct = {}
    tps = None
    for ln in out.splitlines():
        m = re.search(r"percentile\s+([\d.]+)\s*=\s*([\d.]+)", ln)
        if m:
            pct[m.group(1)] = float(m.group(2))
        m = re.search(r"RunTime=([\d.]+) sec; SentMessages=\d+; ReceivedMessages=(\d+)", ln)
        if m:
            tps = int(m.group(2)) / float(m.group(1))
    if "50.000" not in pct or "99.000" not in pct or not tps:
        raise RuntimeError(f"sockperf to {addr}: no percentiles in its output: {out[-300:]!r}")
    return dict(p50=pct["50.000"], p99=pct["99.000"], tps=tps)


def alternate(cases, r):
    """The round's order: odd rounds swap ferry and its empty twin. Where a case sits in
    the round matters (the one right after the floor runs ~15% slower, and the one after a
    ferry detach meets the reaper deleting the pair it retired), so each pair of rounds
    puts each of the two in each place once."""
    if r % 2 == 0:
        return cases
    swap = {"ferry": "ferry0", "ferry0": "ferry"}
    by_key = {(k, p): (k, t, p) for k, t, p in cases}
    return [by_key.get((swap.get(k, k), p), (k, t, p)) for k, t, p in cases]


def pair_ratios(a, b):
    """a over b per pair of rounds (1+2, 3+4, ...; recorded rounds start at 1, which is
    swapped): each pair holds one round in each order."""
    return [(a[i] + a[i + 1]) / (b[i] + b[i + 1]) for i in range(0, min(len(a), len(b)) - 1, 2)]


def proc_cpu_ms(pid):
    """A process's user + system CPU time so far, in ms (clock ticks from /proc)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def machine():
    cpus = os.cpu_count()
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    load = open("/proc/loadavg").read().split()[:3]
    return dict(kernel=platform.release(), cpus=cpus, cpu=model, loadavg_at_start=" ".join(load))


def versions():
    def first(args):
        r = subprocess.run(args, capture_output=True, text=True)
        return (r.stdout or r.stderr).strip().splitlines()[0] if (r.stdout or r.stderr).strip() else "?"
    return {
        "netavark": first(["/usr/lib/podman/netavark", "--version"]),
        "CNI plugins": first(["dpkg-query", "-W", "containernetworking-plugins"]),
        "dockerd": first(["dockerd", "--version"]),
        "iproute2": first(["ip", "-V"]),
        "iperf3": first(["iperf3", "--version"]),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=MODES, default="quick")
    ap.add_argument("--bindir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", action="append", help="run only these contenders (floor, ferry, ...)")
    ap.add_argument("--phases", default="latency,scale,parallel,dataplane,dns")
    ap.add_argument("--smoke", action="store_true",
                    help="check what every attach and detach did (an address, distinct addresses, the "
                         "published port answering, then refused); for bench/run --smoke")
    a = ap.parse_args()

    def stop(signum, _frame):
        raise SystemExit(f"bench: interrupted by signal {signum}; cleaning up")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    phases = a.phases.split(",")
    b = Bench(a.mode, a.bindir, a.only, phases, verify=a.smoke)
    t0 = time.time()
    rc = 0
    try:
        b.w.private_netns_dir()
        b.results["versions"] = versions()
        b.setup_tools()
        for p in ("latency", "scale", "parallel", "dataplane", "dns"):
            if p not in phases:
                continue
            try:
                getattr(b, p)()
            except Exception as e:  # keep the other phases' figures
                b.w.go_home()
                log(f"bench: phase {p} failed: {e!r}")
                b.md.append(f"\n**Phase {p} failed:** `{e!r}`\n")
                rc = 1
    except BaseException as e:
        log(f"bench: failed: {e!r}")
        b.md.append(f"\n**The run failed:** `{e!r}`\n")
        rc = 1
    finally:
        errors = b.w.cleanup()
        if errors:
            rc = 1
    b.results["seconds"] = round(time.time() - t0)
    os.makedirs(a.out, exist_ok=True)
    head = [f"Mode `{a.mode}`, {b.results['started']}, {b.results['seconds']} s; kernel {b.results['machine']['kernel']}, "
            f"{b.results['machine']['cpus']} CPUs ({b.results['machine']['cpu']}), load average at start "
            f"{b.results['machine']['loadavg_at_start']}.", ""]
    for k, v in b.results.get("versions", {}).items():
        head.append(f"- {k}: `{v}`")
    head.append("")
    report = "\n".join(head + b.md) + "\n"
    with open(os.path.join(a.out, "report.md"), "w") as f:
        f.write(report)
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(b.results, f, indent=1)
    print(report)
    sys.exit(rc)


if __name__ == "__main__":
    main()
