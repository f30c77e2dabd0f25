"""Hydra multirun (`-m task=chemprot,fpb`): every job checked before the first starts, the searches
run one after another (each with its own local Ray), a failing one stops the sweep with one line
naming it, nothing lands in the working directory, and the printed analysis command works."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from doktra_tune.compose import CONF_DIR, known_choices
from doktra_tune.search.cli import main
from doktra_tune.search.multirun import expand

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"  # the default data_root, found without any setting
VENV_BIN = Path(sys.executable).parent


def _clean_env(home: Path, **extra: str) -> dict[str, str]:
    """What `env -i PATH=<venv>/bin:/usr/bin:/bin HOME=<empty dir>` gives: no DOKTRA_*, no HF_*."""
    return {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": str(home), **extra}


def _search(args: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, "-m", "doktra_tune.search", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def _main(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m doktra_tune.search <argv>` in this process: Hydra reads sys.argv."""
    monkeypatch.setattr(sys, "argv", ["doktra_tune.search", *argv])
    main()


def jobs(overrides: list[str]) -> list[list[str]]:
    """`expand` with the config directory's groups answering `glob()`, as inside the running CLI."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return expand(overrides, GlobalHydra.instance().config_loader())
    finally:
        GlobalHydra.instance().clear()


def test_sweeps_expand_as_hydra_does() -> None:
    assert jobs(["task=chemprot,fpb", "preset=tiny"]) == [
        ["task=chemprot", "preset=tiny"], ["task=fpb", "preset=tiny"]]
    assert [job[0] for job in jobs(["task=glob(*)"])] == [f"task={t}" for t in known_choices("task")]
    assert jobs(["train.seed=range(1,4)", "task=fpb"]) == [
        ["train.seed=1", "task=fpb"], ["train.seed=2", "task=fpb"], ["train.seed=3", "task=fpb"]]
    assert jobs(["task=fpb"]) == [["task=fpb"]]  # -m without a sweep: one search
    assert jobs(["stages.abd.grid.gamma=[0.5,0.7]"]) == [["stages.abd.grid.gamma=[0.5,0.7]"]]  # a list


@pytest.mark.parametrize(("argv", "expected"), [
    (["task=chemprot,fpb", "preset=tiny"],
     "error: task=chemprot,fpb sweeps over several values; add -m (--multirun) to run one search per value"),
    (["-m", "preset=tiny", "stages.abd.grid.gamma=[0.5],[1.5]"],
     "error: multirun search 2 (preset=tiny stages.abd.grid.gamma=[1.5] runs_root={runs}): stages.abd: override "
     "gamma=[1.5]: gamma: value 1.5 is out of range"),
    (["-m", "task=chemprot,fpb", "preset=tiny", "search_id=mine"],
     "error: multirun searches 1 and 2 would share the run directory"),
    (["-m", "task=chemprot,fpb", "train.seed=interval(0,1)"],
     "error: bad override (BasicSweeper does not support sweep type : INTERVAL_SWEEP); a sweep is a,b (choice)"),
    (["-m", "task=chemprot,fpb", "--cfg", "job"],
     "error: --cfg shows one config and -m runs several; drop -m and give one value per key"),
])
def test_bad_sweeps_are_one_line_before_any_search(argv: list[str], expected: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    runs = tmp_path / "runs"
    with pytest.raises(SystemExit) as info:
        shows = [a for a in argv if a in ("--cfg", "job")]  # Hydra's flags after the overrides, as argparse reads them
        _main([*(a for a in argv if a not in shows), f"runs_root={runs}", *shows], monkeypatch)
    err = capsys.readouterr().err
    assert info.value.code == 2 and len(_error_lines(err)) == 1 and err.startswith(expected.format(runs=runs)), err
    assert not (tmp_path / "runs").exists()


def test_unknown_task_in_a_sweep_stops_everything_up_front(tmp_path: Path) -> None:
    """The issue's command with a typo in the second task: one line naming it, quickly, nothing run."""
    t0 = time.monotonic()
    proc = _search(["-m", "task=chemprot,nosuchtask", "preset=tiny", f"runs_root={tmp_path / 'runs'}"],
                   tmp_path / "cwd", _clean_env(tmp_path / "home"), timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert _error_lines(proc.stderr) == [
        f"error: multirun search 2 (task=nosuchtask preset=tiny runs_root={tmp_path / 'runs'}): unknown task "
        "'nosuchtask' (override task=nosuchtask); use one of chemprot, ddi, fpb, fts, gad, hoc, i2b2"]
    assert proc.stdout == "" and not (tmp_path / "runs").exists() and list((tmp_path / "cwd").iterdir()) == []
    assert time.monotonic() - t0 < 60  # Ray, torch and the searches never load


@pytest.mark.skipif(not (SHARED / "fpb").is_dir(), reason=f"no FPB data at the default data_root {SHARED}")
def test_a_task_without_data_stops_the_sweep_before_the_first_search(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """ddi has no data here: the sweep stops before fpb (search 1) runs, not after it."""
    monkeypatch.delenv("DOKTRA_DATA_ROOT", raising=False)
    with pytest.raises(SystemExit) as info:
        _main(["-m", "task=fpb,ddi", "preset=tiny", f"runs_root={tmp_path / 'runs'}"], monkeypatch)
    err = capsys.readouterr().err
    assert info.value.code == 2 and len(_error_lines(err)) == 1
    assert err.startswith(f"error: multirun search 2 (task=ddi preset=tiny runs_root={tmp_path / 'runs'}): no ddi "
                          f"data at {SHARED / 'ddi'} (the default data_root"), err  # symbolic links kept as written
    assert "get BLUE's DDI" in err and "data_root=<folder holding ddi/>" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "fpb").is_dir(), reason=f"no FPB data at the default data_root {SHARED}")
