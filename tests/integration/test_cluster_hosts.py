"""The search on a Ray cluster of hosts (tests/helpers/netns_hosts.py): a head without GPUs and workers with
one GPU each, every node its own network namespace (its own address), its own /tmp, HOME and
Hugging Face cache; only the test's directory (runs_root) and the data are shared, at one path.
Every driver runs inside the head's namespaces, as on a real head node.

Ray's GPUs are labels here (`ray start --num-gpus=1` on a CPU machine): a trial that asks for one
gets a GPU id and CUDA_VISIBLE_DEVICES, and trains on the CPU, since torch finds no CUDA device.
"""

from __future__ import annotations

import abc
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.netns_hosts import NODE_HF_HOME, NODE_HOME, HostCluster
from tests.helpers.search import DATA_ROOT

pytestmark = pytest.mark.slow

needs_data = pytest.mark.skipif(not (DATA_ROOT / "chemprot_scibert").is_dir(), reason=f"no ChemProt data at {DATA_ROOT}")

PYTHON = sys.executable

HOSTS_SEEN = """
import json, os, socket, sys, time
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
shared = sys.argv[2]
nodes = {n["NodeID"]: n for n in ray.nodes() if n["Alive"]}

@ray.remote(num_gpus=1)
def on_a_gpu():
    start = time.time()
    time.sleep(3)  # both tasks run at once: their intervals overlap
    return {"ip": ray.util.get_node_ip_address(), "host": socket.gethostname(),
            "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "start": start, "end": time.time()}

@ray.remote(num_gpus=0)
def mark():
    with open(f"/tmp/marker-{socket.gethostname()}", "w") as f:
        f.write("x")
    return socket.gethostname()

@ray.remote(num_gpus=0)
def look():
    return {"ip": ray.util.get_node_ip_address(), "host": socket.gethostname(), "home": os.environ["HOME"],
            "hf_home": os.environ.get("HF_HOME"), "home_exists": os.path.isdir(os.environ["HOME"]),
            "markers": sorted(p for p in os.listdir("/tmp") if p.startswith("marker-")),
            "shared": open(os.path.join(shared, "from-the-test.txt")).read(),
            "shared_parent": sorted(os.listdir(os.path.dirname(shared)))}

def pinned(fn, node_id):
    return fn.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote()

gpu_tasks = ray.get([on_a_gpu.remote(), on_a_gpu.remote()])
ray.get([pinned(mark, n) for n in nodes])
views = ray.get([pinned(look, n) for n in nodes])
print(json.dumps({
    "nodes": {n["NodeManagerAddress"]: n["Resources"].get("GPU", 0) for n in nodes.values()},
    "driver": {"host": socket.gethostname(), "home": os.environ["HOME"]},
    "gpu_tasks": gpu_tasks, "views": views,
}))
"""


