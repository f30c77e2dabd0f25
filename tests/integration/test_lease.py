"""One search per run directory (`doktra_tune.cluster.lease`): the lease file, its owner's message, the
takeovers of a stale lease (dead pid, reused pid, silent heartbeat, unreadable file), contenders
racing for one, the heartbeat, the release; then the real CLI started twice on one run directory, and
`kill -9` then the same command again.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from doktra_tune.cluster.lease import (
    LEASE_FILE,
    LeaseOwner,
    RunDirLease,
    machine_identity,
    read_owner,
)
from doktra_tune.errors import ConfigError
from tests.helpers.search import DATA_ROOT, cli_env

HOST = socket.gethostname()


def _owner(**fields) -> LeaseOwner:
    """A lease owner: this process on this machine unless `fields` say otherwise."""
    host, boot_id, pid_ns = machine_identity()
    base = dict(search_id="s1", host=host, pid=os.getpid(), create_time=psutil.Process().create_time(),
                started="2026-12-06T19:04:12.345+00:00", heartbeat=_iso(time.time()), token="t" * 32,
                boot_id=boot_id, pid_ns=pid_ns)
    return LeaseOwner(**{**base, **fields})


def _iso(seconds: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds")


def _write_lease(run_dir: Path, owner: LeaseOwner | None = None, raw: bytes | None = None,
                 age_s: float = 0.0) -> Path:
    """`run_dir/lease.json` holding `owner` (or `raw`), its modification time `age_s` ago."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LEASE_FILE
    path.write_bytes(raw if raw is not None else owner.to_bytes())
    mtime = time.time() - age_s
    os.utime(path, (mtime, mtime))
    return path


