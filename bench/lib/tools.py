"""The contenders. Each one owns a "host" network namespace of its own (so its bridge,
firewall rules and sysctls stay there and can be counted), a network on a bridge with one
resident endpoint (netavark deletes its bridge with the last endpoint: we time the attach,
not the bridge), and a measured sandbox that is attached and detached each round.

attach(port)/detach(port) are timed from the harness as whole processes, as a user or a
runtime runs them; whatever happens between processes (writing an options file) is not
timed. fill(n, port) brings the number of other endpoints up to n.
"""

import json
import os
import socket
import subprocess
import time

from world import TOKEN, log, sh

PEERS = os.environ.get("FBENCH_PEERS", "/work/shared/peers")
NETAVARK = "/usr/lib/podman/netavark"
CNI_PATH = "/usr/lib/cni"
BUSYBOX = "/bin/busybox"
PORT = 8080  # the measured endpoint's published host port
DP_PORT = 18090  # the data plane's server, published to port 80 (the DNAT path)


def timed(args, stdin=None, env=None, timeout=120):
    """Run one command; return (nanoseconds, CompletedProcess)."""
    t0 = time.perf_counter_ns()
    r = subprocess.run(args, input=stdin, env=env, capture_output=True, timeout=timeout)
    dt = time.perf_counter_ns() - t0
    if r.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, args))}: exit {r.returncode}: {r.stderr.decode(errors='replace').strip()}"
        )
    return dt, r


def count_rules():
    """Firewall rules in the current namespace: every nftables rule, which includes the
    iptables-nft rules netavark, the CNI plugins and dockerd write."""
    r = sh(["nft", "-j", "list", "ruleset"])
    return sum(1 for o in json.loads(r.stdout).get("nftables", []) if "rule" in o)


def ip16(base, i):
    """The i-th host address (i >= 2) of 10.base.0.0/16."""
    return f"10.{base}.{i // 256}.{i % 256}"


class Tool:
    name = "?"
    host = None  # namespace name
    supports_port = True

    def __init__(self, world):
        self.w = world
        self.filled = 0

    def enter(self):
        self.w.enter(self.host)

    def rules(self):
        self.enter()
        return count_rules()

    def links(self):
        self.enter()
        return len(sh(["ip", "-o", "link"]).stdout.splitlines())

    # With --smoke the harness checks what each attach and detach did, outside the timed
    # window (see Ferry); a contender without such checks has none.
    def check_attached(self, port):
        pass

    def check_detached(self, port):
        pass


# ---------------------------------------------------------------------------------------
class Floor(Tool):
    """The same kernel work with iproute2: one `ip -batch` in the host namespace (veth
    with its peer created in the sandbox as eth0, host end on the bridge and up), one
    `ip -n SB -batch` inside (address, link up, default route); detach is `ip link del`."""

    name = "floor (ip -batch)"
    host = "fb-floor"
    supports_port = False

    def setup(self):
        w = self.w
        w.netns(self.host)
        w.netns("fb-floor-sb")
        self.enter()
        sh(["ip", "link", "add", "fbbr0", "type", "bridge"])
        sh(["ip", "addr", "add", "10.200.0.1/16", "dev", "fbbr0"])
        sh(["ip", "link", "set", "fbbr0", "up"])
        self.hostfile = os.path.join(w.root, "floor-host.batch")
        self.nsfile = os.path.join(w.root, "floor-ns.batch")
        with open(self.hostfile, "w") as f:
            f.write("link add fbv0 master fbbr0 up type veth peer name eth0 netns fb-floor-sb\n")
        with open(self.nsfile, "w") as f:
            f.write("addr add 10.200.0.2/16 dev eth0\nlink set eth0 up\nroute add default via 10.200.0.1\n")

    def attach(self, port=False):
        self.enter()
        a, _ = timed(["ip", "-batch", self.hostfile])
        b, _ = timed(["ip", "-n", "fb-floor-sb", "-batch", self.nsfile])
        return a + b

    def detach(self, port=False):
        self.enter()
        return timed(["ip", "link", "del", "fbv0"])[0]

    def fill(self, n, port=False):
        if n <= self.filled:
            return
        names = [f"fb-ff{i}" for i in range(self.filled, n)]
        self.w.netns_many(names)
        self.enter()
        path = os.path.join(self.w.root, "floor-fill.batch")
        with open(path, "w") as f:
            for i in range(self.filled, n):
                f.write(f"link add fbf{i} master fbbr0 up type veth peer name eth0 netns fb-ff{i}\n")
        sh(["ip", "-batch", path], timeout=600)
        for i in range(self.filled, n):
            ns = os.path.join(self.w.root, f"ff{i}.batch")
            with open(ns, "w") as f:
                f.write(f"addr add {ip16(200, 10 + i)}/16 dev eth0\nlink set eth0 up\n")
            sh(["ip", "-n", f"fb-ff{i}", "-batch", ns])
        self.filled = n


