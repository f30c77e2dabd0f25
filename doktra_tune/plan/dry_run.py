"""`search.dry_run=true`: print what a search would run, the tokens its batches hold, an estimate of
its GPU-hours in fp32, TF32 and bf16, and its predicted time on a CPU, then stop.

Only the plan (`plan.build_plan`), its runs counted (`budget`) and the estimate (`estimate`): no
Ray, no model weights, no download, no run directory, nothing written. Where the data are under
data_root their splits are read and tokenised (torch and transformers load for that) to count the
tokens each batch holds; elsewhere the estimate counts data.max_len per sequence and says so.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from doktra_tune.plan.budget import is_upper_bound, plan_budget, stage_jobs
from doktra_tune.plan.estimate import (
    CPU_REFERENCE,
    GPU_PRECISIONS,
    REFERENCE_GPU,
    SOURCE,
    Estimate,
    architecture,
    cpu_stage_seconds,
    data_sizes,
    estimate,
    gpu_precision,
    local_concurrency,
    task_sizes,
    throughput,
)
from doktra_tune.plan.search_plan import Plan, build_plan
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
    beside = ("; the teacher/student runs start beside the ABD search (final.beside_abd)"
              if f.beside_abd and plan.config.resources.max_concurrent_trials is None else "")
    return (f"final runs: {len(jobs['final'])} = variants {list(f.variants)} x seeds {list(f.seeds)}{folds} "
            f"({f.protocol} protocol, scored on {list(f.eval_splits)}{spread}){beside}")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h" if seconds < 48 * 3600 else f"{seconds / 86400:.0f} d"


def _plan_precisions(plan: Plan) -> str:
    """The precision(s) the plan's stages compute in on a GPU: `tf32`, or `ctt tf32, student bf16, ...`."""
    shown = {stage: gpu_precision(s.precision) for stage, s in plan.config.stages.items()}
    return next(iter(shown.values())) if len(set(shown.values())) == 1 else \
        ", ".join(f"{stage} {p}" for stage, p in shown.items())


def _data_line(plan: Plan, gpu: Estimate) -> str:
    c = plan.config
    head = f"max_len {plan.data.max_len}, batch {c.train.batch_size}, batching {c.train.batching}"
    counted = next(iter(gpu.tokens.models.values()), None)
    if counted is None:
        train_n, dev_n, test_n = data_sizes(plan)
        limits = (plan.data.train_limit, plan.data.dev_limit, plan.data.test_limit)
        limited = ", data.*_limit applied" if any(limit is not None for limit in limits) else ""
        return (f"data: {plan.task} train {train_n} / dev {dev_n} / test {test_n} examples ({task_sizes(plan)[1]}"
                f"{limited}), {head}; {_data_words(plan)} (not read)")
    sizes = [counted.train.examples, *(counted.evaluation[s].examples for s in ("dev", "test"))]
    return (f"data: {plan.task} train {sizes[0]} / dev {sizes[1]} / test {sizes[2]} examples read from "
            f"{plan.data.data_dir} (the stages' subsample), {head}; {_data_words(plan)}")


def _token_lines(plan: Plan, gpu: Estimate) -> list[str]:
    c = plan.config
    if not gpu.tokens.models:
        return [f"tokens: data.max_len = {plan.data.max_len} per sequence, not counted ({gpu.tokens.reason}): an upper "
                "bound, batches pad to their longest"]
    lines = []
    for role, spec in (("teacher", c.teacher_model), ("student", c.student_model)):
        t = gpu.tokens.models[spec]
        padded, real = t.tokens_per_batch()
        lines.append(f"tokens per batch ({role} {spec}): {padded:,.0f} padded, {real:,.0f} real in a training batch of "
                     f"{t.batch_size} ({c.train.batching}; {padded / t.batch_size:.1f} per sequence, max_len "
                     f"{plan.data.max_len}), tokenised with {t.tokenizer}")
    return lines


