"""`search.dry_run=true`: print what a search would run and an estimate of its GPU-hours, then stop.

Only the plan (`plan.build_plan`), its runs counted (`budget`) and the estimate (`estimate`): no
Ray, no torch, no download, no run directory, nothing written.
"""

from __future__ import annotations

from typing import Any, Callable

from omegaconf import DictConfig

from doktra_tune.search.budget import is_upper_bound, plan_budget, stage_jobs
from doktra_tune.search.estimate import (
    REFERENCE_GPU,
    SOURCE,
    architecture,
    data_sizes,
    estimate,
    gpu_precision,
    task_sizes,
    throughput,
)
from doktra_tune.search.plan import Plan, build_plan
from doktra_tune.tasks import get_task


def _hours(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1f}" if value >= 0.95 else f"{value:.2f}" if value >= 0.005 else "<0.01"


def _model_words(spec: str) -> str:
    arch = architecture(spec)
    if arch is None:
        return f"{spec} (not in the throughput table)"
    return f"{spec} ({arch.label}, {arch.params / 1e6:.1f}M params)"


def _data_words(plan: Plan) -> str:
    """Where the search reads its data: the folder, the format (the task's copy when it has several)."""
    fmt = plan.data.data_format or f"{get_task(plan.task).default_format}, the task's default"
    copy = f", copy {plan.config.task.data_copy}" if plan.config.task.data_copy else ""
    return f"files {plan.data.data_dir} (format {fmt}{copy})"


def _final_line(plan: Plan, jobs: dict) -> str:
    """What the final runs are: how many, which variants x seeds (x GAD folds), how GAD's ± is taken."""
    f, s = plan.config.final, plan.config.search
    if "final" not in jobs:
        return f"final runs: none (search.stop_after={s.stop_after})"
    folds = f" x {len(f.folds)} GAD folds {list(f.folds)}" if f.folds else ""
    spread = (f"; GAD ± final.gad_std={f.gad_std}: "
              + ("std over seeds of each seed's fold mean" if f.gad_std == "over_seeds" else "std over every run")
              if f.folds else "")
    return (f"final runs: {len(jobs['final'])} = variants {list(f.variants)} x seeds {list(f.seeds)}{folds} "
            f"({f.protocol} protocol, scored on {list(f.eval_splits)}{spread})")


def dry_run_lines(plan: Plan) -> list[str]:
    """The printed plan: models, data, per stage trials / epoch-units / GPU-hours, final runs, estimate."""
    c = plan.config
    budget = plan_budget(plan)
    jobs = stage_jobs(plan)
    gpu = estimate(plan)
    hours = {st.stage: st for st in gpu.stages}
    train_n, dev_n, test_n = data_sizes(plan)
    s = c.search
    limits = (c.data.train_limit, c.data.dev_limit, c.data.test_limit)
    limited = ", data.*_limit applied" if any(limit is not None for limit in limits) else ""
    samples = f" ({s.num_samples} samples per stage)" if s.mode == "tpe" else ""
    lines = [
        f"dry run of search {plan.search_id} (task {plan.task}, preset {c.preset}): nothing is trained, downloaded "
        "or written",
        f"run directory (not created): {plan.run_dir}",
        f"models: teacher {_model_words(c.teacher_model)}; student {_model_words(c.student_model)}",
        f"data: {plan.task} train {train_n} / dev {dev_n} / test {test_n} examples ({task_sizes(plan)[1]}"
        f"{limited}), max_len {c.data.max_len}, batch {c.train.batch_size}; {_data_words(plan)} (not read)",
        f"search: mode {s.mode}{samples}, pruner {s.pruner}, handoff {s.handoff}, abd share_prefix "
        f"{str(c.stages['abd'].share_prefix).lower()}{f', stop_after {s.stop_after}' if s.stop_after else ''}",
        f"{'stage':8s} {'trials':>6s} {'epoch-units':>12s} {'GPU-hours':>9s}  what",
    ]
    for stage in budget.stages:
        bound = "<=" if is_upper_bound(plan, stage.stage, jobs[stage.stage]) else ""
        units = f"{bound}{stage.epoch_units}"
        note = stage.note
        if stage.stage == "abd":
            shared = " with the shared prefix" if any(not j.is_trial for j in jobs["abd"]) else ""
            units = f"{bound}{stage.epoch_units} of {stage.grid_epoch_units}"
            note = f"{units} epoch-units{shared}: {note}"
        lines.append(f"{stage.stage:8s} {stage.trials:6d} {units:>12s} {_hours(hours[stage.stage].hours):>9s}  {note}")
    total_bound = "<=" if any(is_upper_bound(plan, st, j) for st, j in jobs.items()) else ""
    lines.append(f"{'total':8s} {sum(st.trials for st in budget.stages):6d} "
                 f"{total_bound + str(sum(st.epoch_units for st in budget.stages)):>12s} {_hours(gpu.total):>9s}")
    lines.append(_final_line(plan, jobs))
    lines.append(f"GPU-hours: {_hours(gpu.total)} in all on one {REFERENCE_GPU}; {SOURCE}; {c.data.max_len} tokens per "
                 "sequence (an upper bound: batches pad to their longest); one teacher forward pass per distilled-from "
                 "teacher (cached [CLS] vectors)")
    if gpu.missing:
        lines.append(f"GPU-hours n/a: no throughput figure for {', '.join(gpu.missing)} "
                     "(doktra_tune/search/estimate.py MODELS)")
    for role, spec, stage in (("teacher", c.teacher_model, "ctt"), ("student", c.student_model, "student")):
        arch = architecture(spec)
        if arch is None:
            continue
        precision = gpu_precision(c.stages[stage].precision)
        train, evaluate = throughput(arch, precision, c.data.max_len)
        lines.append(f"throughput ({role}, estimate): {arch.label} {arch.params / 1e6:.1f}M params "
                     f"({arch.compute_params / 1e6:.0f}M non-embedding per token pass), {precision}: train "
                     f"{train:,.0f} seq/s, eval {evaluate:,.0f} seq/s at {c.data.max_len} tokens; architecture from "
                     f"{arch.source}")
    return lines


def print_dry_run(cfg: DictConfig | dict[str, Any], echo: Callable[[str], None] = print) -> Plan:
    """Check `cfg` (`build_plan`: a bad value is a one-line ConfigError) and print its plan."""
    plan = build_plan(cfg)
    for line in dry_run_lines(plan):
        echo(line)
    return plan