def _dead_pid() -> tuple[int, float]:
    """The pid and create time of a process that ran and is gone."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    created = psutil.Process(proc.pid).create_time()
    proc.kill()
    proc.wait()
    return proc.pid, created


def test_the_lease_is_created_exclusively_and_names_its_owner(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "s1"
    with RunDirLease(run_dir, "s1") as lease:
        data = json.loads((run_dir / LEASE_FILE).read_text())
        assert data["search_id"] == "s1" and data["host"] == HOST and data["pid"] == os.getpid()
        assert data["create_time"] == psutil.Process().create_time()
        assert data["started"].endswith("+00:00") and data["heartbeat"] == data["started"]
        assert lease.previous is None and lease.owner == read_owner(run_dir)
        with pytest.raises(ConfigError, match="is already running"):  # the same process asking again
            RunDirLease(run_dir, "s1").acquire()
        assert read_owner(run_dir) == lease.owner  # the refused one touched nothing
    assert not (run_dir / LEASE_FILE).exists()
    assert not (tmp_path / "runs").exists()  # acquire made runs/s1; empty at release, both removed


def test_a_live_owner_is_one_line_naming_its_host_pid_and_start(tmp_path: Path) -> None:
    _write_lease(tmp_path, _owner(search_id="chemprot-tiny-1a2b"))
    with pytest.raises(ConfigError) as err:
        RunDirLease(tmp_path, "chemprot-tiny-1a2b").acquire()
    assert str(err.value) == (
        f"search `chemprot-tiny-1a2b` is already running on `{HOST}` (pid {os.getpid()}, since 2026-12-06 "
        "19:04:12 UTC); wait for it, or give this one another `search_id=`"
    )
    # on another host: its heartbeat decides, and a fresh one is a live owner
    _write_lease(tmp_path, _owner(host="gpu-node-7", pid=4242, boot_id="b", pid_ns="p"))
    with pytest.raises(ConfigError, match=r"already running on `gpu-node-7` \(pid 4242, since 2026-12-06 19:04:12 UTC\)"):
        RunDirLease(tmp_path, "s1", stale_after_s=60).acquire()
    assert sorted(p.name for p in tmp_path.iterdir()) == [LEASE_FILE]  # nothing moved aside, nothing left


def test_a_dead_owner_on_this_machine_is_taken_over_at_once(tmp_path: Path, doktra_lines) -> None:
    pid, created = _dead_pid()
    _write_lease(tmp_path, _owner(pid=pid, create_time=created, token="dead" * 8))
    with RunDirLease(tmp_path, "s1", stale_after_s=3600) as lease:
        assert lease.previous is not None and lease.previous.pid == pid
        assert read_owner(tmp_path).pid == os.getpid() and read_owner(tmp_path).token != "dead" * 8
    assert doktra_lines() == [f"[lease] took over a stale lease from pid {pid} on `{HOST}` (search `s1` since "
                              "2026-12-06 19:04:12 UTC: its process is no longer running)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # released; no moved-aside file left


def test_a_pid_now_used_by_another_program_is_a_dead_owner(tmp_path: Path) -> None:
    """This process's pid, but a create time an hour earlier: the lease's process is gone."""
    _write_lease(tmp_path, _owner(create_time=psutil.Process().create_time() - 3600))
    with RunDirLease(tmp_path, "s1", stale_after_s=3600) as lease:
        assert lease.previous is not None and lease.previous.pid == os.getpid()


def test_a_silent_owner_elsewhere_is_taken_over_after_stale_after_s(tmp_path: Path, doktra_lines) -> None:
    elsewhere = dict(host="gpu-node-7", pid=4242, boot_id="b", pid_ns="p")
    # heartbeat and file both 3 s old, stale after 2 s: taken over
    _write_lease(tmp_path, _owner(heartbeat=_iso(time.time() - 3), **elsewhere), age_s=3)
    with RunDirLease(tmp_path, "s1", stale_after_s=2) as lease:
        assert lease.previous.host == "gpu-node-7"
    lines = doktra_lines()
    assert re.fullmatch(r"\[lease\] took over a stale lease from pid 4242 on `gpu-node-7` \(search `s1` since "
                        r"2026-12-06 19:04:12 UTC: no heartbeat for 3 s\)", lines[0]), lines
    # the owner's clock 10 s behind, the file just refreshed: alive (either clock fresh is enough)
    _write_lease(tmp_path, _owner(heartbeat=_iso(time.time() - 10), **elsewhere), age_s=0)
    with pytest.raises(ConfigError, match="already running on `gpu-node-7`"):
        RunDirLease(tmp_path, "s1", stale_after_s=2).acquire()
    # the owner's clock an hour ahead, the file untouched for 3 s: a heartbeat from the future is no heartbeat
    _write_lease(tmp_path, _owner(heartbeat=_iso(time.time() + 3600), **elsewhere), age_s=3)
    with RunDirLease(tmp_path, "s1", stale_after_s=2) as lease:
        assert lease.previous.pid == 4242


def test_an_unreadable_lease_is_judged_by_its_modification_time(tmp_path: Path, doktra_lines) -> None:
    _write_lease(tmp_path, raw=b'{"search_id": "s1", "ho', age_s=0)  # half written, just now
    with pytest.raises(ConfigError) as err:
        RunDirLease(tmp_path, "s1", stale_after_s=5).acquire()
    message = str(err.value)
    assert re.fullmatch(re.escape(f"the lease {tmp_path / LEASE_FILE} cannot be read and changed ") + r"[01] s ago "
                        r"\(another copy of this search may be starting\); wait 5 s and rerun, or give this one "
                        r"another `search_id=`", message), message  # read again for 1 s first
    _write_lease(tmp_path, raw=b"", age_s=30)  # empty, untouched for 30 s
    with RunDirLease(tmp_path, "s1", stale_after_s=5) as lease:
        assert lease.previous is None and read_owner(tmp_path) == lease.owner
    lines = doktra_lines()
    assert re.fullmatch(re.escape(f"[lease] took over the stale lease {tmp_path / LEASE_FILE} (unreadable, unchanged for ")
                        + r"3[01] s\)", lines[0]), lines  # 30 s, and the 1 s it was read again


def test_contenders_racing_for_a_stale_lease_exactly_one_wins(tmp_path: Path) -> None:
    """Eight threads, released at once on one dead owner's lease, ten times over: one holds it, the
    other seven see that one as a live owner."""
    pid, created = _dead_pid()
    for round_ in range(10):
        run_dir = tmp_path / f"r{round_}"
        _write_lease(run_dir, _owner(pid=pid, create_time=created))
        start, results = threading.Barrier(8), []
        leases = [RunDirLease(run_dir, "s1", heartbeat_s=0.05) for _ in range(8)]

        def contend(lease: RunDirLease) -> None:
            start.wait()
            try:
                lease.acquire()
                results.append("won")
            except ConfigError as err:
                results.append(str(err))

        threads = [threading.Thread(target=contend, args=(lease,)) for lease in leases]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        winners = [lease for lease in leases if lease.owner is not None]
        assert results.count("won") == 1 and len(winners) == 1, results
        assert all("is already running" in r for r in results if r != "won"), results
        time.sleep(0.2)  # a few heartbeats: the winner's lease stays its own
        assert read_owner(run_dir).token == winners[0].owner.token and not winners[0].lost
        winners[0].release()
        assert sorted(p.name for p in run_dir.iterdir()) == []  # no moved-aside or temporary file left


_CONTENDER = """
import sys, time
from pathlib import Path
from doktra_tune.errors import ConfigError
from doktra_tune.cluster.lease import RunDirLease
run_dir, at = Path(sys.argv[1]), float(sys.argv[2])
time.sleep(max(0.0, at - time.time()))
try:
    with RunDirLease(run_dir, "s1"):
        print("won", flush=True)
        time.sleep(1.5)
except ConfigError as err:
    print(err, flush=True)