# ---------------------------------------------------------------------------------------
class Netavark(Tool):
    """netavark 1.4 with the options files from peers/: `setup`/`teardown` on stdin."""

    name = "netavark 1.4"
    host = "fb-nv"

    def setup(self):
        w = self.w
        w.netns(self.host)
        self.cfg = os.path.join(w.root, "netavark")
        os.makedirs(self.cfg)
        with open(os.path.join(PEERS, "netavark-1.4-network-options-with-port.json")) as f:
            self.template = json.load(f)
        # The resident endpoint keeps the bridge alive between rounds.
        w.netns("fb-nv-res")
        self.resident = self.options(cid="r" * 64, name="resident", ip=ip16(201, 250 * 256), port=None)
        self.enter()
        timed([NETAVARK, "--config", self.cfg, "setup", "/run/netns/fb-nv-res"], stdin=self.resident)
        w.netns("fb-nv-sb")
        self.plain = self.options(cid="a" * 64, name="bench1", ip="10.201.0.2", port=None)
        self.ported = self.options(cid="a" * 64, name="bench1", ip="10.201.0.2", port=PORT)
        self.w.on_cleanup("netavark teardown", self.teardown_all)

    def options(self, cid, name, ip, port):
        o = json.loads(json.dumps(self.template))
        o["container_id"] = cid
        o["container_name"] = name
        o["networks"]["benchnv"]["static_ips"] = [ip]
        o["networks"]["benchnv"]["aliases"] = [name]
        if port is None:
            o.pop("port_mappings", None)
        else:
            o["port_mappings"][0]["host_port"] = port
        return json.dumps(o).encode()

    def attach(self, port=False):
        self.enter()
        opts = self.ported if port else self.plain
        return timed([NETAVARK, "--config", self.cfg, "setup", "/run/netns/fb-nv-sb"], stdin=opts)[0]

    def detach(self, port=False):
        self.enter()
        opts = self.ported if port else self.plain
        return timed([NETAVARK, "--config", self.cfg, "teardown", "/run/netns/fb-nv-sb"], stdin=opts)[0]

    def fill(self, n, port=False):
        if n <= self.filled:
            return
        names = [f"fb-nf{i}" for i in range(self.filled, n)]
        self.w.netns_many(names)
        self.enter()
        self.fillers = getattr(self, "fillers", [])
        for i in range(self.filled, n):
            o = self.options(cid=f"{i:064x}", name=f"f{i}", ip=ip16(201, 10 + i), port=20000 + i if port else None)
            timed([NETAVARK, "--config", self.cfg, "setup", f"/run/netns/fb-nf{i}"], stdin=o)
            self.fillers.append((f"/run/netns/fb-nf{i}", o))
        self.filled = n

    def dataplane_pair(self):
        """Two more containers on netavark's bridge for iperf3, in namespaces of their own;
        returns (how to run a command in the server's, in the client's, the server's
        address). The bridge and its namespace are netavark's own, as podman leaves them
        (br_netfilter's calls on, as in any new namespace on this kernel)."""
        ips = ("10.201.251.1", "10.201.251.2")
        for i, (ns, ip) in enumerate(zip(("fb-nvdA", "fb-nvdB"), ips)):
            self.w.netns(ns)
            self.enter()
            o = self.options(cid=f"{0xd0 + i:064x}", name=f"dp{i}", ip=ip, port=DP_PORT if i == 0 else None)
            timed([NETAVARK, "--config", self.cfg, "setup", f"/run/netns/{ns}"], stdin=o)
        self.w.go_home()
        return ["nsenter", "--net=/run/netns/fb-nvdA"], ["nsenter", "--net=/run/netns/fb-nvdB"], ips[0]

    def teardown_all(self):
        # Firewall rules and bridges live in our namespace and die with it; this just
        # leaves netavark's config dir consistent for anyone reading it afterwards.
        pass


