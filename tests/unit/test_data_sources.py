"""Task data that is not there: one line naming where it was looked for (and which setting said so),
where the task's files come from, and how to point data_root at them; before anything is written."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest

from doktra_tune.compose import compose_config, known_choices
from doktra_tune.data import MissingDataError
from doktra_tune.errors import ConfigError, DataError
from doktra_tune.plan import preflight
from doktra_tune.plan import search_plan as plan_module
from doktra_tune.plan.search_plan import build_plan
from doktra_tune.tasks import TASKS

REPO = Path(__file__).resolve().parents[2]


def _missing_line(overrides: list[str]) -> tuple[str, plan_module.Plan]:
    plan = build_plan(compose_config(["preset=tiny", *overrides]))
    with pytest.raises(DataError) as info:
        preflight.check_data(plan)
    return str(info.value), plan


def test_every_task_names_its_source(tmp_path: Path) -> None:
    """An empty data_root: per task, the folder looked at, the setting, the task's source, the fix."""
    assert sorted(TASKS) == known_choices("task")
    for task in sorted(TASKS):
        line, plan = _missing_line([f"task={task}", f"data_root={tmp_path}"])
        subdir = plan.config.task.data_subdir
        source = TASKS[task].data_source(plan.data.data_format)
        assert "\n" not in line
        assert line == (
            f"no {task} data at {tmp_path / subdir} (data_root={tmp_path}); get {source} and set "
            f"data_root=<folder holding {subdir}/> (or export DOKTRA_DATA_ROOT)"
        ), line
    # each task's source names the files its loader reads
    assert "chemprot/{train,dev,test}.txt" in TASKS["chemprot"].data_source("chemprot_jsonl")
    assert "{train,dev,test}.jsonl" in TASKS["chemprot"].data_source()
    assert "bert_data/ChemProt/{train,dev,test}.tsv" in TASKS["chemprot"].data_source("blue_tsv")
    assert TASKS["chemprot"].data_sources[0][0] == "blue_tsv"  # the paper's copy first
    assert "bert_data/ddi2013-type/{train,dev,test}.tsv" in TASKS["ddi"].data_source()
    assert "n2c2 data use agreement" in TASKS["i2b2"].data_source()
    assert "text/<PMID>.txt, labels/<PMID>.txt" in TASKS["hoc"].data_source("hoc_raw")
    assert "bert_data/hoc/{train,dev,test}.tsv" in TASKS["hoc"].data_source("blue_tsv")
    assert "RE/GAD/{1..10}/{train,test}.tsv" in TASKS["gad"].data_source("gad_folds:3")
    assert "Sentences_50Agree.txt" in TASKS["fpb"].data_source() and "all-data.csv" in TASKS["fpb"].data_source()
    assert "fts.csv (label,sentence)" in TASKS["fts"].data_source("csv_holdout:fts.csv")
    assert TASKS["fpb"].data_source("hf:x") == "the fpb files in the layout of data format hf (doktra_tune/data/__init__.py)"


BLUE_ZIP = "https://github.com/ncbi-nlp/BLUE_Benchmark/releases/download/0.1/bert_data.zip"  # BLUE README: release 0.1


def test_the_paper_preset_reads_blues_chemprot(tmp_path: Path) -> None:
    """preset=paper: ChemProt is BLUE's TSVs under <data_root>/chemprot (the paper's pre-processing);
    missing, one line names BLUE's release zip and the folder to put them in. The CPU presets read
    SciBERT's copy, named as such (task.data_copy=scibert)."""
    plan = build_plan(compose_config(["task=chemprot", "preset=paper", f"data_root={tmp_path}"]))
    assert (plan.config.task.data_copy, plan.data.data_format) == ("paper", "blue_tsv")
    assert plan.data.data_dir == str(tmp_path / "chemprot")
    with pytest.raises(DataError) as info:
        preflight.check_data(plan)
    line = str(info.value)
    assert line == (
        f"no chemprot data at {tmp_path / 'chemprot'} (data_root={tmp_path}); get BLUE's ChemProt ({BLUE_ZIP}: "
        f"bert_data/ChemProt/{{train,dev,test}}.tsv) and set data_root=<folder holding chemprot/> (or export "
        "DOKTRA_DATA_ROOT)"
    ), line
    for preset in ("cpu", "proxy", "tiny"):
        small = build_plan(compose_config(["task=chemprot", f"preset={preset}"]))
        assert (small.config.task.data_copy, small.config.task.data_subdir, small.data.data_format) == (
            "scibert", "chemprot_scibert", None)
    assert build_plan(compose_config(["task=chemprot", "preset=cpu"])).search_id == "chemprot-cpu-22682373"
    # the paper preset on SciBERT's copy, by name; other tasks have one copy
    assert build_plan(compose_config(["task=chemprot", "task.data_copy=scibert"])).config.task.data_subdir == \
        "chemprot_scibert"
    for overrides, message in ((["task=chemprot", "task.data_copy=blue"], "task.data_copy='blue' is unknown; use one "
                                "of paper, scibert"),
                               (["task=ddi", "preset=cpu", "task.data_copy=scibert"], "task ddi has one copy of its "
                                "data; drop the override task.data_copy=scibert")):
        with pytest.raises(ConfigError) as err:
            build_plan(compose_config(overrides))
        assert str(err.value) == message


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    """The task's folder is there but a file the loader needs is not: that file is named."""
    (tmp_path / "chemprot_scibert").mkdir()
    (tmp_path / "chemprot_scibert" / "train.jsonl").write_text('{"text": "a << b >> [[ c ]]", "label": "INHIBITOR"}\n')
    line, _ = _missing_line(["task=chemprot", f"data_root={tmp_path}"])
    assert line.startswith(f"no chemprot data at {tmp_path / 'chemprot_scibert' / 'dev.jsonl'} (data_root=")
    # GAD: fold 1 is there, the final runs' fold 2 is not
    fold = tmp_path / "gad" / "1"
    fold.mkdir(parents=True)
    rows = "".join(f"gene{i} causes disease{i} .\t{i % 2}\n" for i in range(40))
    (fold / "train.tsv").write_text(rows)
    (fold / "test.tsv").write_text("index\tsentence\tlabel\n" + "".join(f"{i}\tg{i} and d{i} .\t{i % 2}\n" for i in range(10)))
    line, _ = _missing_line(["task=gad", f"data_root={tmp_path}"])
    assert line.startswith(f"no gad data at {tmp_path / 'gad' / '2'} (data_root=")


