"""The default search (`search.pruner=none`, local Ray) loads none of the pruning bridge and none of
the internal Ray names `doktra_tune.ray_compat` wraps: they are imported inside the functions that
build a pruner (or resolve `ray.address=auto`). Checked in a fresh interpreter, whose sys.modules
holds only what the driver import and `build_search` pulled in."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

LAZY = ("doktra_tune.ray_compat", "doktra_tune.search.pruning", "doktra_tune.search.synchronous_halving")

SCRIPT = """
import json, sys
import doktra_tune.search.driver  # everything a search imports up front
from doktra_tune.search.optuna_searcher import pruned_trial_ids
from doktra_tune.search.search_algorithms import build_search
from doktra_tune.search_space import SearchSpace

space = SearchSpace(stage="student", params={"lr": [1e-5, 2e-5], "epochs": [2, 3]}, fixed={})
loaded = {}
for mode, n in (("grid", None), ("tpe", 3)):
    searcher, scheduler, _ = build_search(space, mode=mode, num_samples=n, pruner="none", max_t=3, seed=0,
                                          group_key="epochs")
    searcher.suggest("a")
    pruned_trial_ids(scheduler)
loaded["none"] = sorted(sys.modules)
build_search(space, mode="grid", num_samples=None, pruner=sys.argv[1], max_t=3, seed=0)
loaded["pruner"] = sorted(sys.modules)
print(json.dumps(loaded))
"""


def _modules(pruner: str) -> dict[str, list[str]]:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, pruner], cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_pruner_none_loads_no_pruning_module_and_no_private_ray_name() -> None:
    loaded = _modules("median")
    default = set(loaded["none"])
    assert not default & set(LAZY), sorted(default & set(LAZY))
    assert "ray.tune.search.optuna" not in default  # Ray's OptunaSearch (private study attributes): unused
    assert not [m for m in default if "ray_compat" in m or "pruning" in m]
    # the control: a pruner does load the bridge (so the check above looks at the right names)
    assert set(LAZY) <= set(loaded["pruner"])


PLAIN_GRID_SEARCH = """
import json, sys, tempfile
from doktra_tune.search import compose_config, run_search
runs = tempfile.mkdtemp()
cfg = compose_config(["task=chemprot", "preset=tiny", f"runs_root={runs}", "search.stop_after=ctt",
                      "ray.num_cpus=2", f"data_root={sys.argv[1]}"])
summary = run_search(cfg)
print(json.dumps({"optuna": sorted(m for m in sys.modules if m.split(".")[0] == "optuna"),
                  "ctt": summary["ctt"]["params"]}))
"""


def test_a_plain_grid_search_never_imports_optuna(data_root) -> None:
    """The paper's exhaustive grid without a pruner is plain Tune (`tune.grid_search` over RunSpecs):
    a fresh interpreter that runs a real tiny grid stage through the driver has no optuna module."""
    out = subprocess.run([sys.executable, "-c", PLAIN_GRID_SEARCH, str(data_root)], cwd=REPO, capture_output=True,
                         text=True, timeout=600, env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["optuna"] == [] and result["ctt"]["beta"] in (0.0, 0.5)