"""


def test_contending_processes_exactly_one_wins(tmp_path: Path) -> None:
    pid, created = _dead_pid()
    _write_lease(tmp_path / "run", _owner(pid=pid, create_time=created))
    at = time.time() + 3.0  # all four past their imports by then
    procs = [subprocess.Popen([sys.executable, "-c", _CONTENDER, str(tmp_path / "run"), str(at)], env=cli_env(),
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [proc.communicate(timeout=60)[0].strip() for proc in procs]
    assert outs.count("won") == 1, outs
    winner = procs[outs.index("won")].pid
    assert all(o.startswith(f"search `s1` is already running on `{HOST}` (pid {winner}, since ") for o in outs
               if o != "won"), outs


def test_the_heartbeat_refreshes_the_lease_and_release_removes_it(tmp_path: Path) -> None:
    tmp_path.joinpath("config.yaml").write_text("x: 1\n")  # an existing run directory: kept at release
    with RunDirLease(tmp_path, "s1", heartbeat_s=0.1) as lease:
        first = read_owner(tmp_path)
        time.sleep(0.5)
        later = read_owner(tmp_path)
        assert later.heartbeat > first.heartbeat  # ISO UTC: ordered as text
        assert (later.token, later.started, later.pid) == (first.token, first.started, first.pid)
        assert lease.owner == later and not lease.lost
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


def test_a_lease_taken_over_stops_the_heartbeat_and_is_not_removed(tmp_path: Path, doktra_lines) -> None:
    with RunDirLease(tmp_path, "s1", heartbeat_s=0.05) as lease:
        other = _owner(token="o" * 32, pid=4242, host="gpu-node-7")
        _write_lease(tmp_path, other)
        deadline = time.monotonic() + 5
        while not lease.lost and time.monotonic() < deadline:
            time.sleep(0.02)
        assert lease.lost
        time.sleep(0.2)
        assert read_owner(tmp_path) == other  # never written over after that
    assert read_owner(tmp_path) == other  # and not removed at release
    assert doktra_lines() == [f"[lease] {tmp_path / LEASE_FILE} is no longer this search's (another copy took it over); "
                     "the heartbeat stopped"]


def test_the_lease_is_released_on_an_interrupt(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        with RunDirLease(tmp_path / "run", "s1"):
            raise KeyboardInterrupt
    assert not (tmp_path / "run").exists()
    RunDirLease(tmp_path / "run", "s1").acquire()  # free again


# -- the real CLI -----------------------------------------------------------------------------------

needs_chemprot = pytest.mark.skipif(not (DATA_ROOT / "chemprot_scibert").is_dir(),
                                    reason=f"no ChemProt data at {DATA_ROOT}")


def _cmd(runs: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "doktra_tune.search", "task=chemprot", "preset=tiny", "search.stop_after=ctt",
            f"runs_root={runs}", f"data_root={DATA_ROOT}", "search_id=twice", *extra]


def _wait_for_first_epoch(proc: subprocess.Popen, log: Path, lease: Path, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if lease.is_file() and re.search(r"^\[ctt\] trial \S+ epoch 1:", log.read_text(), re.M):
            return
        time.sleep(0.2)
    raise AssertionError(f"no first epoch (rc={proc.poll()}): {log.read_text()[-2000:]}")


@pytest.mark.slow
@needs_chemprot
def test_the_same_search_started_twice_the_second_exits_2_in_one_line(tmp_path: Path) -> None:
    """The issue's command, started again once the first printed its first epoch: the second exits 2
    within seconds naming the first's host and pid; the first finishes as if alone."""
    runs, log_path = tmp_path / "runs", tmp_path / "first.log"
    # one trial of 80 epochs: still training when the second has started (its 2 trials of 40 could
    # both end first, running side by side on the 2 cores)
    cmd = _cmd(runs, "stages.ctt.epochs=80", "stages.ctt.grid.beta=[0.0]")
    with log_path.open("w") as log:
        first = subprocess.Popen(cmd, cwd=tmp_path, env=cli_env(), stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    try:
        _wait_for_first_epoch(first, log_path, runs / "twice" / LEASE_FILE)
        owner = read_owner(runs / "twice")
        began = time.monotonic()
        second = subprocess.run(cmd, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=120)
        took = time.monotonic() - began
        since = owner.started[:10] + " " + owner.started[11:19] + " UTC"
        assert second.returncode == 2 and second.stderr.strip().splitlines() == [
            f"error: search `twice` is already running on `{HOST}` (pid {first.pid}, since {since}); wait for it, "
            "or give this one another `search_id=`"
        ], second.stderr
        # refused before Ray or any trial: the first still runs its first trials (its 40 epochs take longer),
        # and the time is the second's start-up (imports, preflight); on a 2-core box busy with the first: < 60 s
        assert second.stdout == "" and first.poll() is None and took < 60, took
        assert first.wait(timeout=600) == 0, log_path.read_text()[-3000:]
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    out = log_path.read_text()
    assert "stopped" not in out and "GCS" not in out, out[-3000:]
    winner = json.loads((runs / "twice" / "stages" / "ctt" / "winner.json").read_text())
    assert [(t["params"]["beta"], t["status"]) for t in winner["trials"]] == [(0.0, "completed")]
    assert not (runs / "twice" / LEASE_FILE).exists()  # released at the end


# kill -9 then the same command: tests/integration/test_resume.py (the lease taken over, the stage resumed)