def test_hosts_form_one_cluster_and_gpu_tasks_land_on_the_workers(start_hosts, tmp_path: Path) -> None:
    """Head (0 GPUs) + two workers (1 GPU each) are one cluster of three hosts; two `num_gpus=1`
    tasks at once run on the two workers, each with its GPU id in CUDA_VISIBLE_DEVICES; each host
    sees its own /tmp and HOME, and the shared directory."""
    (tmp_path / "from-the-test.txt").write_text("shared")
    (tmp_path.parent / f"root-only-{os.getpid()}").write_text("x")  # in the machine's /tmp, not the hosts'
    started = time.monotonic()
    cluster = start_hosts(workers=2)
    up_s = time.monotonic() - started
    ran = cluster.python(HOSTS_SEEN, cluster.address, str(tmp_path), timeout=180)
    assert ran.returncode == 0, ran.stderr[-3000:]
    seen = json.loads(ran.stdout.strip().splitlines()[-1])
    head, w1, w2 = (h.ip for h in cluster.hosts)
    assert seen["nodes"] == {head: 0, w1: 1.0, w2: 1.0}
    assert seen["driver"] == {"host": "head", "home": NODE_HOME}

    gpu = seen["gpu_tasks"]
    assert sorted(t["ip"] for t in gpu) == sorted([w1, w2])  # one on each worker, none on the head
    assert sorted(t["host"] for t in gpu) == ["worker1", "worker2"]
    assert [(t["cuda"], t["gpu_ids"]) for t in gpu] == [("0", ["0"]), ("0", ["0"])]
    assert max(t["start"] for t in gpu) < min(t["end"] for t in gpu)  # at once

    views = {v["host"]: v for v in seen["views"]}
    assert sorted(views) == ["head", "worker1", "worker2"]
    for name, view in views.items():
        assert view["ip"] == cluster.host(name).ip
        assert view["markers"] == [f"marker-{name}"]  # its own /tmp: no other host's marker
        assert (view["home"], view["hf_home"], view["home_exists"]) == (NODE_HOME, NODE_HF_HOME, True)
        assert view["shared"] == "shared"
        assert view["shared_parent"] == [tmp_path.name]  # the machine's /tmp is not there
    assert not list(Path("/tmp").glob("marker-*"))  # nor did the hosts write into the machine's /tmp
    print(f"cluster of 3 hosts up in {up_s:.1f} s (head {cluster.head.started_s:.1f} s)")


# ---- the search on the cluster ------------------------------------------------------------------


class ProcWatch(abc.ABC):
    """While it runs (a thread, every `period_s`): `sweep()` over the processes of the watched hosts."""

    def __init__(self, cluster: HostCluster, period_s: float = 0.2) -> None:
        import threading

        self.cluster, self.period_s = cluster, period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=type(self).__name__, daemon=True)

    def __enter__(self):  # noqa: ANN204 - the subclass itself
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sweep()
            self._stop.wait(self.period_s)

    @abc.abstractmethod
    def sweep(self) -> None:
        """One look at the watched processes."""


class OpenFileWatch(ProcWatch):
    """While it runs (a thread): every `period_s`, each process on `hosts` whose open files include
    a path ending in one of `suffixes` (read from /proc/<pid>/fd), recorded as (host, pid, command, path)."""

    def __init__(self, cluster: HostCluster, hosts: list, suffixes: tuple[str, ...] = ("mlflow.db",),
                 period_s: float = 0.2) -> None:
        super().__init__(cluster, period_s)
        self.hosts, self.suffixes = hosts, suffixes
        self.seen: set[tuple[str, int, str, str]] = set()
        self.scans = 0

    def sweep(self) -> None:
        for host in self.hosts:
            for pid in self.cluster.processes(host):
                self._scan(host.name, pid)
        self.scans += 1

    def _scan(self, host: str, pid: int) -> None:
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            links = [os.readlink(fd_dir / fd) for fd in os.listdir(fd_dir)]
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:200]
        except OSError:  # ended meanwhile
            return
        for link in links:
            if link.split(" (deleted)")[0].endswith(self.suffixes):
                self.seen.add((host, pid, cmd, link))


def search_cmd(cluster: HostCluster, runs_root: Path, *overrides: str) -> list[str]:
    """The search command a user types on the head, against this cluster."""
    return [PYTHON, "-m", "doktra_tune.search", "task=chemprot", "preset=tiny", f"data_root={DATA_ROOT}",
            f"runs_root={runs_root}", f"ray.address={cluster.address}", "resources.gpus_per_trial=1", *overrides]


def run_search_on(cluster: HostCluster, tmp_path: Path, name: str, *overrides: str, timeout: float = 600,
                  runs_root: Path | None = None) -> subprocess.CompletedProcess:
    """The search on the head to its end; its output also kept in <tmp_path>/<name>.out / .err."""
    ran = cluster.run(search_cmd(cluster, runs_root or tmp_path / "runs", *overrides), timeout=timeout)
    (tmp_path / f"{name}.out").write_text(ran.stdout)
    (tmp_path / f"{name}.err").write_text(ran.stderr)
    return ran