def test_a_failing_search_stops_the_sweep_naming_it(tmp_path: Path) -> None:
    """Search 1's teacher is not to be had offline: one line naming search 1, search 2 never starts."""
    runs = tmp_path / "runs"
    # the hub switched off: the unknown model id is a cache miss at once, not a network timeout
    env = _clean_env(tmp_path / "home", HF_HUB_OFFLINE="1")
    proc = _search(["-m", "teacher_model=no-such-org/no-such-model,random:bert:L1-H32", "task=fpb", "preset=tiny",
                    f"runs_root={runs}", "search.stop_after=ctt"], tmp_path / "cwd", env, timeout=240)
    lines = _error_lines(proc.stderr)
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: multirun search 1 (teacher_model=no-such-org/no-such-model task=fpb "
                               "preset=tiny") and "the later ones did not start): teacher_model=" in lines[0]
    assert "[multirun] search 1 of 2" in proc.stdout and "search 2 of 2" not in proc.stdout
    assert [p.name for p in runs.iterdir()] == ["multirun"]  # Hydra's record of the sweep; no run dir
    assert list((tmp_path / "cwd").iterdir()) == []


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "chemprot_scibert").is_dir() or not (SHARED / "fpb").is_dir(),
                    reason=f"no ChemProt/FPB data at the default data_root {SHARED}")
def test_multirun_over_two_tasks(tmp_path: Path) -> None:
    """`-m task=chemprot,fpb` in a user's bare shell (data at the default data_root): two searches, one
    after another, each its own run dir with a CTT winner; the cwd stays empty; the printed analysis
    command builds one set of tables over both."""
    runs, cwd, env = tmp_path / "runs", tmp_path / "cwd", _clean_env(tmp_path / "home")
    proc = _search(["-m", "task=chemprot,fpb", "preset=tiny", f"runs_root={runs}", "search.stop_after=ctt"],
                   cwd, env, timeout=480)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout.splitlines()
    starts = [line for line in out if line.startswith("[multirun] search ")]
    assert [line.split(":")[0] for line in starts] == ["[multirun] search 1 of 2", "[multirun] search 2 of 2"]
    assert "task=chemprot" in starts[0] and "task=fpb" in starts[1]
    run_dirs = sorted(p for p in runs.iterdir() if p.name != "multirun")
    assert [p.name.split("-")[:2] for p in run_dirs] == [["chemprot", "tiny"], ["fpb", "tiny"]]
    for run_dir in run_dirs:
        assert (run_dir / "stages" / "ctt" / "winner.json").is_file()
        assert not (run_dir / "stages" / "student").exists()
        assert not (run_dir / "ray_processes.json").exists()  # each search shut its local Ray down
    assert f"[multirun] chemprot: {run_dirs[0]}" in out and f"[multirun] fpb: {run_dirs[1]}" in out
    assert list(cwd.iterdir()) == []  # no multirun/, outputs/, .hydra/ in the working directory
    assert [p.name for p in (runs / "multirun").iterdir()][0][:2] == "20"  # <date>_<time>/multirun.yaml
    command = next(line for line in out if line.startswith("[multirun] one Table 2 across them (FPB/FTS: Table 7): "))
    argv = shlex.split(command.split("): ", 1)[1])
    assert argv[:3] == ["python", "-m", "analysis"] and argv[-2:] == ["--out", str(runs / "analysis-chemprot-fpb")]
    analysis = subprocess.run([sys.executable, *argv[1:]], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=240)
    assert analysis.returncode == 0, analysis.stderr[-2000:]
    tables = runs / "analysis-chemprot-fpb" / "tables"
    assert (tables / "ctt_selection_chemprot.md").is_file() and (tables / "ctt_selection_fpb.md").is_file()
