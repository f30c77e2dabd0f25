"""A Ray cluster of hosts on this machine: each node its own network namespace (one address on a
private bridge), its own mount and UTS namespaces (a fresh tmpfs on `/tmp` and `/dev/shm`, `HOME`
and the Hugging Face cache on it, its own hostname), with only the directories a test shares bound
back in at their own paths.

    with HostCluster(shared_dir, workers=2) as cluster:      # head: 0 GPUs; workers: 1 GPU each
        ran = cluster.run([python, "-m", "doktra_tune.search", ..., f"ray.address={cluster.address}"])

The network: a bridge in a namespace of its own (never in the root namespace), each host a veth
pair to it and one address in SUBNET; no route leaves the bridge, so the hosts reach each other and
their own loopback only. A driver runs inside the head's namespaces (`nsenter -t <head pid> -m -n -u`),
as a driver on a real head node does: it shares the head's `/tmp`, where Ray keeps its session's
sockets. Each node is one `ray start --block` process this harness started; a host's processes are
the processes in its network namespace, and stopping a host kills exactly those (by pid).

Everything is named `dkt<pytest pid>-<n>...`, so parallel test runs never clash, and teardown
removes what it made (processes, namespaces and with them the veth links and the bridge) even when
the test fails. `ray stop` is never run: it would stop every Ray session on the machine.
"""

from __future__ import annotations

import itertools
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Mapping, Sequence

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent  # the repository's .venv/bin when the tests run from it
RAY_CLI = VENV_BIN / "ray"
SUBNET = "10.250.0"  # <SUBNET>.0/24: the test hosts' own network (inside their namespaces only)
HEAD_PORT = 6379  # every host has its own network stack: Ray's default port clashes with nothing
DASHBOARD_PORT = 8265  # the head's dashboard (its Jobs API, `ray job submit`), when started with one
NODE_HOME = "/tmp/home"  # HOME on each host (on its tmpfs)
NODE_HF_HOME = f"{NODE_HOME}/.cache/huggingface"  # each host's own Hugging Face cache
OBJECT_STORE_BYTES = 100 * 1024 * 1024  # per host: the searches pass small objects only
_RUNS = itertools.count()