def start_search_on(cluster: HostCluster, tmp_path: Path, name: str, *overrides: str,
                    runs_root: Path | None = None) -> subprocess.Popen:
    """The search started on the head; its output goes to <tmp_path>/<name>.out / .err."""
    out = (tmp_path / f"{name}.out").open("w")
    err = (tmp_path / f"{name}.err").open("w")
    return cluster.popen(search_cmd(cluster, runs_root or tmp_path / "runs", *overrides), stdout=out, stderr=err)


def finish(proc: subprocess.Popen, tmp_path: Path, name: str, timeout: float = 600) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of a search `start_search_on` started."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"search {name} ran past {timeout} s")
    return proc.returncode, (tmp_path / f"{name}.out").read_text(), (tmp_path / f"{name}.err").read_text()


def first_result(runs_root: Path, stage: str, timeout: float = 300, proc: subprocess.Popen | None = None) -> dict:
    """The first result.json line any trial of `stage` wrote (waits for it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in runs_root.glob(f"*/ray/{stage}/*/result.json"):
            lines = [line for line in path.read_text().splitlines() if line.strip()]
            if lines:
                try:
                    return json.loads(lines[0])
                except ValueError:  # being written
                    pass
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the search ended ({proc.returncode}) before a {stage} trial reported")
        time.sleep(0.1)
    pytest.fail(f"no {stage} trial reported within {timeout} s")


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def trial_dirs(run_dir: Path) -> list[Path]:
    """Tune's trial directories under <run_dir>/ray (none before the first trial)."""
    return [p for p in (run_dir / "ray").glob("*/*") if p.is_dir()]


def only_run_dir(runs_root: Path) -> Path:
    (run_dir,) = [p for p in runs_root.iterdir() if p.is_dir()]
    return run_dir


def trial_results(run_dir: Path) -> dict[str, list[dict]]:
    """Trial id -> its result.json lines (one per reported epoch), over every Tune experiment of the run."""
    out: dict[str, list[dict]] = {}
    for path in sorted((run_dir / "ray").glob("*/*/result.json")):
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                out.setdefault(row["trial_id"], []).append(row)
    return out


def winner_trials(run_dir: Path) -> dict[str, list[dict]]:
    """Stage -> the `trials` entries of its winner.json."""
    return {path.parent.name: json.loads(path.read_text())["trials"]
            for path in sorted((run_dir / "stages").glob("*/winner.json"))}


