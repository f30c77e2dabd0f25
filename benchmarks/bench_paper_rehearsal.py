"""The `paper` preset rehearsed end to end on this CPU, its trials and epochs counted against the plan.

Issue 16: every trial and epoch-unit the plan announces, counted in the finished run directory.

    python benchmarks/bench_paper_rehearsal.py --task chemprot [--task gad] [--runs-root DIR] [--keep]

The paper preset as it is -- its grids (4 beta1; 3 lr1 x 6 e1; lr2 x beta2 x gamma with e2 = 10),
the per-task epochs, the default `final.protocol` (shared_models) with 3 seeds, GAD's ten folds -- with only the models
and the data shrunk:

1. Models: tiny random-weight models saved at the preset's own hub ids (`tests.helpers.hub_server`), served
   by a local hub endpoint; the preset's `teacher_model` / `student_model` are not overridden. The
   student is wider than the teacher (64 vs 32), as ALBERT-xlarge is than BioBERT-base, so ABD goes
   through the fixed random projection as it does at paper scale.
2. Data: ChemProt is the real `chemprot_scibert` under `--data-root` (`task.data_copy=scibert`: the
   preset's own copy, BLUE's TSVs, is not in `../shared/data`); GAD has no data here, so BioBERT's ten
   folds are written in their format with seeded synthetic sentences. Only `data.train_limit` /
   `dev_limit` / `test_limit` shrink them.
3. The real CLI (`python -m doktra_tune.search task=<task> ...`, no `preset=`) runs in a subprocess
   with a clean environment (PATH, HOME, HF_HOME, HF_ENDPOINT); its output goes to
   `<workdir>/<task>.log`, one line per stage start and end is printed.
4. From the run directory: per stage the Tune trials and the epochs each really trained
   (`ray/<stage>*/<trial>/result.json`, one line per reported epoch; epochs an ABD branch took from
   its trunk, marked `shared_prefix`, are not training), compared with `plan_budget(plan)` (the
   final stage at the student winner's e1, which the plan made before the search can only bound);
   where the time went (training, evaluation, the rest of each trial, outside the trials); peak RSS,
   the run directory's size. Exit status 1 when a count differs from the plan, naming which."""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from doktra_tune.cluster.disk import dir_bytes, fmt_bytes  # noqa: E402
from doktra_tune.metrics import SHARED_METRIC  # noqa: E402
from doktra_tune.plan.budget import PlanBudget, StageBudget, plan_budget  # noqa: E402
from doktra_tune.plan.search_plan import Plan, build_plan  # noqa: E402
from doktra_tune.run_spec import trial_record  # noqa: E402
from doktra_tune.search import compose_config  # noqa: E402
from doktra_tune.search.trials import experiment_trial_states  # noqa: E402

STAGES = ("ctt", "student", "abd", "final")
# Tune experiments (ray/<name>) whose trials count toward a stage: its own, its resumes, and the
# extra runs the driver makes for it (the beta1 = 0 teacher of the winners protocol, the ABD trunks)
EXPERIMENTS = {"ctt": ("ctt", "ctt_ft"), "student": ("student",), "abd": ("abd", "abd_trunk"), "final": ("final",)}
DEFAULT_LIMITS = (48, 24, 24)  # train / dev / test: every ChemProt CPR group keeps an example in each
STAGE_LINE = re.compile(r"^\[(ctt|student|abd|final|outcome)\] (start|end in|finished earlier|shared prefix)")
END_LINE = re.compile(r"^\[(ctt|student|abd|final)\] end in (\d+)s")


# --------------------------------------------------------------------------- GAD folds

GAD_POSITIVE = (
    "The @GENE$ {variant} was associated with an increased risk of @DISEASE$ in {population} .",
    "{Population} carrying the @GENE$ {variant} showed a significant association with @DISEASE$ .",
    "@GENE$ {variant} may contribute to susceptibility to @DISEASE$ in {population} .",
    "Our data suggest that the @GENE$ {variant} is a risk factor for @DISEASE$ .",
)
GAD_NEGATIVE = (
    "No association was found between the @GENE$ {variant} and @DISEASE$ in {population} .",
    "The @GENE$ {variant} was not associated with @DISEASE$ among {population} .",
    "Our results do not support a role of the @GENE$ {variant} in @DISEASE$ .",
    "{Population} showed no difference in @GENE$ {variant} frequency between @DISEASE$ cases and controls .",
)
GAD_VARIANTS = ("polymorphism", "genotype", "allele", "haplotype", "promoter variant", "C677T polymorphism",
                "insertion/deletion polymorphism", "Arg72Pro variant")