# ---------------------------------------------------------------------------------------
class Cni(Tool):
    """The CNI 1.1 reference bridge plugin with host-local IPAM (peers/cni-1.1-bridge.conf),
    and portmap after it for the published-port case."""

    name = "CNI bridge 1.1"
    host = "fb-cni"

    def setup(self):
        w = self.w
        w.netns(self.host)
        with open(os.path.join(PEERS, "cni-1.1-bridge.conf")) as f:
            br = json.load(f)
        br["ipam"]["dataDir"] = os.path.join(w.root, "cni-ipam")
        self.bridge_conf = json.dumps(br).encode()
        with open(os.path.join(PEERS, "cni-1.1-portmap.conf")) as f:
            self.pm_template = json.load(f)
        w.netns("fb-cni-res")
        self.enter()
        self.add("resident", "/run/netns/fb-cni-res")
        w.netns("fb-cni-sb")

    def env(self, cmd, cid, netns):
        e = dict(os.environ)
        e.update(CNI_COMMAND=cmd, CNI_CONTAINERID=cid, CNI_NETNS=netns, CNI_IFNAME="eth0", CNI_PATH=CNI_PATH)
        return e

    def pm_conf(self, prev, port):
        pm = dict(self.pm_template)
        pm["runtimeConfig"] = {"portMappings": [{"hostPort": port, "containerPort": 80, "protocol": "tcp"}]}
        pm["prevResult"] = json.loads(prev)
        return json.dumps(pm).encode()

    def add(self, cid, netns, port=None):
        """ADD (timed as whole plugin processes); returns (ns, portmap conf for DEL)."""
        t, r = timed([f"{CNI_PATH}/bridge"], stdin=self.bridge_conf, env=self.env("ADD", cid, netns))
        pm = None
        if port is not None:
            pm = self.pm_conf(r.stdout, port)
            t2, _ = timed([f"{CNI_PATH}/portmap"], stdin=pm, env=self.env("ADD", cid, netns))
            t += t2
        return t, pm

    def dataplane_pair(self):
        """Two more containers on the CNI bridge for iperf3 (see Netavark.dataplane_pair)."""
        addrs = []
        for ns in ("fb-cndA", "fb-cndB"):
            self.w.netns(ns)
            self.enter()
            _, r = timed([f"{CNI_PATH}/bridge"], stdin=self.bridge_conf, env=self.env("ADD", ns, f"/run/netns/{ns}"))
            addrs.append(json.loads(r.stdout)["ips"][0]["address"].split("/")[0])
            if ns == "fb-cndA":  # the server publishes DP_PORT -> 80 (portmap after bridge)
                timed([f"{CNI_PATH}/portmap"], stdin=self.pm_conf(r.stdout, DP_PORT), env=self.env("ADD", ns, f"/run/netns/{ns}"))
        self.w.go_home()
        return ["nsenter", "--net=/run/netns/fb-cndA"], ["nsenter", "--net=/run/netns/fb-cndB"], addrs[0]

    def attach(self, port=False):
        self.enter()
        t, self.pm = self.add("bench1", "/run/netns/fb-cni-sb", PORT if port else None)
        return t

    def detach(self, port=False):
        self.enter()
        t = 0
        if port:
            t += timed([f"{CNI_PATH}/portmap"], stdin=self.pm, env=self.env("DEL", "bench1", "/run/netns/fb-cni-sb"))[0]
        t += timed([f"{CNI_PATH}/bridge"], stdin=self.bridge_conf, env=self.env("DEL", "bench1", "/run/netns/fb-cni-sb"))[0]
        return t

    def fill(self, n, port=False):
        if n <= self.filled:
            return
        self.w.netns_many([f"fb-cf{i}" for i in range(self.filled, n)])
        self.enter()
        for i in range(self.filled, n):
            self.add(f"f{i}", f"/run/netns/fb-cf{i}", 20000 + i if port else None)
        self.filled = n