def mlflow_trials(run_dir: Path) -> dict[str, dict]:
    """ray.trial_id -> {stage, status, steps of dev_f1} of every trial run in the run's MLflow."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir}/mlflow.db")
    experiments = [e.experiment_id for e in client.search_experiments()]
    out: dict[str, dict] = {}
    for run in client.search_runs(experiments, "tags.`doktra.level` = 'trial'", max_results=5000):
        trial_id = run.data.tags["ray.trial_id"]
        assert trial_id not in out, f"two MLflow runs for trial {trial_id}"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "dev_f1")]
        out[trial_id] = {"stage": run.data.tags.get("doktra.stage"), "steps": steps, "status": run.info.status}
    return out


def timed(label: str, start: float, proved: str) -> None:
    """The test's wall time and what it proved, on the test's output (pytest -s, or the report)."""
    print(f"\n[{label}] {time.monotonic() - start:.1f} s: {proved}")


@needs_data
def test_whole_tiny_chain_runs_on_the_workers_and_only_the_driver_writes_mlflow(start_hosts, tmp_path: Path) -> None:
    """CTT -> student -> ABD (trunk and branches) -> the final chain with 3 seeds: every epoch of every
    trial ran on a worker with the one GPU id it asked for; while it ran, no process on a worker had
    mlflow.db open (the driver on the head had: the watch sees opens); MLflow holds every trial, each
    epoch of its dev_f1 once."""
    start = time.monotonic()
    cluster = start_hosts(workers=2, binds=[DATA_ROOT])
    workers = cluster.hosts[1:]
    runs_root = tmp_path / "runs"
    with OpenFileWatch(cluster, cluster.hosts) as watch:
        ran = run_search_on(cluster, tmp_path, "search", "final.seeds=[1,2,3]", timeout=900)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    run_dir = only_run_dir(runs_root)
    worker_ips = {w.ip for w in workers}

    results = trial_results(run_dir)
    assert results, f"no trial results under {run_dir / 'ray'}"
    for trial_id, rows in results.items():
        for row in rows:  # every reported epoch: on a worker, with the one GPU it asked for
            assert row["node_ip"] in worker_ips, (trial_id, row["node_ip"])
            assert row["gpu_ids"] == ["0"], (trial_id, row["gpu_ids"])
    stages = winner_trials(run_dir)
    assert {"ctt", "student", "abd"} <= set(stages)
    final = json.loads((run_dir / "final" / "results.json").read_text())
    assert sorted({r["seed"] for r in final["runs"]}) == [1, 2, 3]
    assert len(final["runs"]) == 15 and {r["status"] for r in final["runs"]} == {"completed"}  # 5 variants x 3 seeds
    for stage, trials in stages.items():
        for trial in trials:
            assert trial["status"] == "completed", (stage, trial)
            assert trial["node_ip"] in worker_ips and trial["gpu_ids"] == ["0"], (stage, trial)
    used = {row["node_ip"] for rows in results.values() for row in rows}

    # no trial process opened mlflow.db; the driver (on the head) did, so the watch does see opens
    on_workers = sorted({(h, cmd, path) for h, _pid, cmd, path in watch.seen if h != "head"})
    assert not on_workers, on_workers
    assert watch.scans > 20 and any(h == "head" and "doktra_tune.search" in cmd for h, _p, cmd, _ in watch.seen)

    tracked = mlflow_trials(run_dir)
    for trial_id, rows in results.items():
        assert trial_id in tracked, f"trial {trial_id} has no MLflow run"
        steps = tracked[trial_id]["steps"]
        assert sorted(steps) == sorted({int(r["epoch"]) for r in rows}) and len(steps) == len(set(steps)), \
            (trial_id, steps, [r["epoch"] for r in rows])
    assert {t["trial_id"] for trials in stages.values() for t in trials} <= set(tracked)
    timed("whole chain", start, f"{len(results)} trials on {sorted(used)}, each with gpu_ids ['0']; "
          f"{watch.scans} scans of the workers' open files: no mlflow.db; {len(tracked)} MLflow trial runs, "
          "each epoch once; cluster up in {:.1f} s".format(cluster.up_s))


@needs_data
def test_a_worker_removed_mid_trial_its_trial_resumes_on_the_other(start_hosts, tmp_path: Path) -> None:
    """Once a CTT trial has reported its first epoch, every process of its worker is killed (the host
    is gone: raylet, trial, all): the search exits 0, that trial resumed from its last checkpoint on
    the other worker, and MLflow has each of its epochs once."""
    start = time.monotonic()
    epochs = 8
    cluster = start_hosts(workers=2, binds=[DATA_ROOT])
    runs_root = tmp_path / "runs"
    proc = start_search_on(cluster, tmp_path, "search", "search.stop_after=ctt", f"stages.ctt.epochs={epochs}")
    first = first_result(runs_root, "ctt", proc=proc)
    (lost,) = [h for h in cluster.hosts[1:] if h.ip == first["node_ip"]]
    (other,) = [h for h in cluster.hosts[1:] if h is not lost]
    killed = cluster.kill(lost)
    killed_at = time.monotonic() - start
    code, out, err = finish(proc, tmp_path, "search")
    assert code == 0, out[-3000:] + err[-3000:]

    run_dir = only_run_dir(runs_root)
    rows = trial_results(run_dir)[first["trial_id"]]
    on_lost = [int(r["epoch"]) for r in rows if r["node_ip"] == lost.ip]
    on_other = [int(r["epoch"]) for r in rows if r["node_ip"] == other.ip]
    assert on_lost and on_lost[-1] < epochs, f"the trial ended before its worker was killed: {on_lost}"
    # resumed after its last checkpointed epoch, not from the start. Every reported epoch has a checkpoint,
    # but Tune takes a trial's result and its checkpoint as two steps: a host gone between them (a busy
    # driver) leaves the last reported epoch without a registered checkpoint, and that one epoch runs again
    resumed_at = on_other[0]
    assert resumed_at in (on_lost[-1] + 1, on_lost[-1]) and (resumed_at > 1 or on_lost == [1]), (on_lost, on_other)
    assert on_other == list(range(resumed_at, epochs + 1)), (on_lost, on_other)
    (ctt,) = [trials for stage, trials in winner_trials(run_dir).items() if stage == "ctt"]
    assert [t["status"] for t in ctt] == ["completed", "completed"]
    assert {t["node_ip"] for t in ctt} == {other.ip}  # each trial's last epoch: the worker left
    tracked = mlflow_trials(run_dir)
    assert sorted(tracked[first["trial_id"]]["steps"]) == list(range(1, epochs + 1))
    for trial in ctt:
        assert sorted(tracked[trial["trial_id"]]["steps"]) == list(range(1, epochs + 1)), trial["trial_id"]
    timed("worker removed", start, f"{lost.name} ({lost.ip}) killed at {killed_at:.0f} s ({len(killed)} processes) "
          f"after epoch(s) {on_lost}; trial {first['trial_id']} went on at epoch {on_other[0]} on {other.name}; "
          f"MLflow steps 1..{epochs} once")


TEACHER_ID = "dmis-lab/biobert-base-cased-v1.1"  # served by tests/helpers/hub_server.py as a small random BERT

FETCH = """
import sys
from doktra_tune.models import fetch_model
print(fetch_model(sys.argv[1]))
"""


@needs_data
def test_a_worker_without_the_model_in_its_cache_stops_the_search_before_any_trial(start_hosts, tmp_path: Path) -> None:
    """The head and worker1 hold the teacher in their Hugging Face caches, worker2 has an empty
    cache: exit 2 before any trial, one line naming worker2's address and its cache."""
    from tests.helpers.hub_server import LocalHub, build_repos

    start = time.monotonic()
    prepared = tmp_path / "hf-prepared"
    repos = build_repos(tmp_path / "hub-repos", ids=[TEACHER_ID])
    with LocalHub(repos) as hub:  # on the machine's loopback, before any host exists
        env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "HF_HOME": str(prepared),
               "HF_ENDPOINT": hub.endpoint, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        fetched = subprocess.run([PYTHON, "-c", FETCH, TEACHER_ID], env=env, capture_output=True, text=True,
                                 timeout=300)
    assert fetched.returncode == 0, fetched.stderr[-3000:]
    assert (prepared / "hub" / f"models--{TEACHER_ID.replace('/', '--')}").is_dir()
    cluster = start_hosts(workers=2, binds=[DATA_ROOT], env={"HF_HUB_OFFLINE": "1"},
                          hf_caches={"head": prepared, "worker1": prepared})
    worker2 = cluster.host("worker2")
    ran = run_search_on(cluster, tmp_path, "search", f"teacher_model={TEACHER_ID}", "search.stop_after=ctt",
                        timeout=300)
    lines = error_lines(ran.stderr)
    assert ran.returncode == 2, ran.stdout[-3000:] + ran.stderr[-3000:]
    naming = [line for line in lines if worker2.ip in line]
    assert len(naming) == 1 and naming[0].startswith("error: "), lines
    assert f"{NODE_HF_HOME}/hub" in naming[0] and TEACHER_ID in naming[0] and "hf download" in naming[0], naming[0]
    assert not [line for line in lines if cluster.head.ip in line or cluster.host("worker1").ip in line], lines
    assert "Traceback" not in ran.stderr
    runs_root = tmp_path / "runs"
    assert not [d for run_dir in runs_root.glob("*") for d in trial_dirs(run_dir)]  # before any trial
    timed("cache lacks the model", start, f"exit 2: {naming[0]}")


