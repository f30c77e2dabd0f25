"""A real two-node Ray cluster on one machine (`ray.cluster_utils.Cluster`): the search connects
with `ray.address=<head>`, its trials land on both nodes, and the stage's results come back."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from doktra_tune.search import compose_config, run_search

DATA_ROOT = Path(os.environ.get("DOKTRA_DATA_ROOT", Path(__file__).resolve().parents[2] / "shared" / "data"))
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (DATA_ROOT / "chemprot_scibert").is_dir(), reason=f"no ChemProt data at {DATA_ROOT}"),
]


def test_trials_land_on_both_nodes_of_a_two_node_cluster(tmp_path: Path) -> None:
    import ray
    from ray.cluster_utils import Cluster

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[var] = "1"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        cfg = compose_config([
            "task=chemprot", "preset=tiny", f"runs_root={tmp_path / 'runs'}", f"data_root={DATA_ROOT}",
            f"ray.address={cluster.address}", "search.stop_after=ctt",
        ])
        lines: list[str] = []
        summary = run_search(cfg, echo=lines.append)
        assert not ray.is_initialized()  # the driver disconnected again
        info = json.loads((Path(summary["run_dir"]) / "stages" / "ctt" / "winner.json").read_text())
        assert [t["status"] for t in info["trials"]] == ["completed", "completed"]
        nodes_used = {t["node_id"] for t in info["trials"]}
        ray.init(address=cluster.address)
        alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        assert len(alive) == 2 and nodes_used == alive
        assert any(f"on {cluster.address}" in line for line in lines)
        assert info["metrics"]["dev_f1"] == max(t["dev_f1"] for t in info["trials"])
    finally:
        ray.shutdown()
        cluster.shutdown()