def unavailable_reason() -> str | None:
    """Why hosts in namespaces cannot be made here (None: they can)."""
    if sys.platform != "linux":
        return "network and mount namespaces need Linux"
    if os.geteuid() != 0:
        return "making network and mount namespaces needs root (ip netns, unshare --mount)"
    for tool in ("ip", "unshare", "nsenter", "mount"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (iproute2 / util-linux)"
    if not RAY_CLI.is_file():
        return f"no Ray CLI at {RAY_CLI}"
    probe = f"dkt{os.getpid()}-probe"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    try:
        inside = subprocess.run(["ip", "netns", "exec", probe, "unshare", "--mount", "--uts", "--propagation",
                                 "private", "sh", "-c", "mount -t tmpfs probe /mnt && hostname probe"],
                                capture_output=True, text=True)
        if inside.returncode != 0:
            return f"mount/UTS namespaces cannot be made: {inside.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def netns_inode(pid: int) -> int | None:
    """The inode of the network namespace of process `pid` (None when it is gone)."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass
class Host:
    """One node of the cluster: its namespace, address and the `ray start --block` process."""

    name: str  # also its hostname
    netns: str
    ip: str
    gpus: int
    log: Path  # `ray start`'s output
    proc: subprocess.Popen | None = None
    ns_inode: int | None = None  # its network namespace (which processes belong to it)
    started_s: float = 0.0  # seconds `ray start` took until "Ray runtime started"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


@dataclass
class HostCluster:
    """A head (`head_gpus`, 0 by default) and `workers` workers (`worker_gpus` each), one CPU each.

    shared: the test's directory (bound into every host at its own path; runs_root belongs in it).
    binds: further directories every host sees (the data, the repository: bound in only when they lie
      under /tmp; elsewhere the hosts see them anyway).
    env: extra environment of every node and driver (e.g. HF_HUB_OFFLINE=1).
    hf_caches: host name -> a prepared Hugging Face cache (HF_HOME layout) copied into that host's own
      cache before Ray starts there; the others start with an empty cache.
    dashboard: the head also runs Ray's dashboard (and with it the Jobs API) on its address, port
      DASHBOARD_PORT; off by default.
    """

    shared: Path
    workers: int = 2
    worker_gpus: int = 1
    head_gpus: int = 0
    binds: Sequence[Path] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    hf_caches: Mapping[str, Path] = field(default_factory=dict)
    dashboard: bool = False
    start_timeout_s: float = 120.0
    hosts: list[Host] = field(default_factory=list, init=False)
    up_s: float = 0.0  # seconds from the first namespace to every node registered

    def __post_init__(self) -> None:
        self.prefix = f"dkt{os.getpid()}-{next(_RUNS)}"
        self.bridge_ns = f"{self.prefix}-br"
        self.logs = Path(self.shared) / "host-logs"
        self._made_netns: list[str] = []
        self._drivers: list[subprocess.Popen] = []

    # ---- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> HostCluster:
        reason = unavailable_reason()
        if reason:
            pytest.skip(reason)
        start = time.monotonic()
        try:
            self.logs.mkdir(parents=True, exist_ok=True)
            self._add_netns(self.bridge_ns)
            _ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.bridge_ns, "link", "set", "br0", "up")
            head = self._start_host("head", self.head_gpus)
            self._wait_started(head)
            workers = [self._start_host(f"worker{i}", self.worker_gpus) for i in range(1, self.workers + 1)]
            for worker in workers:
                self._wait_started(worker)
            self.wait_for_nodes(len(self.hosts))
            if self.dashboard:
                self.wait_for_dashboard()
        except BaseException:
            self.close()
            raise
        self.up_s = time.monotonic() - start
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Kill every process of every host (and every driver started here), then delete the
        namespaces (their veth ends and the bridge go with them). Nothing is left to shut down
        gracefully: a host's /tmp and /dev/shm vanish with its last process."""
        problems: list[str] = []
        for proc in self._drivers:
            _stop_group(proc, grace_s=0)
        for host in self.hosts:
            try:
                self.kill(host)
            except (OSError, subprocess.SubprocessError) as err:
                problems.append(f"{host.name}: {err}")
            left = [pid for pid in self.processes(host) if _alive(pid)]
            if left:
                problems.append(f"{host.name}: processes {left} still run")
        for name in reversed(self._made_netns):
            deleted = subprocess.run(["ip", "netns", "del", name], capture_output=True, text=True)
            if deleted.returncode != 0:
                problems.append(f"ip netns del {name}: {deleted.stderr.strip()}")
        self._made_netns.clear()
        for host in self.hosts:
            host.ns_inode = None  # a deleted namespace's inode may be another's later
        if problems:
            raise RuntimeError("the test hosts were not all removed: " + "; ".join(problems))

    # ---- hosts -----------------------------------------------------------------------------------

    @property
    def head(self) -> Host:
        return self.hosts[0]

    @property
    def address(self) -> str:
        """The head's GCS address, `<ip>:<port>` (reachable from the hosts only)."""
        return f"{self.head.ip}:{HEAD_PORT}"

    @property
    def dashboard_url(self) -> str:
        """The head's dashboard, `http://<ip>:<port>` (the `--address` of `ray job submit`)."""
        return f"http://{self.head.ip}:{DASHBOARD_PORT}"

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def add_worker(self, gpus: int | None = None, hf_cache: Path | None = None) -> Host:
        """One more worker joins the running cluster; returns once Ray runs on it (not yet waiting
        for the head to list it: see `wait_for_nodes`)."""
        name = f"worker{sum(h.name.startswith('worker') for h in self.hosts) + 1}"
        if hf_cache is not None:
            self.hf_caches = {**self.hf_caches, name: hf_cache}
        host = self._start_host(name, self.worker_gpus if gpus is None else gpus)
        self._wait_started(host)
        return host

    def processes(self, host: Host) -> list[int]:
        """The pids of every process on `host` (in its network namespace)."""
        if host.ns_inode is None:
            return []
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and netns_inode(int(entry.name)) == host.ns_inode:
                pids.append(int(entry.name))
        return pids

    def kill(self, host: Host) -> list[int]:
        """The host goes away at once: SIGKILL to every process on it (raylet, workers, trials);
        returns their pids."""
        pids = self.processes(host)
        if host.proc is not None and host.proc.poll() is None:
            pids.append(host.proc.pid)  # not yet in its namespace (ip netns exec) when it just started
        for pid in pids:
            _signal(pid, signal.SIGKILL)
        _wait_gone(pids, 10)
        left = self.processes(host)  # forked while being killed
        for pid in left:
            _signal(pid, signal.SIGKILL)
        _wait_gone(left, 10)
        if host.proc is not None:
            host.proc.wait(timeout=10)
        return sorted(set(pids + left))

    # ---- drivers on the head ---------------------------------------------------------------------

    def driver_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """A user's shell on the head: the nodes' environment (HOME and the cache on the head's tmpfs)."""
        return {**self._node_env(), **(extra or {})}

    def driver_cmd(self, cmd: Sequence[str], host: Host | None = None) -> list[str]:
        """`cmd` inside `host`'s (default: the head's) network, mount and UTS namespaces, in its HOME (the cwd of its `ray start`)."""
        target = host or self.head
        return ["nsenter", "-t", str(target.pid), "-m", "-n", "-u", "--wd", "--", *cmd]

    def popen(self, cmd: Sequence[str], env: Mapping[str, str] | None = None, host: Host | None = None,
              **kwargs) -> subprocess.Popen:
        """Start `cmd` on the head (or `host`), in a process group of its own; stopped on close."""
        proc = subprocess.Popen(self.driver_cmd(cmd, host), env=self.driver_env(env), start_new_session=True,
                                **kwargs)
        self._drivers.append(proc)
        return proc

    def run(self, cmd: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 600,
            host: Host | None = None) -> subprocess.CompletedProcess:
        """`cmd` on the head (or `host`) to its end; its output captured (text)."""
        proc = self.popen(cmd, env, host, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop_group(proc)
            out, err = proc.communicate()
            pytest.fail(f"{shlex.join(cmd)} ran past {timeout} s on the head\n{out[-3000:]}\n{err[-3000:]}")
        return subprocess.CompletedProcess(list(cmd), proc.returncode, out, err)

    def python(self, code: str, *args: str, timeout: float = 120,
               env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
        """`python -c code args` on the head."""
        return self.run([sys.executable, "-c", code, *args], env=env, timeout=timeout)

    def wait_for_nodes(self, count: int, timeout: float | None = None) -> None:
        """Return once the head lists `count` alive nodes (a driver on the head asks)."""
        ran = self.python(_WAIT_FOR_NODES, self.address, str(count), str(timeout or self.start_timeout_s),
                          timeout=(timeout or self.start_timeout_s) + 60)
        if ran.returncode != 0:
            raise RuntimeError(f"the cluster did not reach {count} nodes:\n{ran.stdout[-2000:]}\n{ran.stderr[-3000:]}"
                               f"\n{self.tail_logs()}")

    def wait_for_dashboard(self, timeout: float | None = None) -> None:
        """Return once the head's dashboard answers its Jobs API (asked from the head)."""
        limit = timeout or self.start_timeout_s
        ran = self.python(_WAIT_FOR_DASHBOARD, f"{self.dashboard_url}/api/version", str(limit), timeout=limit + 60)
        if ran.returncode != 0:
            raise RuntimeError(f"the dashboard at {self.dashboard_url} did not answer:\n{ran.stdout[-2000:]}"
                               f"\n{ran.stderr[-3000:]}\n{self.tail_logs()}")

    def tail_logs(self, chars: int = 1500) -> str:
        return "\n".join(f"--- {h.name} ({h.log})\n{h.log.read_text(errors='replace')[-chars:]}"
                         for h in self.hosts if h.log.is_file())

    # ---- internals -------------------------------------------------------------------------------

    def _add_netns(self, name: str) -> None:
        _ip("netns", "add", name)
        self._made_netns.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def _node_env(self) -> dict[str, str]:
        env = {
            "PATH": f"{VENV_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": NODE_HOME,
            "HF_HOME": NODE_HF_HOME,
            "PYTHONPATH": str(REPO_ROOT),
            "RAY_USAGE_STATS_ENABLED": "0",
            "LANG": "C.UTF-8",
        }
        if "TZ" in os.environ:
            env["TZ"] = os.environ["TZ"]
        return {**env, **self.env}

    def _bound_dirs(self) -> list[Path]:
        """The shared directories under /tmp (bound back into each host's fresh /tmp)."""
        dirs = [Path(self.shared), *map(Path, self.binds), REPO_ROOT, VENV_BIN.parent]
        under_tmp = [d.resolve() for d in dirs if d.resolve().is_relative_to("/tmp")]
        return sorted(set(under_tmp))

    def _start_host(self, name: str, gpus: int) -> Host:
        index = len(self.hosts)
        host = Host(name=name, netns=f"{self.prefix}-{index}", ip=f"{SUBNET}.{10 + index}", gpus=gpus,
                    log=self.logs / f"{name}.log")
        self.hosts.append(host)
        self._add_netns(host.netns)
        link = f"v{index}"  # the bridge's end; named inside the bridge's namespace only
        _ip("-n", self.bridge_ns, "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", host.netns)
        _ip("-n", self.bridge_ns, "link", "set", link, "master", "br0", "up")
        _ip("-n", host.netns, "addr", "add", f"{host.ip}/24", "dev", "eth0")
        _ip("-n", host.netns, "link", "set", "eth0", "up")
        if name == "head":
            dashboard = (["--include-dashboard=true", f"--dashboard-host={host.ip}",
                          f"--dashboard-port={DASHBOARD_PORT}"] if self.dashboard else ["--include-dashboard=false"])
            ray = [str(RAY_CLI), "start", "--head", f"--port={HEAD_PORT}", *dashboard, "--disable-usage-stats"]
        else:
            ray = [str(RAY_CLI), "start", f"--address={self.address}"]
        ray += ["--num-cpus=1", f"--num-gpus={gpus}", f"--node-ip-address={host.ip}",
                f"--object-store-memory={OBJECT_STORE_BYTES}", "--block"]
        script = _host_script(name, self._hosts_file(), self._bound_dirs(), self.hf_caches.get(name), ray)
        with host.log.open("w") as log:
            host.proc = subprocess.Popen(
                ["ip", "netns", "exec", host.netns, "unshare", "--mount", "--uts", "--propagation", "private",
                 "bash", "-c", script],
                env=self._node_env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        host.ns_inode = os.stat(f"/run/netns/{host.netns}").st_ino
        return host

    def _hosts_file(self) -> str:
        """/etc/hosts of every host: loopback, the head and the workers it may get (added or not)."""
        lines = ["127.0.0.1 localhost", f"{SUBNET}.10 head"]
        lines += [f"{SUBNET}.{10 + i} worker{i}" for i in range(1, 16)]
        return "\n".join(lines) + "\n"

    def _wait_started(self, host: Host) -> None:
        """Wait for `ray start` on `host` to print that Ray runs there."""
        start = time.monotonic()
        deadline = start + self.start_timeout_s
        while time.monotonic() < deadline:
            text = host.log.read_text(errors="replace") if host.log.is_file() else ""
            if "Ray runtime started" in text:
                host.started_s = time.monotonic() - start
                return
            if host.proc is not None and host.proc.poll() is not None:
                raise RuntimeError(f"ray start on {host.name} exited ({host.proc.returncode}):\n{text[-3000:]}")
            time.sleep(0.1)
        raise RuntimeError(f"ray start on {host.name} did not start in {self.start_timeout_s} s:\n{self.tail_logs()}")


def _host_script(name: str, hosts_file: str, bound: list[Path], hf_cache: Path | None, ray: list[str]) -> str:
    """The bash script a host runs in its new mount and UTS namespaces before it becomes `ray start`:
    its hostname and /etc/hosts, a fresh tmpfs staged on /mnt with the shared directories bound in
    at their paths, moved onto /tmp; a fresh /dev/shm; HOME and the Hugging Face cache on the tmpfs."""
    lines = ["set -euo pipefail", f"hostname {shlex.quote(name)}",
             "mount -t tmpfs -o mode=1777 doktra-host-tmp /mnt"]
    for path in bound:
        staged = "/mnt/" + str(path.relative_to("/tmp"))
        lines += [f"mkdir -p {shlex.quote(staged)}", f"mount --bind {shlex.quote(str(path))} {shlex.quote(staged)}"]
    lines += ["mount --move /mnt /tmp", "mount -t tmpfs -o mode=1777 doktra-host-shm /dev/shm",
              f"printf %s {shlex.quote(hosts_file)} > /tmp/.hosts", "mount --bind /tmp/.hosts /etc/hosts",
              f"mkdir -p {NODE_HF_HOME}"]
    if hf_cache is not None:
        lines.append(f"cp -a {shlex.quote(str(hf_cache))}/. {NODE_HF_HOME}/")
    lines += [f"cd {NODE_HOME}", "exec " + shlex.join(ray)]
    return "\n".join(lines)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait up to `timeout` s for `pids` to end; the ones still running."""
    deadline = time.monotonic() + timeout
    left = [p for p in set(pids) if _alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [p for p in left if _alive(p)]
    return left


def _stop_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGINT to the process group of `proc` (a driver shuts its Ray connection down), then SIGKILL
    after `grace_s` (at once with 0)."""
    if proc.poll() is not None:
        return
    steps = ((signal.SIGINT, grace_s),) if grace_s > 0 else ()
    for sig, wait in (*steps, (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


_WAIT_FOR_NODES = """
import sys, time
import ray
address, count, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
ray.init(address=address, logging_level="ERROR", log_to_driver=False)
deadline = time.monotonic() + timeout
alive = []
while time.monotonic() < deadline:
    alive = [n for n in ray.nodes() if n["Alive"]]
    if len(alive) >= count:
        break
    time.sleep(0.2)
print(sorted(n["NodeManagerAddress"] for n in alive))
sys.exit(0 if len(alive) >= count else 1)
"""


_WAIT_FOR_DASHBOARD = """
import sys, time, urllib.request
url, timeout = sys.argv[1], float(sys.argv[2])
deadline = time.monotonic() + timeout
while True:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            print(answer.read().decode())
            break
    except OSError as err:
        if time.monotonic() > deadline:
            sys.exit(f"{url}: {err}")
        time.sleep(0.5)
"""