LEASE_LINE = re.compile(r"search `(?P<id>[^`]+)` is already running on `(?P<host>[^`]+)` \(pid (?P<pid>\d+), "
                        r"since (?P<since>[^)]+)\); wait for it, or give this one another `search_id=`")


@needs_data
def test_the_same_search_started_twice_at_once_runs_once(start_hosts, tmp_path: Path) -> None:
    """Two copies of one command at the same moment: one exits 2 within seconds, naming the other's
    host and pid; the other finishes its stage with every trial completed, as if alone."""
    start = time.monotonic()
    cluster = start_hosts(workers=2, binds=[DATA_ROOT])
    overrides = ("search.stop_after=ctt", "stages.ctt.epochs=4")
    procs = {name: start_search_on(cluster, tmp_path, name, *overrides) for name in ("a", "b")}
    started = time.monotonic()
    ended: dict[str, float] = {}
    while len(ended) < 2 and time.monotonic() - started < 600:
        for name, proc in procs.items():
            if name not in ended and proc.poll() is not None:
                ended[name] = time.monotonic() - started
        time.sleep(0.1)
    results = {name: finish(proc, tmp_path, name) for name, proc in procs.items()}
    refused = [name for name, (code, _, _) in results.items() if code == 2]
    assert len(refused) == 1, {name: (code, err[-2000:]) for name, (code, _, err) in results.items()}
    (second,) = refused
    (first,) = [name for name in procs if name != second]
    code, out, err = results[first]
    assert code == 0, out[-3000:] + err[-3000:]
    lines = error_lines(results[second][2])
    assert len(lines) == 1, lines
    match = LEASE_LINE.search(lines[0])
    assert match and lines[0].startswith("error: "), lines[0]
    run_dir = only_run_dir(tmp_path / "runs")
    assert match["id"] == run_dir.name and match["host"] == "head" and int(match["pid"]) == procs[first].pid
    assert ended[second] < ended[first] and ended[second] < 60, ended  # within seconds, while the first ran
    assert not results[second][1].count("[ctt]")  # it trained nothing
    (ctt,) = [trials for stage, trials in winner_trials(run_dir).items() if stage == "ctt"]
    assert sorted(t["params"]["beta"] for t in ctt) == [0.0, 0.5]
    assert [t["status"] for t in ctt] == ["completed", "completed"]
    assert "resuming" not in out and "stopped" not in out
    tracked = mlflow_trials(run_dir)
    assert sorted(tracked) == sorted(t["trial_id"] for t in ctt)  # one MLflow run per trial, no second copy
    assert all(v["status"] == "FINISHED" and sorted(v["steps"]) == [1, 2, 3, 4] for v in tracked.values()), tracked
    timed("started twice", start, f"{second} exited 2 after {ended[second]:.1f} s: {lines[0]}; {first} exited 0 "
          f"after {ended[first]:.1f} s with both CTT trials completed")