def test_the_default_data_root_of_a_lone_clone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A clone with no ../shared beside it: the line says it was the default, beside which repository."""
    clone = tmp_path / "doktra-tune"
    monkeypatch.setattr(plan_module, "REPO_ROOT", clone)
    monkeypatch.setattr(preflight, "REPO_ROOT", clone)
    monkeypatch.delenv("DOKTRA_DATA_ROOT", raising=False)
    line, _ = _missing_line(["task=fpb"])
    assert line.startswith(
        f"no fpb data at {tmp_path / 'shared' / 'data' / 'fpb'} (the default data_root, ../shared/data beside "
        f"the repository {clone}); get the Financial PhraseBank v1.0"
    ), line
    monkeypatch.setenv("DOKTRA_DATA_ROOT", str(tmp_path / "elsewhere"))
    line, _ = _missing_line(["task=fpb"])
    assert line.startswith(f"no fpb data at {tmp_path / 'elsewhere' / 'fpb'} (DOKTRA_DATA_ROOT={tmp_path / 'elsewhere'});")


def test_missing_data_error_survives_pickling(tmp_path: Path) -> None:
    """Trials raise it in Ray workers; the driver gets the same message and path back."""
    err = pickle.loads(pickle.dumps(MissingDataError("missing train split file x; put it there", tmp_path / "x")))
    assert isinstance(err, DataError) and str(err) == "missing train split file x; put it there"
    assert err.path == tmp_path / "x"


def test_cli_paper_chemprot_without_blue_files(tmp_path: Path) -> None:
    """The paper preset's ChemProt folder is there but BLUE's TSVs are not: exit 2, one line naming the
    missing file and where BLUE's files come from, nothing written."""
    runs = tmp_path / "runs"
    (tmp_path / "data" / "chemprot").mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("DOKTRA_DATA_ROOT", None)
    proc = subprocess.run(
        [sys.executable, "-m", "doktra_tune.search", "task=chemprot", f"data_root={tmp_path / 'data'}",
         f"runs_root={runs}"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert lines == [
        f"error: no chemprot data at {tmp_path / 'data' / 'chemprot' / 'train.tsv'} (data_root={tmp_path / 'data'}); "
        f"get BLUE's ChemProt ({BLUE_ZIP}: bert_data/ChemProt/{{train,dev,test}}.tsv) and set "
        "data_root=<folder holding chemprot/> (or export DOKTRA_DATA_ROOT)"
    ], proc.stderr
    assert not runs.exists()


def test_cli_with_an_empty_data_root(tmp_path: Path) -> None:
    """The command line: exit 2, one line naming the source and data_root=, nothing written."""
    runs = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("DOKTRA_DATA_ROOT", None)
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "doktra_tune.search", "task=fpb", "preset=tiny", f"data_root={tmp_path / 'empty'}",
         f"runs_root={runs}"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert lines == [
        f"error: no fpb data at {tmp_path / 'empty' / 'fpb'} (data_root={tmp_path / 'empty'}); get "
        f"{TASKS['fpb'].data_source()} and set data_root=<folder holding fpb/> (or export DOKTRA_DATA_ROOT)"
    ], proc.stderr
    assert not runs.exists() and sorted(p.name for p in tmp_path.iterdir()) == []
    assert time.monotonic() - t0 < 120