# ---------------------------------------------------------------------------------------
class Ferry(Tool):
    """ferryd (release build) inside its own namespace with its own roots and socket;
    the CLI as a user runs it: `ferry network connect NET SB` / `disconnect`, on a running
    sandbox whose first network was disconnected (so the measured endpoint is its eth0
    with the default route, as in the floor)."""

    name = "ferry"
    host = "fb-ferry"

    GATEWAY = "10.204.0.1"  # fbnet's, where a published port answers in ferryd's namespace

    def __init__(self, world, bindir, tag="ferry", name=None, grows=True, verify=False):
        """tag names its namespace and directory; grows=False marks the scale phase's
        empty twin, which the scale phase never fills. verify (bench/run --smoke): the
        measured sandbox serves HTTP on port 80, and every attach and detach is checked
        (check_attached, check_detached)."""
        super().__init__(world)
        self.bindir = bindir
        self.tag = tag
        self.host = f"fb-{tag}"
        self.name = name or self.name
        self.grows = grows
        self.verify = verify

    def cli(self, *args):
        return [os.path.join(self.bindir, "ferry"), "-H", f"unix://{self.sock}", *args]

    def setup(self):
        w = self.w
        w.netns(self.host)
        d = os.path.join(w.root, self.tag)
        self.sock = os.path.join(d, "ferry.sock")
        self.logf = open(os.path.join(d + ".log"), "w")
        self.enter()
        self.proc = subprocess.Popen(
            [os.path.join(self.bindir, "ferryd"), "--data-root", f"{d}/data", "--exec-root", f"{d}/run",
             "-H", f"unix://{self.sock}", "--netns-dir", f"{d}/netns", "--bip", "10.199.0.1/16"],
            stdout=self.logf, stderr=subprocess.STDOUT,
            env={**os.environ, "FERRY_LOG": os.environ.get("FERRY_LOG", "warn")},
        )
        w.on_cleanup("stop ferryd", self.stop)
        deadline = time.time() + 15
        while sh(self.cli("version"), check=False).returncode != 0:
            if time.time() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"ferryd did not start; see {d}.log")
            time.sleep(0.05)
        self.expect_shortcut(d + ".log")
        sh(self.cli("network", "create", "--subnet", "10.204.0.0/16", "fbnet"))
        self.run_sleeper("resident", "fbnet")
        # With verify, the measured sandbox answers HTTP on 80, so a published port is
        # shown to reach it (busybox httpd answers any request, a 404 included).
        self.run_sleeper("bench1", "fbnet", [BUSYBOX, "httpd", "-f", "-p", "80", "-h", "/"] if self.verify else None)
        sh(self.cli("network", "disconnect", "fbnet", "bench1"))
        # The bench measures ferry with a published port: a CLI without --publish is a
        # failure, not a row to skip. Ask without changing anything: a connect to a
        # sandbox that does not exist fails either way, but with a clap usage error
        # (exit 2) when --publish is unknown.
        r = sh(self.cli("network", "connect", "--publish", f"{PORT}:80", "fbnet", "no-such-sandbox"), check=False)
        if r.returncode == 2 and ("unexpected argument" in r.stderr or "--publish" in r.stderr):
            raise RuntimeError(f"this ferry CLI cannot publish a port on connect, which the bench measures: "
                               f"{r.stderr.strip().splitlines()[0]}")

    def expect_shortcut(self, log):
        """ferry is measured as shipped: a ferryd whose tc/BPF shortcut did not load (a
        kernel without BPF, or a release build embedding an older program than its code
        asks for, as one stale target directory did) measures as ferry without the
        shortcut in every row. Refused in the measuring modes, said in --smoke."""
        with open(log) as f:
            off = [l.strip() for l in f if "shortcut is off" in l]
        if not off:
            return
        msg = f"ferryd's shortcut did not load, so this is not ferry as shipped: {off[0]}"
        if self.verify:
            log(f"bench: warning: {msg}")
        else:
            raise RuntimeError(msg + " (a stale build: cargo clean --release, then bench/run again)")

    def run_sleeper(self, name, net, cmd=None):
        cmd = cmd or [BUSYBOX, "sleep", "1000000"]
        sh(self.cli("run", "-d", "--name", name, "--network", net, "--", *cmd))

    def attach(self, port=False):
        extra = ["--publish", f"{PORT}:80"] if port else []
        return timed(self.cli("network", "connect", *extra, "fbnet", "bench1"))[0]

    def detach(self, port=False):
        return timed(self.cli("network", "disconnect", "fbnet", "bench1"))[0]

    def fbnet_addresses(self):
        """sandbox name -> its address on fbnet, from `ferry network inspect`."""
        v = json.loads(sh(self.cli("network", "inspect", "fbnet")).stdout)[0]
        return {c["Name"]: c["IPv4Address"] for c in (v.get("Containers") or {}).values()}

    def http_answer(self):
        """One HTTP request to the published port at fbnet's gateway, from ferryd's
        namespace: the answer's first line, or the error that stopped it."""
        self.enter()
        try:
            with socket.create_connection((self.GATEWAY, PORT), timeout=3) as c:
                c.settimeout(3)
                c.sendall(b"GET / HTTP/1.0\r\n\r\n")
                data = b""
                while b"\n" not in data:
                    chunk = c.recv(512)
                    if not chunk:
                        break
                    data += chunk
                return data.decode(errors="replace").splitlines()[0] if data else "(closed without an answer)"
        except OSError as e:
            return e
        finally:
            self.w.go_home()

    def check_attached(self, port):
        if not self.verify:
            return
        addrs = self.fbnet_addresses()
        if not addrs.get("bench1"):
            raise RuntimeError(f"{self.tag}: connect gave bench1 no address on fbnet: {addrs}")
        if len(set(addrs.values())) != len(addrs):
            raise RuntimeError(f"{self.tag}: two sandboxes share an address on fbnet: {addrs}")
        if port:
            got = self.http_answer()
            if not (isinstance(got, str) and got.startswith("HTTP/1.")):
                raise RuntimeError(f"{self.tag}: published port {PORT} did not answer after connect: {got!r}")

    def check_detached(self, port):
        if not self.verify:
            return
        addrs = self.fbnet_addresses()
        if "bench1" in addrs:
            raise RuntimeError(f"{self.tag}: bench1 still on fbnet after disconnect: {addrs}")
        if port:
            # The control is check_attached: the same request was answered while connected.
            got = self.http_answer()
            if not isinstance(got, ConnectionRefusedError):
                raise RuntimeError(f"{self.tag}: port {PORT} after disconnect must be refused, got {got!r}")

    def fill(self, n, port=False):
        for i in range(self.filled, n):
            extra = ["-p", f"{20000 + i}:80"] if port else []
            sh(self.cli("run", "-d", "--name", f"f{i}", "--network", "fbnet", *extra, "--", BUSYBOX, "sleep", "1000000"))
        self.filled = max(n, self.filled)

    def stop(self):
        if self.proc.poll() is None:
            names = sh(self.cli("ps", "-a", "-q"), check=False, timeout=60).stdout.split()
            if names:
                sh(self.cli("rm", "-f", *names), check=False, timeout=600)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()