@needs_data
def test_a_worker_that_joins_mid_stage_gets_trials(start_hosts, tmp_path: Path) -> None:
    """The head and ONE worker; a CTT grid of four betas; a second worker joins once the first trial
    has reported: at least one trial runs on it."""
    start = time.monotonic()
    cluster = start_hosts(workers=1, binds=[DATA_ROOT])
    runs_root = tmp_path / "runs"
    # trials of ~20 s each (960 examples, 12 epochs): each outlasts a host's join and the cold
    # start of a trial process there (seconds: torch); shorter ones all go to the first worker's reused actor
    proc = start_search_on(cluster, tmp_path, "search", "search.stop_after=ctt", "stages.ctt.grid.beta=[0.0,0.3,0.5,0.7]",
                           "stages.ctt.epochs=12", "data.train_limit=960")
    first_result(runs_root, "ctt", proc=proc)
    joined_at = time.monotonic() - start
    new = cluster.add_worker()
    code, out, err = finish(proc, tmp_path, "search")
    assert code == 0, out[-3000:] + err[-3000:]
    run_dir = only_run_dir(runs_root)
    (ctt,) = [trials for stage, trials in winner_trials(run_dir).items() if stage == "ctt"]
    assert sorted(t["params"]["beta"] for t in ctt) == [0.0, 0.3, 0.5, 0.7]
    assert all(t["status"] == "completed" for t in ctt)
    where = {trial_id: {r["node_ip"] for r in rows} for trial_id, rows in trial_results(run_dir).items()}
    on_new = [trial_id for trial_id, ips in where.items() if new.ip in ips]
    assert on_new, where
    assert "running 2" in out  # the two workers' trials at once
    timed("worker joins", start, f"{new.name} joined at {joined_at:.0f} s (up in {new.started_s:.1f} s); "
          f"{len(on_new)} of 4 trials ran on it")


