#!/usr/bin/env python3
"""ferry's peer benchmarks. Started by bench/run (which builds ferry in release mode and
gives this process private mounts); see docs/PERFORMANCE.md for what each figure means.

Every comparison is taken round by round in one run: each round runs every contender once,
in the same order, so a noisy neighbour slows all of them alike, and a ratio is the median
of the per-round ratios. Figures are medians with min and max over the rounds (after one
warm-up round that is thrown away).
"""

import argparse
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tools import BUSYBOX, Cni, Docker, Ferry, Floor, Netavark, count_rules  # noqa: E402
from world import World, log, sh  # noqa: E402

MODES = {
    # rounds of the attach/detach latency, scale sizes, rounds at each size,
    # data-plane rounds and seconds per iperf3 run
    "quick": dict(rounds=10, sizes=[0, 100], scale_rounds=8, dp_rounds=5, dp_secs=3, parallel=100),
    "full": dict(rounds=30, sizes=[0, 100, 1000], scale_rounds=20, dp_rounds=5, dp_secs=10, parallel=100),
}


def ms(ns):
    return ns / 1e6


def stats(xs):
    return dict(median=statistics.median(xs), min=min(xs), max=max(xs), n=len(xs))


def fmt(s, unit="ms", digits=1):
    if s is None:
        return "—"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


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
        rounds, secs = self.cfg["dp_rounds"], self.cfg["dp_secs"]
        log(f"bench: data plane: {rounds} rounds of {secs}s iperf3 runs")
        # The limit: a bare veth pair between two namespaces.
        w = self.w
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
        for ns, addr in (("fb-vA", "10.207.0.1"), ("fb-brA", "10.209.0.1"), ("fb-bnA", "10.211.0.1")):
            w.enter(ns)
            servers.append(subprocess.Popen(["iperf3", "-s", "-B", addr], stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL))
        w.go_home()
        for _, (srv, _, addr) in peers:
            servers.append(subprocess.Popen(srv + ["iperf3", "-s", "-B", addr], stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL))
        w.on_cleanup("stop the iperf3 servers", lambda: [(p.kill(), p.wait()) for p in servers])
        # ferry: two sandboxes on one bridge network.
        sh(f.cli("network", "create", "--subnet", "10.208.0.0/16", "fbdp"))
        f.run_sleeper("dpsrv", "fbdp", ["iperf3", "-s"])
        f.run_sleeper("dpcli", "fbdp")
        srv_ip = json.loads(sh(f.cli("inspect", "dpsrv")).stdout)[0]["NetworkSettings"]["Networks"]["fbdp"]["IPAddress"]
        time.sleep(0.5)

        def iperf(prefix, addr):
            r = sh(prefix + ["iperf3", "-c", addr, "-t", str(secs), "-J"], timeout=secs + 60)
            return json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9

        def ferry_nf_off(prefix, addr):
            # ferry's bridge with br_netfilter's calls off in ferryd's namespace, for this
            # run only: the kernel state `ferryd --br-netfilter off` makes (ferry's firewall
            # does not need them; see docs/usage.md).
            f.enter()
            set_bridge_nf("0")
            w.go_home()
            try:
                return iperf(prefix, addr)
            finally:
                f.enter()
                set_bridge_nf("1")
                w.go_home()

        veth, bridge, plain, plain_nf0, bridge_nf0 = [], [], [], [], []
        runs = [(veth, iperf, ["nsenter", "--net=/run/netns/fb-vB"], "10.207.0.1"),
                (bridge, iperf, f.cli("exec", "dpcli", "--"), srv_ip),
                (plain, iperf, ["nsenter", "--net=/run/netns/fb-brB"], "10.209.0.1"),
                (plain_nf0, iperf, ["nsenter", "--net=/run/netns/fb-bnB"], "10.211.0.1"),
                (bridge_nf0, ferry_nf_off, f.cli("exec", "dpcli", "--"), srv_ip)]
        peer_gbps = {k: [] for k, _ in peers}
        runs += [(peer_gbps[k], iperf, cli, ip) for k, (_, cli, ip) in peers]
        for r in range(rounds):
            # Every other round in reverse order, so that drift in the machine's load
            # does not favour whichever path comes first.
            for out, run, prefix, addr in (runs if r % 2 == 0 else runs[::-1]):
                out.append(run(prefix, addr))

        def per_round(xs):
            return stats([x / v for x, v in zip(xs, veth)])

        ratio, pratio = per_round(bridge), per_round(plain)
        self.results["dataplane"] = dict(rounds=rounds, secs=secs, veth_gbps=veth, bridge_gbps=bridge,
                                         plain_bridge_gbps=plain, plain_bridge_nf_off_gbps=plain_nf0,
                                         bridge_nf_off_gbps=bridge_nf0,
                                         **{f"{k}_bridge_gbps": v for k, v in peer_gbps.items()})
        self.md.append(f"### Data plane: iperf3 TCP, {rounds} rounds of {secs} s, one stream\n")
        self.md.append("| path | Gbit/s | × bare veth |")
        self.md.append("|---|---|---|")
        self.md.append(f"| bare veth pair between two namespaces (the limit) | {fmt(stats(veth), digits=2)} | 1 |")
        self.md.append(f"| two namespaces on a plain bridge made with iproute2 | {fmt(stats(plain), digits=2)} | "
                       f"{fmt(pratio, digits=3)} |")
        self.md.append(f"| two sandboxes on a ferry bridge | {fmt(stats(bridge), digits=2)} | {fmt(ratio, digits=3)} |")
        self.md.append(f"| plain bridge, bridge-nf-call-iptables=0 in its namespace | "
                       f"{fmt(stats(plain_nf0), digits=2)} | {fmt(per_round(plain_nf0), digits=3)} |")
        self.md.append(f"| ferry bridge, bridge-nf-call-*=0 in ferryd's namespace (`--br-netfilter off`) | "
                       f"{fmt(stats(bridge_nf0), digits=2)} | {fmt(per_round(bridge_nf0), digits=3)} |")
        for k, got in peer_gbps.items():
            self.md.append(f"| two containers on {self.tools[k].name}'s bridge (in its own namespace, br_netfilter's "
                           f"calls on as there) | {fmt(stats(got), digits=2)} | {fmt(per_round(got), digits=3)} |")
        # ferry always publishes ports (Ferry.setup fails otherwise).
        self.md.append("| through a published port | see below | |")
        self.md.append("")
        for k, got in peer_gbps.items():
            vs = stats([x / p for x, p in zip(bridge, got)])
            vs_off = stats([x / p for x, p in zip(bridge_nf0, got)])
            self.md.append(f"ferry's bridge against {self.tools[k].name}'s, per round: {fmt(vs, digits=3)} "
                           f"(with `--br-netfilter off`: {fmt(vs_off, digits=3)}).\n")
        self.dataplane_port(f, secs, rounds, veth)

    def dataplane_port(self, f, secs, rounds, veth):
        # Server on port 80 in a sandbox that publishes 8081:80; client in ferryd's
        # namespace, to the network's gateway address (the "host" side of the bridge).
        try:
            f.run_sleeper("dpport", "fbdp", ["iperf3", "-s", "-p", "80"])
            sh(f.cli("network", "disconnect", "fbdp", "dpport"))
            sh(f.cli("network", "connect", "--publish", "8081:80", "fbdp", "dpport"))
            time.sleep(0.5)
            f.enter()
            got = []
            for _ in range(rounds):
                r = sh(["iperf3", "-c", "10.208.0.1", "-p", "8081", "-t", str(secs), "-J"], timeout=secs + 60)
                got.append(json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9)
            self.w.go_home()
            self.md.append(f"Through published port 8081→80 (client in ferryd's namespace to the gateway): "
                           f"{fmt(stats(got), digits=2)} Gbit/s.\n")
        except Exception as e:  # the firewall is young: report, do not lose the run
            self.w.go_home()
            self.md.append(f"Through a published port: failed: `{e}`\n")

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