# ---------------------------------------------------------------------------------------
class Docker(Tool):
    """dockerd 20.10 started by the bench in its own namespace with its own data root,
    exec root, pidfile and socket; a busybox image made with `docker import` from
    Debian's busybox-static. The measured container runs on the default bridge, is
    disconnected from it, then `docker network connect/disconnect`ed each round. With a
    port: a second container created with -p, whose binding docker programs on the
    endpoint that holds the default route (the connected network)."""

    name = "dockerd 20.10"
    host = "fb-docker"

    # Containers carry the run's token too, so that bench/run's sweep finds them even if
    # dockerd and the harness were killed.
    mark = ["-e", f"FBENCH_RUN={TOKEN}"]

    def cli(self, *args):
        return ["docker", "-H", f"unix://{self.sock}", *args]

    def setup(self):
        w = self.w
        w.netns(self.host)
        d = os.path.join(w.root, "docker")
        os.makedirs(d)
        self.sock = os.path.join(d, "docker.sock")
        self.pidfile = os.path.join(d, "docker.pid")
        self.logf = open(os.path.join(w.root, "docker.log"), "w")
        self.enter()
        self.proc = subprocess.Popen(
            ["dockerd", "--data-root", f"{d}/data", "--exec-root", f"{d}/exec", "--pidfile", self.pidfile,
             "-H", f"unix://{self.sock}", "--storage-driver", "vfs", "--bip", "10.198.0.1/16",
             "--userland-proxy=true", "--log-level", "warn"],
            stdout=self.logf, stderr=subprocess.STDOUT,
        )
        w.on_cleanup("stop dockerd", self.stop)
        deadline = time.time() + 60
        while sh(self.cli("version"), check=False).returncode != 0:
            if time.time() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"dockerd did not start; see {w.root}/docker.log")
            time.sleep(0.2)
        img = os.path.join(d, "img")
        os.makedirs(f"{img}/bin")
        sh(["cp", BUSYBOX, f"{img}/bin/busybox"])
        for c in ("sh", "sleep"):
            os.symlink("busybox", f"{img}/bin/{c}")
        tar = subprocess.run(["tar", "-C", img, "-c", "."], capture_output=True, check=True).stdout
        timed(self.cli("import", "-", "fbench/busybox:1"), stdin=tar)
        sh(self.cli("network", "create", "--subnet", "10.205.0.0/16", "fbnet"))
        sh(self.cli("run", "-d", *self.mark, "--name", "resident", "--network", "fbnet", "fbench/busybox:1", "sleep",
                    "1000000"))
        for name, extra in (("bench1", []), ("bench1p", ["-p", f"{PORT}:80"])):
            sh(self.cli("run", "-d", *self.mark, "--name", name, *extra, "fbench/busybox:1", "sleep", "1000000"))
            sh(self.cli("network", "disconnect", "bridge", name))

    def dataplane_pair(self):
        """Two more containers on dockerd's bridge network for iperf3 (see
        Netavark.dataplane_pair); iperf3 runs in their namespaces from the host (the image
        is busybox)."""
        pids, ip = [], None
        for name in ("dpA", "dpB"):
            extra = ["-p", f"{DP_PORT}:80"] if name == "dpA" else []  # the DNAT path's server
            sh(self.cli("run", "-d", *self.mark, "--name", name, "--network", "fbnet", *extra, "fbench/busybox:1",
                        "sleep", "1000000"))
            info = json.loads(sh(self.cli("inspect", name)).stdout)[0]
            pids.append(str(info["State"]["Pid"]))
            ip = ip or info["NetworkSettings"]["Networks"]["fbnet"]["IPAddress"]
        return ["nsenter", "-t", pids[0], "-n"], ["nsenter", "-t", pids[1], "-n"], ip

    def attach(self, port=False):
        return timed(self.cli("network", "connect", "fbnet", "bench1p" if port else "bench1"))[0]

    def detach(self, port=False):
        return timed(self.cli("network", "disconnect", "fbnet", "bench1p" if port else "bench1"))[0]

    def fill(self, n, port=False):
        for i in range(self.filled, n):
            extra = ["-p", f"{20000 + i}:80"] if port else []
            sh(self.cli("run", "-d", *self.mark, "--name", f"f{i}", "--network", "fbnet", *extra, "fbench/busybox:1",
                        "sleep", "1000000"))
        self.filled = max(n, self.filled)

    def stop(self):
        if self.proc.poll() is None:
            ids = sh(self.cli("ps", "-aq"), check=False, timeout=60).stdout.split()
            if ids:
                sh(self.cli("rm", "-f", *ids), check=False, timeout=600)
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()