@needs_data
def test_a_cluster_without_gpus_and_gpus_per_trial_1_is_one_line(start_hosts, tmp_path: Path) -> None:
    """A head and a worker without GPUs, `resources.gpus_per_trial=1`: exit 2 before any trial, one
    line naming `resources.gpus_per_trial=0`."""
    start = time.monotonic()
    cluster = start_hosts(workers=1, worker_gpus=0, binds=[DATA_ROOT])
    ran = run_search_on(cluster, tmp_path, "search", "search.stop_after=ctt", timeout=300)
    lines = error_lines(ran.stderr)
    assert ran.returncode == 2, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "resources.gpus_per_trial=0" in lines[0], lines
    assert not [d for run_dir in (tmp_path / "runs").glob("*") for d in trial_dirs(run_dir)]
    timed("no GPUs", start, f"exit 2: {lines[0]}")


class DriverWatch(ProcWatch):
    """While it runs (a thread): every process on `host` started as `<python> -m <module>`, recorded
    as pid -> its parent, its working directory and whether it loaded a library from `site_packages`
    (read from /proc: its stat, cwd and memory maps). `drivers` leaves out the children a driver
    forks: between fork and exec (a subprocess) they show the driver's command line."""

    def __init__(self, cluster: HostCluster, host, module: str, site_packages: Path, period_s: float = 0.2) -> None:
        super().__init__(cluster, period_s)
        self.host, self.module = host, module
        self.site_packages = str(site_packages.resolve()) + "/"
        self.seen: dict[int, dict] = {}

    def sweep(self) -> None:
        for pid in self.cluster.processes(self.host):
            try:
                if pid not in self.seen:
                    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                    if [a.decode(errors="replace") for a in argv[1:3]] != ["-m", self.module]:
                        continue
                    stat = Path(f"/proc/{pid}/stat").read_text()
                    parent = int(stat[stat.rindex(")") + 2:].split()[1])  # after "pid (comm) state"
                    self.seen[pid] = {"ppid": parent, "cwd": os.readlink(f"/proc/{pid}/cwd"),
                                      "site_packages": False}
                if not self.seen[pid]["site_packages"]:
                    self.seen[pid]["site_packages"] = self.site_packages in Path(f"/proc/{pid}/maps").read_text()
            except OSError:  # ended meanwhile
                continue

    @property
    def drivers(self) -> dict[int, dict]:
        """The processes seen whose parent is not itself one seen (a driver, not its fork)."""
        return {pid: seen for pid, seen in self.seen.items() if seen["ppid"] not in self.seen}


