"""The task registry (Table 1, §4.7)."""

from __future__ import annotations

import pytest

from doktra_tune.errors import ConfigError
from doktra_tune.tasks import TASKS, TaskSpec, get_task


def test_registry_holds_the_seven_tasks():
    assert sorted(TASKS) == ["chemprot", "ddi", "fpb", "fts", "gad", "hoc", "i2b2"]
    for name, spec in TASKS.items():
        assert isinstance(spec, TaskSpec) and spec.name == name
        assert len(set(spec.labels)) == len(spec.labels)
        assert set(spec.negative_labels) <= set(spec.labels)
        assert spec.domain in ("biomedical", "clinical", "financial")
        assert spec.splits == ("train", "dev", "test")


def test_label_orders_and_metrics():
    chemprot = get_task("chemprot")
    assert chemprot.labels == ("CPR:3", "CPR:4", "CPR:5", "CPR:6", "CPR:9", "false")
    assert chemprot.negative_labels == ("false",)
    assert chemprot.positive_labels == ("CPR:3", "CPR:4", "CPR:5", "CPR:6", "CPR:9")
    assert get_task("ddi").labels[-1] == "DDI-false" and get_task("ddi").num_labels == 5
    assert get_task("i2b2").num_labels == 9 and get_task("i2b2").domain == "clinical"
    hoc = get_task("hoc")
    assert hoc.multi_label and hoc.num_labels == 10 and hoc.metric == "hoc_example_f1"
    gad = get_task("gad")
    assert gad.metric == "binary_f1" and gad.positive_label == "1" and gad.labels == ("0", "1")
    assert {get_task(n).metric for n in ("chemprot", "ddi", "i2b2")} == {"micro_f1_positive"}
    for name in ("fpb", "fts"):
        spec = get_task(name)
        assert spec.metric == "micro_f1" and spec.labels == ("negative", "neutral", "positive")
        assert spec.domain == "financial" and spec.negative_labels == ()
    assert sum(not s.multi_label for s in TASKS.values()) == 6


def test_get_task_is_case_insensitive_and_passes_specs_through():
    assert get_task("ChemProt") is TASKS["chemprot"]
    assert get_task(TASKS["gad"]) is TASKS["gad"]


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(ConfigError) as err:
        get_task("mednli")
    msg = str(err.value)
    assert "\n" not in msg and "'mednli'" in msg
    assert "chemprot, ddi, fpb, fts, gad, hoc, i2b2" in msg