GAD_POPULATIONS = ("Chinese patients", "European cohorts", "a case-control study", "Japanese women",
                   "African Americans", "children", "elderly men", "a Finnish population")


def gad_sentence(rng: random.Random, label: int) -> str:
    template = rng.choice(GAD_POSITIVE if label else GAD_NEGATIVE)
    population = rng.choice(GAD_POPULATIONS)
    return template.format(variant=rng.choice(GAD_VARIANTS), population=population,
                           Population=population[0].upper() + population[1:])


def write_gad_folds(root: Path, *, train_rows: int, test_rows: int, seed: int = 0) -> Path:
    """BioBERT's ten GAD folds under `<root>/gad/<k>/` (k = 1..10), in their documented format:
    `train.tsv` without a header (`sentence<TAB>label`), `test.tsv` with one (`index sentence label`);
    labels 0/1 in equal shares, sentences from templates, seeded per fold. Returns `<root>/gad`."""
    gad = root / "gad"
    for fold in range(1, 11):
        rng = random.Random(seed * 1000 + fold)
        fold_dir = gad / str(fold)
        fold_dir.mkdir(parents=True, exist_ok=True)
        train = [(gad_sentence(rng, i % 2), i % 2) for i in range(train_rows)]
        rng.shuffle(train)
        (fold_dir / "train.tsv").write_text("".join(f"{s}\t{y}\n" for s, y in train))
        test = [(gad_sentence(rng, i % 2), i % 2) for i in range(test_rows)]
        rng.shuffle(test)
        (fold_dir / "test.tsv").write_text(
            "index\tsentence\tlabel\n" + "".join(f"{i}\t{s}\t{y}\n" for i, (s, y) in enumerate(test)))
    return gad


# --------------------------------------------------------------------------- running the CLI


def tree_rss(root_pid: int) -> tuple[int, int]:
    """Resident bytes of `root_pid` and all its descendants, and of the largest of them (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry.name))
    total, largest, todo, page = 0, 0, [root_pid], os.sysconf("SC_PAGE_SIZE")
    while todo:
        pid = todo.pop()
        try:
            rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
        total, largest = total + rss, max(largest, rss)
        todo += children.get(pid, [])
    return total, largest


@dataclass
class RunLog:
    """What the CLI printed, with the seconds since its start, and what was measured around it
    (None: not recorded, e.g. a log written before these figures were)."""

    overrides: list[str]
    lines: list[tuple[float, str]] = field(default_factory=list)
    returncode: int | None = None
    wall_s: float = 0.0
    peak_tree_rss: int | None = None  # the whole process tree (driver, Ray, trial workers), sampled every 2 s
    peak_process_rss: int | None = None  # its largest single process
    hub_files: int | None = None  # files the local hub served during the run
    hub_requests: int | None = None
    load_avg: float | None = None  # the machine's mean 1-minute load average during the run (other jobs included)

    def stage_walls(self) -> dict[str, float]:
        """Seconds per stage, as the driver's `[stage] end in Ns` line gives them."""
        return {m.group(1): float(m.group(2)) for m in (END_LINE.match(line) for _, line in self.lines) if m}

    def slots(self) -> int:
        """Concurrent trials, as the driver's `ray: N concurrent trial(s)` line gives them."""
        found = (re.match(r"^ray: (\d+) concurrent trial", line) for _, line in self.lines)
        return next((int(m.group(1)) for m in found if m), 1)

    def run_dir(self) -> Path:
        """The run directory, as the driver's first line (`search <id>: ..., run dir <path>, mlflow ...`) names it."""
        found = (re.match(r"^search \S+: .*, run dir (.+), mlflow ", line) for _, line in self.lines)
        match = next((m for m in found if m), None)
        if match is None:
            raise SystemExit("error: the search printed no `search <id>: ... run dir` line; see its log")
        return Path(match.group(1))

    def tail(self, n: int = 40) -> str:
        return "\n".join(line for _, line in self.lines[-n:])

    def summary(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("returncode", "wall_s", "peak_tree_rss", "peak_process_rss",
                                             "hub_files", "hub_requests", "load_avg")}