@needs_data
def test_the_search_submitted_as_a_ray_job_runs_on_the_cluster(start_hosts, tmp_path: Path) -> None:
    """The README's Ray Jobs recipe, run as written: a head with its dashboard (no GPU) and one worker
    (one GPU); in the repository on the head, `ray job submit --address http://<head>:8265
    --working-dir . -- python -m doktra_tune.search ... ray.address=auto` exits 0 and streams the
    search's output to the CTT stage's end; the job's driver ran on the head with the environment's
    python, inside the uploaded copy of the repository (without .git, .venv and what .gitignore
    lists, such as runs/), and checked both nodes; both CTT trials completed on the worker, each
    with its GPU id, and that worker got the same upload."""
    import shlex

    from tests.helpers.netns_hosts import RAY_CLI, REPO_ROOT, VENV_BIN

    start = time.monotonic()
    cluster = start_hosts(workers=1, binds=[DATA_ROOT], dashboard=True)
    worker = cluster.host("worker1")
    runs_root = tmp_path / "runs"
    search = ["python", "-m", "doktra_tune.search", "task=chemprot", "preset=tiny", f"data_root={DATA_ROOT}",
              f"runs_root={runs_root}", "ray.address=auto", "search.stop_after=ctt", "resources.gpus_per_trial=1"]
    submit = [str(RAY_CLI), "job", "submit", "--address", cluster.dashboard_url, "--working-dir", ".", "--", *search]
    submitted = time.monotonic()
    python_dir = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site_packages = VENV_BIN.parent / "lib" / python_dir / "site-packages"
    with DriverWatch(cluster, cluster.head, "doktra_tune.search", site_packages) as drivers:
        ran = cluster.run(["bash", "-c", f"cd {shlex.quote(str(REPO_ROOT))} && exec {shlex.join(submit)}"],
                          timeout=600)
    job_s = time.monotonic() - submitted
    (tmp_path / "job.out").write_text(ran.stdout)
    (tmp_path / "job.err").write_text(ran.stderr)
    out = ran.stdout + ran.stderr
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    job = re.search(r"Job '(raysubmit_\w+)' succeeded", out)
    assert job, out[-3000:]
    run_dir = only_run_dir(runs_root)
    assert f"search {run_dir.name}: task chemprot, preset tiny" in out  # the driver's output, streamed
    assert f"[nodes] 2 node(s) checked: {cluster.head.ip} 1 CPU, {worker.ip} 1 CPU 1 GPU" in out
    end = re.search(r"^\[ctt\] end in \d+s: winner \S+ .*$", out, re.MULTILINE)
    assert end, out[-3000:]

    # the job's driver: the environment's python, in the job's working directory (the upload)
    assert len(drivers.drivers) == 1, drivers.seen
    ((pid, driver),) = drivers.drivers.items()
    cwd = driver["cwd"]
    assert driver["site_packages"], f"the job's driver (pid {pid}) loaded nothing from {site_packages}"
    assert re.search(r"/runtime_resources/working_dir_files/_ray_pkg_[0-9a-f]+$", cwd), cwd
    package = Path(cwd).name
    listed = cluster.run(["bash", "-c", f"ls -A {shlex.quote(cwd)}; du -sk {shlex.quote(cwd)}"], timeout=60)
    *entries, size = listed.stdout.split("\n")[:-1]
    assert {"doktra_tune", "trainables", "pyproject.toml", ".gitignore"} <= set(entries), entries
    assert not {".git", ".venv", "runs", "mlruns", "mlflow.db", "__pycache__"} & set(entries), entries
    upload_kib = int(size.split()[0])
    on_worker = cluster.run(["ls", "/tmp/ray/session_latest/runtime_resources/working_dir_files"], host=worker,
                            timeout=60)
    assert package in on_worker.stdout.split(), on_worker.stdout  # the trials' node unpacked the same upload

    (ctt,) = [trials for stage, trials in winner_trials(run_dir).items() if stage == "ctt"]
    assert sorted(t["params"]["beta"] for t in ctt) == [0.0, 0.5]
    assert [t["status"] for t in ctt] == ["completed", "completed"]
    assert all(t["node_ip"] == worker.ip and t["gpu_ids"] == ["0"] for t in ctt), ctt
    timed("ray job", start, f"job {job[1]} exited 0 in {job_s:.0f} s (cluster up in {cluster.up_s:.1f} s); "
          f"driver (pid {pid}) on the venv's packages in {package} ({upload_kib} KiB unpacked, no .git, .venv "
          f"or runs/), on {worker.name} too; "
          f"both CTT trials completed on {worker.ip} with gpu_ids ['0']; {end[0]}")