def dry_run_lines(plan: Plan) -> list[str]:
    """The printed plan: models, data, tokens per batch, per stage trials / epoch-units / GPU-hours in
    fp32, TF32 and bf16 / predicted CPU time, final runs, the estimate's sources."""
    c = plan.config
    budget = plan_budget(plan)
    jobs = stage_jobs(plan)
    gpu = estimate(plan)
    costs = {st.stage: st for st in gpu.stages}
    concurrency = local_concurrency(plan)
    s = c.search
    samples = f" ({s.num_samples} samples per stage)" if s.mode == "tpe" else ""
    lines = [
        f"dry run of search {plan.search_id} (task {plan.task}, preset {c.preset}): nothing is trained, downloaded "
        "or written",
        f"run directory (not created): {plan.run_dir}",
        f"models: teacher {_model_words(c.teacher_model)}; student {_model_words(c.student_model)}",
        _data_line(plan, gpu),
        *_token_lines(plan, gpu),
        f"search: mode {s.mode}{samples}, pruner {s.pruner}, handoff {s.handoff}, abd share_prefix "
        f"{str(c.stages['abd'].share_prefix).lower()}{f', stop_after {s.stop_after}' if s.stop_after else ''}",
        f"{'stage':8s} {'trials':>6s} {'epoch-units':>12s} {'GPU-h fp32':>10s} {'tf32':>6s} {'bf16':>6s} "
        f"{'CPU':>9s}  what",
    ]
    cpu_seconds: list[float | None] = []
    for stage in budget.stages:
        bound = "<=" if is_upper_bound(plan, stage.stage, jobs[stage.stage]) else ""
        units = f"{bound}{stage.epoch_units}"
        note = stage.note
        if stage.stage == "abd":
            shared = " with the shared prefix" if any(not j.is_trial for j in jobs["abd"]) else ""
            units = f"{bound}{stage.epoch_units} of {stage.grid_epoch_units}"
            note = f"{units} epoch-units{shared}: {note}"
        cost = costs[stage.stage]
        cpu = cpu_stage_seconds(cost, concurrency)
        cpu_seconds.append(cpu)
        hours = [f"{_hours(cost.gpu_hours(p)):>{w}s}" for p, w in zip(GPU_PRECISIONS, (10, 6, 6))]
        lines.append(f"{stage.stage:8s} {stage.trials:6d} {units:>12s} {' '.join(hours)} {_duration(cpu):>9s}  {note}")
    total_bound = "<=" if any(is_upper_bound(plan, st, j) for st, j in jobs.items()) else ""
    totals = [f"{_hours(gpu.total(p)):>{w}s}" for p, w in zip(GPU_PRECISIONS, (10, 6, 6))]
    lines.append(f"{'total':8s} {sum(st.trials for st in budget.stages):6d} "
                 f"{total_bound + str(sum(st.epoch_units for st in budget.stages)):>12s} {' '.join(totals)} "
                 f"{_duration(None if None in cpu_seconds else sum(s for s in cpu_seconds if s is not None)):>9s}")
    lines.append(_final_line(plan, jobs))
    tokens = ("the tokens the batches hold (counted above)" if gpu.tokens.models else
              f"{plan.data.max_len} tokens per sequence (an upper bound: batches pad to their longest)")
    lines.append(f"GPU-hours: {_hours(gpu.total())} in all at the plan's precision ({_plan_precisions(plan)}) on one "
                 f"{REFERENCE_GPU}; {SOURCE}; {tokens}; one teacher forward pass per distilled-from teacher (cached "
                 "[CLS] vectors)")
    if CPU_REFERENCE.train_flops:
        lines.append(f"CPU: predicted wall time with {concurrency} one-thread trial(s) at once on a {CPU_REFERENCE.cpu} "
                     f"at the measured fp32 rate (train {CPU_REFERENCE.train_flops / 1e9:.1f}, eval "
                     f"{CPU_REFERENCE.eval_flops / 1e9:.1f} GFLOP/s per thread; {CPU_REFERENCE.source}); the "
                     "FLOP model alone: trial start-up, model loading and saving are left out")
    if gpu.missing:
        lines.append(f"GPU-hours n/a: no throughput figure for {', '.join(gpu.missing)} "
                     "(doktra_tune/plan/estimate.py MODELS)")
    for role, spec, stage in (("teacher", c.teacher_model, "ctt"), ("student", c.student_model, "student")):
        arch = architecture(spec)
        if arch is None:
            continue
        precision = gpu_precision(c.stages[stage].precision)
        train, evaluate = throughput(arch, precision, plan.data.max_len)
        lines.append(f"throughput ({role}, estimate): {arch.label} {arch.params / 1e6:.1f}M params "
                     f"({arch.compute_params / 1e6:.0f}M non-embedding per token pass), {precision}: train "
                     f"{train:,.0f} seq/s, eval {evaluate:,.0f} seq/s at {plan.data.max_len} tokens; architecture from "
                     f"{arch.source}")
    return lines


def print_dry_run(cfg: DictConfig | dict[str, Any]) -> Plan:
    """Check `cfg` (`build_plan`: a bad value is a one-line ConfigError) and print its plan (the
    command's output, to stdout)."""
    plan = build_plan(cfg)
    for line in dry_run_lines(plan):
        print(line)
    return plan
