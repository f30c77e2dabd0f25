"""The outcome of a finished search, where a user looks first (`mlflow ui`, no second command):

* the search run gets Table 2's test F1 / ECE / L_AT per variant as metrics (`test_f1.doktra`,
  `test_f1.doktra.std`, ...), the tables (Markdown/CSV/LaTeX) and plots as artifacts, the dataset
  inputs, and a description (`mlflow.note.content`): Table 2, what differs from the paper, the
  winners' hyperparameters and the command that reproduces the search;
* an experiment-level *outcome view* (MLflow's shared view state, `mlflow.sharedViewState.<key>`):
  the runs table with the Dataset column and the test F1/ECE columns of every variant, opened by
  `#/experiments/<id>/runs?viewStateShareKey=<key>` (MLflow's default first view shows no metric
  columns and keeps the user's column choice in the browser, where a server cannot set it);
* the three winners — the CTT teacher, the fine-tuned student, the DoKTra student — are logged as
  MLflow models (transformers flavour: model, tokenizer, label names) and registered as
  `doktra-<task>-teacher`, `-student`, `-doktra`, tagged with the search id.

It runs after the final runs and again on a rerun until it has succeeded (`final/outcome.json`), so
a tracking server that was away at the end gets the outcome later.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import mlflow
import torch
import transformers
from mlflow.tracking import MlflowClient

from analysis.report import write_report
from analysis.runs import SearchSource
from doktra_tune.models import load_checkpoint
from doktra_tune.plan.search_plan import Plan
from doktra_tune.search.winners import atomic_write_json
from doktra_tune.tracking import SearchTracker
from doktra_tune.tracking.datasets import dataset_inputs

OUTCOME_FILE = "outcome.json"
REGISTERED_ROLES = {"ctt": "teacher", "student": "student", "abd": "doktra"}
SUMMARY_METRICS = ("test_f1", "test_ece", "test_lat", "test_macro_f1")
VIEW_METRICS = ("test_f1", "test_ece")  # the outcome view's metric columns, in this order
VIEW_VARIANTS = ("doktra", "doktra_no_ctt", "student_ft", "teacher_ctt", "teacher_ft")
SHARED_VIEW_TAG = "mlflow.sharedViewState."  # the MLflow UI's prefix of a shared view's experiment tag


def registered_name(task: str, stage: str) -> str:
    return f"doktra-{task}-{REGISTERED_ROLES[stage]}"


def search_metrics(summary: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """`<metric>.<variant>` (mean over seeds) and `<metric>.<variant>.std` for the search run."""
    out: dict[str, float] = {}
    for variant, stats in summary.items():
        for metric in SUMMARY_METRICS:
            value = stats.get(metric)
            if isinstance(value, Mapping) and value.get("mean") is not None:
                out[f"{metric}.{variant}"] = float(value["mean"])
                out[f"{metric}.{variant}.std"] = float(value.get("std") or 0.0)
    return out


def outcome_view_key(search_id: str) -> str:
    return f"outcome-{search_id}"


def outcome_view_state(metric_names: list[str]) -> dict[str, Any]:
    """The MLflow UI's runs-table state for a search's outcome: Dataset, then test F1 and ECE of
    every variant present (column ids as the UI writes them: attributes.`X`, metrics.`name`)."""
    present = set(metric_names)
    variants = [v for v in VIEW_VARIANTS if any(f"{m}.{v}" in present for m in VIEW_METRICS)]
    variants += sorted({n.split(".", 1)[1] for n in present if n.count(".") == 1} - set(variants))
    metrics = [f"metrics.`{m}.{v}`" for m in VIEW_METRICS for v in variants if f"{m}.{v}" in present]
    columns = ["attributes.`Dataset`", *metrics]
    return {"selectedColumns": columns, "columnOrder": columns, "orderByKey": "attributes.start_time",
            "orderByAsc": False}


def outcome_view_route(experiment_id: str, search_id: str) -> str:
    return f"#/experiments/{experiment_id}/runs?viewStateShareKey={outcome_view_key(search_id)}"


def set_outcome_view(tracker: SearchTracker, plan: Plan, metric_names: list[str]) -> str:
    """Store the outcome view on the experiment; returns its UI route."""
    client = MlflowClient(tracking_uri=tracker.tracking_uri)
    client.set_experiment_tag(tracker.experiment_id, SHARED_VIEW_TAG + outcome_view_key(plan.search_id),
                              json.dumps(outcome_view_state(metric_names)))
    return outcome_view_route(tracker.experiment_id, plan.search_id)


def description(plan: Plan, results: Mapping[str, Any], table: str, command: str, view_route: str = "") -> str:
    """The search run's description: outcome first, then how it was found and how to get it again."""
    winners = results.get("winners", {})
    lines = [f"# DoKTra search `{plan.search_id}` — {plan.task}", "", table.strip(), "",
             *([f"All variants side by side: the outcome view, `{view_route}` after the UI's address.", ""]
               if view_route else []),
             f"Final runs: `final.protocol={results.get('protocol', 'chain')}`, seeds {list(plan.config.final.seeds)}"
             + (f", GAD folds {list(plan.config.final.folds)} (± `final.gad_std={plan.config.final.gad_std}`)"
                if plan.config.final.folds else "") + ".", "",
             "## Winners (dev set)", ""]
    for stage, label in (("ctt", "CTT teacher"), ("student", "student fine-tuning"), ("abd", "ABD")):
        params = ", ".join(f"{k}={v}" for k, v in sorted((winners.get(stage) or {}).items()))
        lines.append(f"- {label}: {params} — registered as `{registered_name(plan.task, stage)}`")
    lines += ["", "## Reproduce", "", f"```\n{command}\n```", "",
              f"Tables and plots: artifacts `tables/`, `plots/`; run directory `{plan.run_dir}`."]
    return "\n".join(lines)


