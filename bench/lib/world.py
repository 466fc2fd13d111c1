"""The bench's world: private mounts, namespaces it made, processes it started, and
the cleanup that removes all of them.

bench/run starts the harness under `unshare --mount --propagation private`, and the
harness mounts a tmpfs on /run/netns: every namespace the bench pins (`ip netns add`,
netavark's and CNI's sandboxes, ferryd's and dockerd's own) lives in mounts nobody else
sees, so even a SIGKILL of the whole bench frees them when its last process exits.
Cleanup still undoes everything explicitly, collecting errors instead of stopping:

  1. daemons first (dockerd: containers removed, then SIGTERM; ferryd: sandboxes
     removed, then SIGTERM), each bounded, SIGKILL after the bound;
  2. every process that carries this run's FBENCH_RUN token in its environment or sits
     in a network namespace the bench made, killed by pid;
  3. `ip netns del` of every namespace under /run/netns (our tmpfs), then a lazy
     unmount of whatever is still mounted under the run's temporary directory;
  4. the temporary directory.

Traffic only ever goes between namespaces the bench made: none of them has a link to
the machine's real network, and no default route leads off the machine.
"""

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)

# bench/run sets both, so that it can sweep up after a harness that died by SIGKILL.
TOKEN = os.environ.get("FBENCH_RUN") or f"fbench-{os.getpid()}"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def sh(args, check=True, timeout=120, **kw):
    """Run a command to completion (not timed); raise with its stderr on failure."""
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))}: exit {r.returncode}: {r.stderr.strip()}")
    return r


def setns(path):
    """Move this (single-threaded) harness into the network namespace at `path`; the
    commands it starts from now on inherit it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"setns {path}: {os.strerror(e)}")
    finally:
        os.close(fd)


class World:
    def __init__(self):
        root = os.environ.get("FBENCH_ROOT")
        if root:
            os.makedirs(root, exist_ok=True)
            self.root = root
        else:
            self.root = tempfile.mkdtemp(prefix="fbench-", dir="/tmp")
        self.cleanups = []  # (name, fn), run last-in first-out
        self.home_ns = f"/proc/{os.getpid()}/task/{os.getpid()}/ns/net"
        self._home_fd = os.open("/proc/self/ns/net", os.O_RDONLY)
        os.environ["FBENCH_RUN"] = TOKEN

    # -- namespaces -------------------------------------------------------------
    def private_netns_dir(self):
        if os.environ.get("FBENCH_UNSHARED") != "1":
            raise SystemExit("bench: run through bench/run (it gives the bench private mounts)")
        os.makedirs("/run/netns", exist_ok=True)
        sh(["mount", "-t", "tmpfs", "-o", "mode=755,size=16m", "fbench-netns", "/run/netns"])

    def netns(self, name):
        """Create /run/netns/NAME (in our private tmpfs) with lo up; returns its path."""
        sh(["ip", "netns", "add", name])
        sh(["ip", "-n", name, "link", "set", "lo", "up"])
        return f"/run/netns/{name}"

    def netns_many(self, names):
        """Create many namespaces with one `ip -batch` (fillers for the scale runs)."""
        path = os.path.join(self.root, "netns.batch")
        with open(path, "w") as f:
            for n in names:
                f.write(f"netns add {n}\n")
        sh(["ip", "-batch", path], timeout=600)

    def go_home(self):
        if _libc.setns(self._home_fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns back home")

    def enter(self, name):
        setns(f"/run/netns/{name}")

    def on_cleanup(self, name, fn):
        self.cleanups.append((name, fn))

    # -- cleanup ----------------------------------------------------------------
    def our_netns_inodes(self):
        inodes = set()
        for dirpath in ["/run/netns"] + self._mount_points_under_root():
            paths = [dirpath]
            if os.path.isdir(dirpath):
                paths = [os.path.join(dirpath, n) for n in os.listdir(dirpath)]
            for p in paths:
                try:
                    st = os.stat(p)
                    if st.st_dev != os.stat("/").st_dev:
                        inodes.add(st.st_ino)
                except OSError:
                    pass
        try:
            inodes.discard(os.stat("/proc/1/ns/net").st_ino)
            inodes.discard(os.stat("/proc/self/ns/net").st_ino)
        except OSError:
            pass
        return inodes

    def _mount_points_under_root(self):
        out = []
        try:
            with open("/proc/self/mountinfo") as f:
                for line in f:
                    mp = line.split()[4]
                    if mp.startswith(self.root + "/"):
                        out.append(mp)
        except OSError:
            pass
        return out

    def our_processes(self):
        """Pids (not ours) carrying this run's token, or inside a namespace we made."""
        spare = _ancestors()  # this process and bench/run's unshare and shell above it
        inodes = self.our_netns_inodes()
        pids = []
        for d in os.listdir("/proc"):
            if not d.isdigit() or int(d) in spare:
                continue
            pid = int(d)
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if f"FBENCH_RUN={TOKEN}".encode() in f.read().split(b"\0"):
                        pids.append(pid)
                        continue
                if os.stat(f"/proc/{pid}/ns/net").st_ino in inodes:
                    pids.append(pid)
            except OSError:
                pass
        return pids

    def cleanup(self):
        self.go_home()
        errors = []
        # Signals during cleanup must not cut it short.
        old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while self.cleanups:
                name, fn = self.cleanups.pop()
                try:
                    fn()
                except Exception as e:  # collect, never stop
                    errors.append(f"{name}: {e}")
            for sig in (signal.SIGTERM, signal.SIGKILL):
                pids = self.our_processes()
                for pid in pids:
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
                deadline = time.time() + 5
                while pids and time.time() < deadline:
                    pids = [p for p in pids if os.path.exists(f"/proc/{p}") and not _zombie(p)]
                    time.sleep(0.05)
            if os.path.ismount("/run/netns"):
                for n in os.listdir("/run/netns"):
                    r = sh(["ip", "netns", "del", n], check=False)
                    if r.returncode != 0:
                        errors.append(f"ip netns del {n}: {r.stderr.strip()}")
            for mp in sorted(self._mount_points_under_root(), key=len, reverse=True):
                sh(["umount", "-l", mp], check=False)
            if os.path.ismount("/run/netns"):
                sh(["umount", "-l", "/run/netns"], check=False)
            shutil.rmtree(self.root, ignore_errors=True)
            if os.path.exists(self.root):
                errors.append(f"could not remove {self.root}")
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        for e in errors:
            log(f"cleanup: {e}")
        return errors


def _zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _ancestors():
    pids = set()
    pid = os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids
