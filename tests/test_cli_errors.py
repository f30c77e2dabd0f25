"""The CLI's bad-input catalogue: one line on stderr, exit status 2, nothing in the run directory.

Also `--help` / `--cfg job` work and Hydra writes no outputs/ directory.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DATA_ROOT, cli_env, free_port


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


def _bad_tsv_root(tmp_path: Path) -> Path:
    root = tmp_path / "bad-tsv"
    (root / "ddi").mkdir(parents=True)
    for split in ("train", "dev", "test"):
        (root / "ddi" / f"{split}.tsv").write_text("index\tsentence\n0\t@DRUG$ raises @DRUG$ levels .\n")
    return root


@pytest.mark.skipif(not (DATA_ROOT / "chemprot_scibert").is_dir(), reason=f"no ChemProt data at {DATA_ROOT}")
def test_bad_inputs_exit_2_with_one_line_and_write_nothing(tmp_path: Path) -> None:
    procs = {}
    bad_tsv = _bad_tsv_root(tmp_path)
    for name, (overrides, _) in BAD_INPUTS.items():
        runs = tmp_path / name.replace(" ", "_") / "runs"
        env = cli_env()
        args = [o.replace(BAD_TSV_ROOT, str(bad_tsv)) for o in overrides]
        if not any(a.startswith("runs_root=") for a in args):
            args.append(f"runs_root={runs}")
        cmd = [sys.executable, "-m", "doktra_tune.search", "preset=tiny", *args]
        procs[name] = (runs, subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                              stderr=subprocess.PIPE, text=True))
    failures = []
    for name, (runs, proc) in procs.items():
        out, err = proc.communicate(timeout=240)
        lines = [line for line in err.splitlines() if line.strip()]
        expected = BAD_INPUTS[name][1]
        ok = (proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ")
              and expected in lines[0] and ";" in lines[0] and not runs.exists())
        if not ok:
            failures.append(f"{name}: rc={proc.returncode} stderr={err!r} stdout={out[-300:]!r}")
    assert not failures, "\n".join(failures)
    assert not (tmp_path / "outputs").exists() and not (tmp_path / ".hydra").exists()


def test_help_and_cfg_job(tmp_path: Path) -> None:
    help_ = subprocess.run([sys.executable, "-m", "doktra_tune.search", "--help"], cwd=tmp_path, env=cli_env(),
                           capture_output=True, text=True, timeout=120)
    assert help_.returncode == 0
    assert "preset: cpu, paper, proxy, tiny" in help_.stdout and "chemprot" in help_.stdout
    job = subprocess.run([sys.executable, "-m", "doktra_tune.search", "task=gad", "preset=cpu", "--cfg", "job"],
                         cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=120)
    assert job.returncode == 0, job.stderr
    assert "teacher_model: minilm" in job.stdout and "name: gad" in job.stdout
    assert "ctt_epochs: 3" in job.stdout  # Table A1: GAD's CTT runs 3 epochs
    chemprot = subprocess.run([sys.executable, "-m", "doktra_tune.search", "task=chemprot", "--cfg", "job"],
                              cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=120)
    assert chemprot.returncode == 0, chemprot.stderr  # the paper preset reads BLUE's ChemProt
    assert "  data_copy: paper\n" in chemprot.stdout
    assert "  data_subdir: chemprot\n  data_format: blue_tsv\n" in chemprot.stdout
    fpb = subprocess.run([sys.executable, "-m", "doktra_tune.search", "task=fpb", "--cfg", "job"], cwd=tmp_path,
                         env=cli_env(), capture_output=True, text=True, timeout=120)
    assert fpb.returncode == 0, fpb.stderr  # the paper preset, resolved: FinBERT-base teaches FPB (§4.7)
    assert "teacher_model: yiyanghkust/finbert-pretrain" in fpb.stdout
    assert "student_model: albert-xlarge-v2" in fpb.stdout and "epochs: 5" in fpb.stdout  # Table A4's CTT e
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no outputs/, no .hydra/, no log file
