#!/usr/bin/env python3
"""Where ferry's attach and detach time goes (bench/profile; docs/PERFORMANCE.md quotes it).

ferryd (release build) runs in a namespace of its own, as in bench/run. N sandboxes are
connected to a network one after another, then disconnected one after another, and for
each window this reports:

- the wall time per call of the whole `ferry network connect|disconnect` process, and of
  `ferry version` (process start + one HTTP round trip: the CLI's fixed cost);
- ferryd's CPU time per call (user + system, from /proc/PID/stat);
- ferryd's time per request from accept to the response (strace -f -T attached for the
  window only), and within it the time in each kind of syscall: netlink requests by
  message type (the kernel does the work inside sendto), the store's commit as
  pwrite64 + fdatasync, the per-attach namespace thread as clone3 + setns + socket.
"""

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tools import Ferry, timed  # noqa: E402
from world import World, log, sh  # noqa: E402


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks


def window(f, names, verb, trace):
    """Run `ferry network VERB fbnet NAME` for each name with ferryd under strace."""
    st = subprocess.Popen(["strace", "-f", "-ttt", "-T", "-o", trace, "-e", "trace=" + TRACED,
                           "-p", str(f.proc.pid)], stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # let strace attach to every thread
    c0 = cpu_ticks(f.proc.pid)
    walls = [timed(f.cli("network", verb, "fbnet", n))[0] / 1e6 for n in names]
    c1 = cpu_ticks(f.proc.pid)
    time.sleep(0.3)
    st.send_signal(signal.SIGINT)
    st.wait(30)
    return walls, (c1 - c0) * 1000 / os.sysconf("SC_CLK_TCK") / len(names)


RTM = {"0x10": "RTM_NEWLINK", "0x11": "RTM_DELLINK", "0x12": "RTM_GETLINK", "0x13": "RTM_SETLINK",
       "0x14": "RTM_NEWADDR", "0x18": "RTM_NEWROUTE"}
TRACED = "accept4,writev,sendto,fdatasync,pwrite64,clone3,setns,openat,socket"
LINE = re.compile(r"^(\d+)\s+(\d+\.\d+)\s+(\w+)\((.*?)(?:<(\d+\.\d+)>)?$")


def segments(trace):
    """Per request (accept4 → the response's writev on that fd): the server time and the
    time spent in each kind of syscall, netlink requests named by message type."""
    events = []
    with open(trace) as f:
        for line in f:
            m = LINE.match(line.strip())
            if m:
                pid, ts, name, rest, dur = m.groups()
                events.append((float(ts), name, rest, float(dur or 0)))
    events.sort()
    out = []
    cur = None
    for ts, name, rest, dur in events:
        if name == "accept4" and "= -1" not in rest:
            fd = rest.rsplit("=", 1)[-1].split()[0]
            cur = dict(start=ts, fd=fd, kinds={})
            continue
        if cur is None:
            continue
        if name == "writev" and rest.startswith(cur["fd"] + ","):
            cur["server"] = ts - cur["start"]
            out.append(cur)
            cur = None
            continue
        kind = name
        if name == "sendto":
            t = re.search(r"nlmsg_type=(\w+)", rest)
            kind = f"netlink {RTM.get(t.group(1), t.group(1))}" if t else "sendto"
        cur["kinds"][kind] = cur["kinds"].get(kind, 0) + dur
    return out


def report(segs):
    server = [s["server"] * 1000 for s in segs]
    print(f"ferryd server time per request (accept → response written, traced): "
          f"median {statistics.median(server):.2f} ms")
    kinds = sorted({k for s in segs for k in s["kinds"]})
    rows = [(statistics.median([s["kinds"].get(k, 0) * 1000 for s in segs]), k) for k in kinds]
    for med, k in sorted(rows, reverse=True)[:10]:
        print(f"  {k:24s} {med:7.3f} ms (median per request)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bindir", required=True)
    ap.add_argument("-n", type=int, default=30)
    ap.add_argument("--fill", type=int, default=0, help="other running sandboxes on the network first")
    ap.add_argument("--fill-ports", action="store_true", help="each filler publishes a port (as bench/run's)")
    ap.add_argument("--perf", action="store_true", help="also sample ferryd with perf during the connects")
    ap.add_argument("--perf-keep", metavar="DIR", help="keep the perf data files in DIR (for perf report -g)")
    a = ap.parse_args()
    w = World()
    rc = 0
    try:
        w.private_netns_dir()
        f = Ferry(w, a.bindir)
        f.setup()
        w.go_home()
        if a.fill:
            log(f"profile: starting {a.fill} other sandboxes")
            f.fill(a.fill, port=a.fill_ports)
        names = [f"p{i}" for i in range(a.n)]
        for n in names:
            f.run_sleeper(n, "fbnet")
            sh(f.cli("network", "disconnect", "fbnet", n))
        version = [timed(f.cli("version"))[0] / 1e6 for _ in range(a.n)]
        print(f"ferry version (CLI start + one HTTP round trip): median {statistics.median(version):.2f} ms "
              f"(min {min(version):.2f}, max {max(version):.2f})\n")
        print(f"{a.fill} other endpoints on the network\n")
        for verb in ("connect", "disconnect"):
            out = os.path.join(w.root, f"{verb}.strace")
            # Untraced first (the real figure), then traced (the breakdown).
            perf = None
            if a.perf:
                perf_data = os.path.join(w.root, f"{verb}.perf")
                perf = subprocess.Popen(["perf", "record", "-q", "-F", "2000", "-g", "-o", perf_data,
                                         "-p", str(f.proc.pid)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
                time.sleep(0.5)
            c0 = cpu_ticks(f.proc.pid)
            plain = [timed(f.cli("network", verb, "fbnet", n))[0] / 1e6 for n in names]
            cpu_plain = (cpu_ticks(f.proc.pid) - c0) * 1000 / os.sysconf("SC_CLK_TCK") / len(names)
            if perf:
                # Only the untraced window: strace's stops would dominate the samples.
                perf.send_signal(signal.SIGINT)
                perf.wait(60)
            other = "disconnect" if verb == "connect" else "connect"
            for n in names:
                sh(f.cli("network", other, "fbnet", n))
            walls, cpu = window(f, names, verb, out)
            print(f"== ferry network {verb}, {a.n} calls ==")
            print(f"wall per call, untraced: median {statistics.median(plain):.2f} ms "
                  f"(min {min(plain):.2f}, max {max(plain):.2f}); under strace: {statistics.median(walls):.2f} ms")
            print(f"ferryd CPU per call (user+system, 10 ms ticks): {cpu_plain:.2f} ms untraced, "
                  f"{cpu:.2f} ms under strace")
            report(segments(out))
            if perf:
                rep = sh(["perf", "report", "--stdio", "--no-children", "-i", perf_data, "--sort", "symbol",
                          "-g", "none", "--percent-limit", "2"], check=False, timeout=300).stdout
                print("perf, ferryd samples by symbol (self time, >= 2%):")
                for line in rep.splitlines():
                    if "%" in line and not line.startswith("#"):
                        print("  " + line.strip()[:110])
                if a.perf_keep:
                    os.makedirs(a.perf_keep, exist_ok=True)
                    shutil.copy(perf_data, a.perf_keep)
            print()
    except BaseException as e:
        log(f"profile: failed: {e!r}")
        rc = 1
    finally:
        if w.cleanup():
            rc = 1
    sys.exit(rc)


if __name__ == "__main__":
    main()
