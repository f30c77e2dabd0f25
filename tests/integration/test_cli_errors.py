"""The CLI's bad-input catalogue: one line on stderr, exit status 2, nothing in the run directory.

Every case runs the CLI's `main` in this process (its stdout/stderr file descriptors captured), as
`python -m doktra_tune.search` would run it; one case runs as a real `python -m doktra_tune.search`
subprocess: its exit status and its one stderr line from a fresh interpreter (tests/integration/test_multirun.py
and tests/unit/test_data_sources.py run two more). Also `--help` / `--cfg job` work and Hydra writes no
outputs/ directory.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.search import DATA_ROOT, cli_env, free_port

needs_chemprot = pytest.mark.skipif(not (DATA_ROOT / "chemprot_scibert").is_dir(),
                                    reason=f"no ChemProt data at {DATA_ROOT}")

BAD_TSV_ROOT = "BAD_TSV_ROOT"  # replaced by a data root whose DDI train.tsv header has no label column
BAD_INPUTS: dict[str, tuple[list[str], str]] = {  # name -> (overrides, what the one line must say)
    "unknown task": (["task=nosuch"], "unknown task 'nosuch'"),
    "unknown preset": (["preset=huge"], "unknown preset 'huge'"),
    "unknown key": (["nosuch.key=1"], "nosuch"),
    "gamma out of range": (["stages.abd.grid.gamma=[0.5,1.5]"], "gamma"),
    "negative lr": (["stages.student.grid.lr=[-1e-5]"], "lr"),
    "negative beta": (["stages.ctt.grid.beta=[-0.1]"], "beta"),
    "grid value wrong type": (["stages.ctt.grid.beta=[abc]"], "beta"),
    "missing data root": (["data_root=/nonexistent/doktra-data"], "/nonexistent/doktra-data"),
    "model not cached offline": (["teacher_model=no-such-org/no-such-model"], "no-such-org/no-such-model"),
    "ray address not answering": ([f"ray.address=127.0.0.1:{free_port()}", "ray.connect_timeout_s=2"],
                                  "ray.address"),
    "tpe without budget": (["search.mode=tpe"], "num_samples"),
    "unknown precision": (["stages.ctt.precision=fp16"], "stages.ctt.precision"),
    "run dir not writable": (["runs_root=/proc/nope"], "runs_root"),
    "max_len beyond the models": (["data.max_len=100000"], "data.max_len=100000 is longer than"),
    "TSV header without a label column": (["task=ddi", f"data_root={BAD_TSV_ROOT}"], "no label (label/labels) column"),
    "hub model with no network": (["teacher_model=bert-base-uncased"], "cannot be downloaded"),
    "unknown ChemProt copy": (["task.data_copy=blue"], "task.data_copy='blue' is unknown; use one of paper, scibert"),
    "unknown GAD dev": (["task=gad", "task.data_format=gad_folds:1:dev"], "GAD dev 'dev' is unknown"),
}
IN_A_SUBPROCESS = "hub model with no network"  # huggingface_hub reads its settings at import: a fresh one


def _bad_tsv_root(tmp_path: Path) -> Path:
    root = tmp_path / "bad-tsv"
    (root / "ddi").mkdir(parents=True)
    for split in ("train", "dev", "test"):
        (root / "ddi" / f"{split}.tsv").write_text("index\tsentence\n0\t@DRUG$ raises @DRUG$ levels .\n")
    return root


def _argv(name: str, tmp_path: Path) -> tuple[list[str], Path]:
    """The command line of case `name` (after `python -m doktra_tune.search`) and its run root."""
    runs = tmp_path / "runs"
    args = [o.replace(BAD_TSV_ROOT, str(_bad_tsv_root(tmp_path))) if BAD_TSV_ROOT in o else o
            for o in BAD_INPUTS[name][0]]
    if not any(a.startswith("runs_root=") for a in args):
        args.append(f"runs_root={runs}")
    return ["preset=tiny", *args], runs


def _check(name: str, code: int | None, out: str, err: str, runs: Path, cwd: Path) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    expected = BAD_INPUTS[name][1]
    assert (code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]
            and ";" in lines[0] and not runs.exists()), f"{name}: rc={code} stderr={err!r} stdout={out[-300:]!r}"
    assert not (cwd / "outputs").exists() and not (cwd / ".hydra").exists()


@needs_chemprot
@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_inputs_exit_2_with_one_line_and_write_nothing(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capfd: pytest.CaptureFixture[str]) -> None:
    """`main` as `python -m doktra_tune.search` runs it: Hydra reads sys.argv, a user's cwd, cli_env()."""
    from doktra_tune.search.cli import main

    argv, runs = _argv(name, tmp_path)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("DOKTRA_DATA_ROOT", str(DATA_ROOT))
    monkeypatch.setattr(sys, "argv", ["doktra_tune.search", *argv])  # what Hydra reads
    capfd.readouterr()
    with pytest.raises(SystemExit) as info:
        main()
    out, err = capfd.readouterr()
    _check(name, info.value.code, out, err, runs, cwd)
    assert list(cwd.iterdir()) == []


@needs_chemprot
def test_a_bad_input_in_a_real_subprocess(tmp_path: Path) -> None:
    """The same, as a user runs it: a fresh `python -m doktra_tune.search` (Ray, torch, huggingface_hub
    imported), its exit status and the one line on its stderr."""
    argv, runs = _argv(IN_A_SUBPROCESS, tmp_path)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = subprocess.run([sys.executable, "-m", "doktra_tune.search", *argv], cwd=cwd, env=cli_env(),
                          capture_output=True, text=True, timeout=240)
    _check(IN_A_SUBPROCESS, proc.returncode, proc.stdout, proc.stderr, runs, cwd)
    assert list(cwd.iterdir()) == []


def test_help_and_cfg_job(tmp_path: Path) -> None:
    help_ = subprocess.run([sys.executable, "-m", "doktra_tune.search", "--help"], cwd=tmp_path, env=cli_env(),
                           capture_output=True, text=True, timeout=120)
    assert help_.returncode == 0
    assert "preset: cpu, paper, proxy, tiny" in help_.stdout and "chemprot" in help_.stdout
    job = subprocess.run([sys.executable, "-m", "doktra_tune.search", "task=gad", "preset=cpu", "--cfg", "job", "--resolve"],
                         cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=120)
    assert job.returncode == 0, job.stderr
    assert "teacher_model: minilm" in job.stdout and "name: gad" in job.stdout
    assert "ctt_epochs: 3" in job.stdout  # Table A1: GAD's CTT runs 3 epochs
    chemprot = subprocess.run([sys.executable, "-m", "doktra_tune.search", "task=chemprot", "--cfg", "job", "--resolve"],
                              cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=120)
    assert chemprot.returncode == 0, chemprot.stderr  # the paper preset reads BLUE's ChemProt
    assert "  data_copy: paper\n" in chemprot.stdout
    assert "  data_subdir: chemprot\n  data_format: blue_tsv\n" in chemprot.stdout
    fpb = subprocess.run([sys.executable, "-m", "doktra_tune.search", "task=fpb", "--cfg", "job", "--resolve"], cwd=tmp_path,
                         env=cli_env(), capture_output=True, text=True, timeout=120)
    assert fpb.returncode == 0, fpb.stderr  # the paper preset, resolved: FinBERT-base teaches FPB (§4.7)
    assert "teacher_model: yiyanghkust/finbert-pretrain" in fpb.stdout
    assert "student_model: albert-xlarge-v2" in fpb.stdout and "epochs: 5" in fpb.stdout  # Table A4's CTT e
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no outputs/, no .hydra/, no log file