COMMAND_PREFIX = "$ python -m doktra_tune.search "
SUMMARY_PREFIX = "# summary "
LOG_LINE = re.compile(r"^\[\s*([\d.]+)s\] (.*)$")


def read_log(path: Path) -> RunLog:
    """A rehearsal's log as `run_cli` wrote it: the command, the timed lines, the summary line."""
    text = path.read_text().splitlines()
    if not text or not text[0].startswith(COMMAND_PREFIX):
        raise SystemExit(f"error: {path} is not a rehearsal log (no command line first); run the rehearsal again")
    log = RunLog(shlex.split(text[0][len(COMMAND_PREFIX):]))
    for line in text[1:]:
        m = LOG_LINE.match(line)
        if m:
            log.lines.append((float(m.group(1)), m.group(2)))
        elif line.startswith(SUMMARY_PREFIX):
            for key, value in json.loads(line[len(SUMMARY_PREFIX):]).items():
                setattr(log, key, value)
    if log.returncode is None and log.lines:
        log.returncode, log.wall_s = 0, log.lines[-1][0]  # no summary line: the figures it gives are unknown
    return log


def run_cli(overrides: list[str], env: dict[str, str], log_path: Path, task: str, hub: Any) -> RunLog:
    """`python -m doktra_tune.search <overrides>` in `env`; every line to `log_path` (with its time) and
    the measured figures last (`read_log` reads it back), the stage lines to stdout."""
    log = RunLog(overrides, peak_tree_rss=0, peak_process_rss=0)
    files_before, requests_before = len(hub.file_downloads()), len(hub.requests)
    t0 = time.monotonic()
    with open(log_path, "w") as out:
        out.write(COMMAND_PREFIX + shlex.join(overrides) + "\n")
        proc = subprocess.Popen([sys.executable, "-m", "doktra_tune.search", *overrides], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        done = threading.Event()
        loads: list[float] = []

        def sample() -> None:
            while not done.wait(2.0):
                loads.append(os.getloadavg()[0])
                total, largest = tree_rss(proc.pid)
                log.peak_tree_rss = max(log.peak_tree_rss or 0, total)
                log.peak_process_rss = max(log.peak_process_rss or 0, largest)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            t = time.monotonic() - t0
            log.lines.append((t, line))
            out.write(f"[{t:8.1f}s] {line}\n")
            out.flush()
            if STAGE_LINE.match(line) or line.startswith(("search ", "error:")):
                print(f"  {task} {t:7.0f}s  {line[:160]}", flush=True)
        log.returncode = proc.wait()
        done.set()
        sampler.join()
        log.wall_s = time.monotonic() - t0
        log.hub_files = len(hub.file_downloads()) - files_before
        log.hub_requests = len(hub.requests) - requests_before
        log.load_avg = sum(loads) / len(loads) if loads else None
        out.write(SUMMARY_PREFIX + json.dumps(log.summary()) + "\n")
    return log


# --------------------------------------------------------------------------- counting


@dataclass
class TrialCount:
    experiment: str
    trial: str
    params: dict[str, Any]
    status: str  # Tune's last recorded status (TERMINATED, ERROR, ...)
    trained: int  # epochs it trained (reported epochs not taken from a trunk)
    shared: int  # epochs it reported from its ABD trunk
    epochs: list[int]  # the epoch numbers it reported, in order
    train_s: float  # seconds in its training epochs (the stage's epoch_seconds)
    eval_s: float  # seconds in its per-epoch dev evaluations
    trial_s: float  # seconds from the trainable's start to its last report (Tune's time_total_s)


@dataclass
class StageCount:
    stage: str
    trials: list[TrialCount]

    def main_trials(self) -> list[TrialCount]:
        """The stage's own trials (the ABD trunks are not grid points)."""
        return [t for t in self.trials if t.experiment.split("-resume")[0] != "abd_trunk"]

    @property
    def epoch_units(self) -> int:
        return sum(t.trained for t in self.trials)

    def seconds(self, key: str) -> float:
        return sum(getattr(t, key) for t in self.trials)


def experiment_dirs(ray_dir: Path, stage: str) -> list[Path]:
    """The Tune experiments of `stage` under `<run_dir>/ray/` (with their `-resume<k>` successors)."""
    names = EXPERIMENTS[stage]
    pattern = re.compile(rf"^({'|'.join(map(re.escape, names))})(-resume\d+)?$")
    return sorted(p for p in ray_dir.iterdir() if p.is_dir() and pattern.match(p.name)) if ray_dir.is_dir() else []


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def trial_params(trial_dir: Path) -> dict[str, Any]:
    """A trial's params as the search reads them (`run_spec.trial_record`: a grid point, or a run's
    labels and overrides, `stop_after_epoch` and `epochs` included)."""
    path = trial_dir / "params.json"
    return trial_record(json.loads(path.read_text()) if path.is_file() else {})


def count_stage(run_dir: Path, stage: str) -> StageCount:
    """Every trial Tune ran for `stage`, and the epochs each reported and trained."""
    trials: list[TrialCount] = []
    for exp in experiment_dirs(run_dir / "ray", stage):
        states = experiment_trial_states(exp)
        for trial_dir in sorted(p for p in exp.iterdir() if p.is_dir() and (p / "params.json").is_file()):
            rows = read_rows(trial_dir / "result.json")
            trial_id = str(rows[-1].get("trial_id")) if rows else trial_dir.name
            own = [r for r in rows if not r.get(SHARED_METRIC)]  # a branch's trunk epochs replay the trunk's figures
            trials.append(TrialCount(
                experiment=exp.name, trial=trial_id, params=trial_params(trial_dir),
                status=states.get(trial_id, "unknown"), trained=len(own), shared=len(rows) - len(own),
                epochs=[int(r.get("epoch", r.get("training_iteration", 0))) for r in rows],
                train_s=sum(float(r.get("epoch_seconds", 0.0)) for r in own),
                eval_s=sum(float(r.get("eval_seconds", 0.0)) for r in own),
                trial_s=float(rows[-1].get("time_total_s", 0.0)) if rows else 0.0,
            ))
    return StageCount(stage, trials)


def horizon(trial: TrialCount, plan: Plan) -> int:
    """The last epoch `trial` should reach: an ABD trunk's switch, a run's own `epochs` (e1, or a final
    run's teacher/student/DoKTra schedule), else its stage's epochs."""
    p = trial.params
    if p.get("stop_after_epoch"):
        return int(p["stop_after_epoch"])
    if p.get("epochs"):
        return int(p["epochs"])
    stage = p.get("stage") if trial.experiment.startswith("final") else trial.experiment.split("-resume")[0]
    stage = {"ctt_ft": "ctt", "abd_trunk": "abd"}.get(str(stage), str(stage))
    return int(plan.stage_epochs.get(stage, 0))


def incomplete(count: StageCount, plan: Plan) -> list[str]:
    """Trials that did not end TERMINATED having reported every epoch 1..horizon once (an ABD branch's
    trunk epochs included)."""
    bad = []
    for t in count.trials:
        want = list(range(1, horizon(t, plan) + 1))
        if t.status != "TERMINATED" or t.epochs != want:
            bad.append(f"{t.experiment}/{t.trial} {t.status} {describe(t.params)}: epochs {t.epochs}, want {want}")
    return bad


def describe(params: dict[str, Any]) -> str:
    keys = ("variant", "seed", "fold", "lr", "beta", "gamma", "epochs", "stop_after_epoch")
    return "{" + ", ".join(f"{k}={params[k]}" for k in keys if params.get(k) is not None) + "}"


# --------------------------------------------------------------------------- the rehearsal


@dataclass(frozen=True)
class ExactBudget:
    """`plan_budget(plan)` with its final stage planned at the student winner's e1, which is known
    once the student search is over (`upper`: the final stage as planned before, e1 at its largest)."""

    stages: tuple[StageBudget, ...]
    upper: StageBudget
    e1: int

    def stage(self, name: str) -> StageBudget:
        return next(s for s in self.stages if s.stage == name)


def exact_budget(budget: PlanBudget, raw: dict[str, Any], e1: int) -> ExactBudget:
    """The final stage's plan at e1: `plan_budget` of the same config with the student's e1 grid and
    longest run narrowed to it (the final runs' epochs depend on nothing else the search picks)."""
    narrowed = copy.deepcopy(raw)
    narrowed["stages"]["student"].update(epochs=e1, grid={**narrowed["stages"]["student"]["grid"], "epochs": [e1]})
    final = plan_budget(build_plan(narrowed)).stage("final")
    return ExactBudget(tuple(final if s.stage == "final" else s for s in budget.stages), budget.stage("final"), e1)


@dataclass
class Rehearsal:
    task: str
    run_dir: Path
    log: RunLog
    counts: dict[str, StageCount]
    budget: ExactBudget
    mismatches: list[str]
    run_dir_bytes: int
    trial_runs_s: dict[str, float]  # stage -> seconds of its trials' MLflow runs


def overrides_for(task: str, args: argparse.Namespace, data_root: Path, runs_root: Path) -> list[str]:
    """The command line: the task, the data copy and sizes and where things go; nothing of the protocol."""
    train, dev, test = args.limits
    copy = ["task.data_copy=scibert"] if task == "chemprot" else []  # the copy ../shared/data has
    return [f"task={task}", *copy, f"data.train_limit={train}", f"data.dev_limit={dev}", f"data.test_limit={test}",
            f"data_root={data_root}", f"runs_root={runs_root}", *args.override]


def clean_env(home: Path, endpoint: str) -> dict[str, str]:
    """A user's shell: PATH, a fresh HOME and HF_HOME, the hub endpoint; nothing else."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "HF_HOME": str(home / "hf"),
            "HF_ENDPOINT": endpoint}


def rehearse(task: str, args: argparse.Namespace, work: Path, hub: Any) -> Rehearsal:
    """One task's rehearsal: its data, the CLI run (log `<work>/<task>.log`), the counts."""
    if task == "gad":
        data_root = work / "data-gad"
        write_gad_folds(data_root, train_rows=args.gad_train_rows, test_rows=args.gad_test_rows)
    else:
        data_root = args.data_root
    overrides = overrides_for(task, args, data_root, args.runs_root or (work / "runs"))
    plan = build_plan(compose_config(overrides))
    if plan.run_dir.exists():
        raise SystemExit(f"error: {plan.run_dir} exists (an earlier rehearsal); remove it or pick another --runs-root")
    home = work / f"home-{task}"
    home.mkdir(parents=True, exist_ok=True)
    log_path = work / f"{task}.log"
    print(f"== {task}: python -m doktra_tune.search {shlex.join(overrides)}", flush=True)
    print(f"   log {log_path}, run dir {plan.run_dir}", flush=True)
    log = run_cli(overrides, clean_env(home, hub.endpoint), log_path, task, hub)
    if log.returncode != 0:
        print(log.tail(), file=sys.stderr)
        raise SystemExit(f"error: the {task} rehearsal exited {log.returncode}; see {log_path}")
    return count(task, log)


def count(task: str, log: RunLog) -> Rehearsal:
    """What the finished run of `log` trained, against the plan of the config it ran with (its
    `config.yaml`: the code's defaults may have changed since)."""
    run_dir = log.run_dir()
    raw = yaml.safe_load((run_dir / "config.yaml").read_text())
    plan = build_plan(raw)
    if plan.run_dir != run_dir:
        raise SystemExit(f"error: {run_dir}/config.yaml plans the run directory {plan.run_dir}; count it by hand")
    counts = {stage: count_stage(run_dir, stage) for stage in STAGES}
    e1 = int(json.loads((run_dir / "stages" / "student" / "winner.json").read_text())["e1"])
    budget = exact_budget(plan_budget(plan), raw, e1)
    return Rehearsal(task=task, run_dir=run_dir, log=log, counts=counts, budget=budget,
                     mismatches=compare(counts, budget, plan), run_dir_bytes=dir_bytes(run_dir),
                     trial_runs_s=trial_run_seconds(raw, run_dir, task, plan.search_id))


def compare(counts: dict[str, StageCount], budget: ExactBudget, plan: Plan) -> list[str]:
    """Each stage's counted trials and epoch-units against the plan's, and every trial run to its end."""
    out = []
    for stage in STAGES:
        planned, counted = budget.stage(stage), counts[stage]
        if len(counted.main_trials()) != planned.trials:
            out.append(f"{stage}: {len(counted.main_trials())} trials counted, {planned.trials} planned")
        if counted.epoch_units != planned.epoch_units:
            out.append(f"{stage}: {counted.epoch_units} epoch-units counted, {planned.epoch_units} planned")
        out += [f"{stage}: {line}" for line in incomplete(counted, plan)]
    return out


def table(r: Rehearsal) -> Iterator[str]:
    walls = r.log.stage_walls()
    yield f"| {r.task} stage | planned trials | counted trials | planned epoch-units | counted | grid epoch-units | wall |"
    yield "|---|---|---|---|---|---|---|"
    for stage in STAGES:
        p, c = r.budget.stage(stage), r.counts[stage]
        trunks = len(c.trials) - len(c.main_trials())
        counted_trials = f"{len(c.main_trials())}" + (f" (+{trunks} trunks)" if trunks else "")
        wall = f"{walls[stage]:.0f} s" if stage in walls else "-"
        yield (f"| {stage} | {p.trials} | {counted_trials} | {p.epoch_units} | {c.epoch_units} | "
               f"{p.grid_epoch_units} | {wall} |")
    total_p = sum(r.budget.stage(s).epoch_units for s in STAGES)
    total_c = sum(r.counts[s].epoch_units for s in STAGES)
    total_g = sum(r.budget.stage(s).grid_epoch_units for s in STAGES)
    trials_p = sum(r.budget.stage(s).trials for s in STAGES)
    trials_c = sum(len(r.counts[s].main_trials()) for s in STAGES)
    yield f"| total | {trials_p} | {trials_c} | {total_p} | {total_c} | {total_g} | {r.log.wall_s:.0f} s |"


def trial_run_seconds(raw: dict[str, Any], run_dir: Path, task: str, search_id: str) -> dict[str, float]:
    """Per stage, the seconds from start to end of its trials' MLflow runs (the trunks' with ABD's):
    the trainables' whole work, the evaluation logging after their last report included."""
    from mlflow.tracking import MlflowClient

    from doktra_tune.tracking import default_tracking_uri
    from doktra_tune.tracking.runs import LEVEL, SEARCH_ID, STAGE

    client = MlflowClient((raw.get("mlflow") or {}).get("tracking_uri") or default_tracking_uri(run_dir))
    experiment = client.get_experiment_by_name(f"doktra-{task}")
    if experiment is None:
        return {}
    seconds: dict[str, float] = {}
    for run in client.search_runs([experiment.experiment_id], max_results=50000,
                                  filter_string=f"tags.`{LEVEL}` = 'trial' and tags.`{SEARCH_ID}` = '{search_id}'"):
        stage = {"ctt_ft": "ctt", "abd_trunk": "abd"}.get(run.data.tags.get(STAGE, ""), run.data.tags.get(STAGE, ""))
        if run.info.end_time and run.info.start_time:
            seconds[stage] = seconds.get(stage, 0.0) + (run.info.end_time - run.info.start_time) / 1000
    return seconds


def time_table(r: Rehearsal) -> Iterator[str]:
    """Per stage: its wall time, its trials' MLflow runs and Tune's timer summed, training and dev
    evaluation within them, and how many trials ran at once on average (trial runs / wall)."""
    walls = r.log.stage_walls()
    yield "| stage | wall | trial runs | in Tune's timer | training epochs | dev evaluation | trials running, mean |"
    yield "|---|---|---|---|---|---|---|"
    for stage in STAGES:
        c = r.counts[stage]
        wall, runs_s = walls.get(stage, 0.0), r.trial_runs_s.get(stage, 0.0)
        yield (f"| {stage} | {wall:.0f} | {runs_s:.0f} | {c.seconds('trial_s'):.0f} | {c.seconds('train_s'):.0f} | "
               f"{c.seconds('eval_s'):.0f} | {runs_s / wall if wall else 0.0:.2f} of {r.log.slots()} |")


def report(r: Rehearsal) -> None:
    load = f", load average {r.log.load_avg:.1f} on {os.cpu_count()} CPUs" if r.log.load_avg is not None else ""
    print(f"\n== {r.task}: rehearsal of the paper preset, {r.log.wall_s:.0f} s wall ({r.log.wall_s / 60:.1f} min{load})")
    print(f"   command: python -m doktra_tune.search {shlex.join(r.log.overrides)}")
    for line in table(r):
        print(line)
    for stage in STAGES:
        print(f"   {stage}: {r.budget.stage(stage).note}")
    upper = r.budget.upper
    print(f"   final: planned at the student winner's e1 = {r.budget.e1}; before the search, with e1 at its largest, "
          f"the plan said {upper.epoch_units} epoch-units (an upper bound)")
    print("\n   where the time goes (seconds, summed over the stage's trials; trial runs: their MLflow runs, start to "
          "end; Tune's timer: the trainable's start to its last report):\n")
    for line in time_table(r):
        print(f"   {line}")
    if r.log.peak_tree_rss is not None:
        print(f"\n   peak RSS: {fmt_bytes(r.log.peak_tree_rss)} for the whole process tree (driver, Ray, trial "
              f"workers; sampled every 2 s), {fmt_bytes(r.log.peak_process_rss or 0)} for its largest process")
    print(f"   run directory {r.run_dir}: {fmt_bytes(r.run_dir_bytes)} at the end")
    if r.log.hub_files is not None:
        print(f"   local hub: {r.log.hub_files} file download(s) in {r.log.hub_requests} request(s)")
    if r.mismatches:
        print(f"   MISMATCH ({len(r.mismatches)}):")
        for line in r.mismatches:
            print(f"     {line}")
    else:
        print("   every stage trained exactly the trials and epoch-units the plan says")


def reported(results: list[Rehearsal]) -> bool:
    """Print each rehearsal's figures; whether every count matched its plan."""
    for r in results:
        report(r)
    return not any(r.mismatches for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", action="append", choices=["chemprot", "gad"], help="repeatable (default chemprot)")
    parser.add_argument("--limits", type=int, nargs=3, default=list(DEFAULT_LIMITS), metavar=("TRAIN", "DEV", "TEST"),
                        help="data.train_limit / dev_limit / test_limit (default %(default)s)")
    parser.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data",
                        help="holds chemprot_scibert/ (default %(default)s)")
    parser.add_argument("--gad-train-rows", type=int, default=300, help="rows of each synthetic GAD fold's train.tsv")
    parser.add_argument("--gad-test-rows", type=int, default=60, help="rows of each synthetic GAD fold's test.tsv")
    parser.add_argument("--layers", type=int, default=1, help="layers of the tiny hub models")
    parser.add_argument("--hidden", type=int, default=32, help="width of the tiny teacher")
    parser.add_argument("--student-hidden", type=int, default=64,
                        help="width of the tiny student (wider than the teacher, as ALBERT-xlarge is than BioBERT-base: "
                             "ABD maps the teacher's [CLS] through the fixed random projection)")
    parser.add_argument("--runs-root", type=Path, default=None, help="default: <workdir>/runs")
    parser.add_argument("--workdir", type=Path, default=None, help="hub repos, homes, logs (default: a fresh temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (always kept on a failure)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra CLI override (printed with the figures; the rehearsal is of the preset as it is)")
    parser.add_argument("--recount", action="store_true",
                        help="run nothing: count the finished rehearsals of --workdir again from their logs")
    args = parser.parse_args()
    tasks = list(dict.fromkeys(args.task or ["chemprot"]))
    if args.recount:
        if args.workdir is None:
            raise SystemExit("error: --recount needs --workdir <the work directory of the rehearsal>")
        sys.exit(0 if reported([count(task, read_log(args.workdir / f"{task}.log")) for task in tasks]) else 1)
    if "chemprot" in tasks and not (args.data_root / "chemprot_scibert" / "train.jsonl").is_file():
        raise SystemExit(f"error: no chemprot_scibert/train.jsonl under {args.data_root}; pass --data-root")

    from tests.helpers.hub_server import PAPER_MODEL_IDS, LocalHub, build_repos

    work = args.workdir or Path(tempfile.mkdtemp(prefix="doktra-rehearsal-"))
    work.mkdir(parents=True, exist_ok=True)
    ok = False
    try:
        preset = compose_config([])  # the paper preset's models, served small at their own ids
        widths = {str(preset.teacher_model): args.hidden, str(preset.student_model): args.student_hidden}
        repos = {}
        for repo_id, hidden in widths.items():
            repos.update(build_repos(work / "hub", [repo_id], layers=args.layers, hidden=hidden))
        print("hub: " + ", ".join(f"{repo_id} ({PAPER_MODEL_IDS[repo_id]}, {args.layers} layer(s), H={hidden})"
                                  for repo_id, hidden in widths.items()), flush=True)
        results = []
        with LocalHub(repos) as hub:
            for task in tasks:
                results.append(rehearse(task, args, work, hub))
        ok = reported(results)
    finally:
        if ok and not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work directory kept: {work}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