def reproduce_command(plan: Plan, overrides: list[str] | None) -> str:
    args = overrides if overrides is not None else [f"task={plan.task}", f"preset={plan.config.preset}"]
    return " ".join(["python -m doktra_tune.search", *args])


def _model_card(plan: Plan, stage: str, meta: dict[str, Any]) -> Any:
    """The registered model's card, written here: without one MLflow asks the hub for the card of the
    checkpoint's path (a network call, and a warning where there is no hub)."""
    from huggingface_hub import ModelCard

    return ModelCard(
        f"---\nlibrary_name: transformers\npipeline_tag: text-classification\ntags: [doktra, {plan.task}]\n---\n"
        f"# {REGISTERED_ROLES[stage]}, DoKTra search {plan.search_id}\n\n"
        f"Task {plan.task}, labels {list(meta.get('labels', []))}; the {stage} winner after epoch {meta.get('epoch')}, "
        f"from {meta.get('model_spec')} (Choi, Choi & Lee, ACL 2022: calibrated activation boundary distillation).\n"
    )


def register_winners(tracker: SearchTracker, plan: Plan, winners: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Log each stage winner as an MLflow transformers model on its stage run and register it;
    returns registered name -> version. A winner this search registered before (an earlier,
    interrupted publication) is not registered twice."""
    mlflow.set_tracking_uri(tracker.tracking_uri)
    client = MlflowClient(tracking_uri=tracker.tracking_uri)
    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"transformers=={transformers.__version__}"]
    versions: dict[str, str] = {}
    for stage in REGISTERED_ROLES:
        info = winners[stage]
        name = registered_name(plan.task, stage)
        earlier = registered_version(client, name, plan.search_id)
        if earlier is not None:
            versions[name] = earlier
            continue
        run_id = tracker.stage_run_id(stage)
        if run_id is None:  # its stage run waits in the outbox: the server is away
            raise ConnectionError(f"tracking server {tracker.tracking_uri} is away: stage run {stage} not created yet")
        model, tokenizer, meta = load_checkpoint(info["checkpoint"])
        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        with mlflow.start_run(run_id=run_id):
            logged = mlflow.transformers.log_model(
                transformers_model={"model": model, "tokenizer": tokenizer}, name="model", task="text-classification",
                registered_model_name=name, pip_requirements=requirements, model_card=_model_card(plan, stage, meta),
                metadata={"labels": list(meta.get("labels", [])), "search_id": plan.search_id, "stage": stage,
                          "epoch": meta.get("epoch"), "model_spec": meta.get("model_spec")},
            )
        version = str(logged.registered_model_version)
        for key, value in {"doktra.search_id": plan.search_id, "doktra.task": plan.task, "doktra.stage": stage,
                           "doktra.trial_id": info.get("trial_id", ""),
                           "doktra.params": json.dumps(info.get("params", {}), sort_keys=True)}.items():
            client.set_model_version_tag(name, version, key, str(value))
        client.set_registered_model_tag(name, "doktra.task", plan.task)
        client.update_model_version(name, version, description=(
            f"{REGISTERED_ROLES[stage]} of DoKTra search {plan.search_id} ({plan.task}): the {stage} winner, "
            f"epoch {meta.get('epoch')}, labels {meta.get('labels')}"))
        versions[name] = version
    return versions


def registered_version(client: MlflowClient, name: str, search_id: str) -> str | None:
    """The version of registered model `name` that search `search_id` registered, if any."""
    try:
        found = client.search_model_versions(f"name = '{name}'")
    except Exception:  # noqa: BLE001 - no such registered model yet
        return None
    mine = [v for v in found if (v.tags or {}).get("doktra.search_id") == search_id]
    return str(max(int(v.version) for v in mine)) if mine else None


def publish_outcome(
    tracker: SearchTracker, plan: Plan, winners: Mapping[str, Mapping[str, Any]], results: Mapping[str, Any],
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Tables and plots (analysis), the search run's metrics/artifacts/datasets/description, the
    registered winners; writes final/outcome.json. Raises when the tracking server is away."""
    source = SearchSource(tracker.tracking_uri, plan.search_id, plan.run_dir)
    report = write_report([source], plan.run_dir)
    key = tracker.search_key
    metrics = search_metrics(results.get("summary", {}))
    tracker.client.log_metrics(key, metrics, step=0)
    view_route = set_outcome_view(tracker, plan, sorted(metrics))
    for sub, paths in (("tables", sorted((plan.run_dir / "tables").glob("*"))), ("plots", report.figures)):
        for path in paths:
            tracker.client.log_artifact(key, path, sub)
    tracker.client.log_inputs(key, dataset_inputs(plan.data, ["train", "dev", "test"]))
    tracker.client.set_tags(key, {"mlflow.note.content": description(
        plan, results, report.summary(), reproduce_command(plan, overrides), view_route)})
    versions = register_winners(tracker, plan, winners)
    outcome = {"registered": versions, "view": view_route, "tables": sorted(report.tables),
               "figures": [str(p) for p in report.figures]}
    atomic_write_json(plan.run_dir / "final" / OUTCOME_FILE, outcome)
    return outcome


def outcome_done(run_dir: Path) -> bool:
    return (run_dir / "final" / OUTCOME_FILE).is_file()
