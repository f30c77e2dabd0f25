"""(c) ABD epoch time with the cached teacher [CLS] vs running the teacher forward every step.

The teacher/student pair is the project's CPU preset (conf/preset/cpu.yaml): teacher
all-MiniLM-L6-v2 (H=384, L=6), student random:bert:L4-H256 (`--student minilm` gives a
same-size pair), both saved as doktra checkpoints (ABD's speed does not depend on how well they
were trained). Both variants run the stage's training step
(`train_epoch` + `abd_step_loss`: Eq. 5 against the fixed random projection of the teacher [CLS])
on the same ChemProt batches:

  cached : the teacher [CLS] of every training example comes from `teacher_cache` (computed once,
           reused by every trial and epoch), looked up by `Batch.indices` -- what `distill` does
  online : every step collates the batch in the teacher's tokenization and runs the frozen teacher
           (eval, no_grad) -- the authors' loop

Also reported: `distill`'s own epoch_seconds (cached) and the one-off cost of filling the cache.
Goal: cached / online epoch time <= 0.8.

    python benchmarks/bench_teacher_cache.py [--train-limit 480 --repeats 2 --threads 1]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from _common import Timings, header, median, parser, setup, verdict

from doktra_tune.config import DistillConfig, StageConfig
from doktra_tune.encoding import collate, make_batches
from doktra_tune.losses import TeacherProjection
from doktra_tune.models import forward_cls_logits, load_checkpoint, load_classifier, save_checkpoint
from doktra_tune.device import Runtime
from doktra_tune.stages import distill
from doktra_tune.stages.epoch import build_optimizer, epoch_batch_seed, train_epoch
from doktra_tune.stages.splits import load_encoded
from doktra_tune.stages.step_losses import abd_step_loss
from doktra_tune.teacher_cache import teacher_outputs
from doktra_tune.tasks import get_task

SEED = 21


def make_checkpoint(path: Path, spec: str, seed: int, task) -> Path:
    model, tokenizer = load_classifier(spec, task, seed=seed)
    meta = {"task": task.name, "labels": list(task.labels), "multi_label": task.multi_label, "model_spec": spec,
            "hidden_size": int(model.config.hidden_size), "epoch": 0, "metrics": {}, "stage": "bench"}
    return save_checkpoint(model, tokenizer, path, meta)


def main() -> None:
    p = parser(__doc__.splitlines()[0], train_limit=480)
    p.add_argument("--teacher", default="minilm")
    p.add_argument("--student", default="random:bert:L4-H256")
    args = p.parse_args()
    data = setup(args)
    header("bench_teacher_cache: ABD epoch with cached teacher [CLS] vs teacher forward per step", args)
    print(f"   teacher={args.teacher} student={args.student} (header's model line is the teacher)")
    task = get_task(data.task)
    rt = Runtime(device=torch.device("cpu"), amp_dtype=None)
    work = Path(tempfile.mkdtemp(prefix="doktra-bench-abd-"))
    teacher_dir = make_checkpoint(work / "teacher", args.teacher, 1, task)
    student_dir = make_checkpoint(work / "student", args.student, 2, task)

    teacher, teacher_tok, _ = load_checkpoint(teacher_dir)
    teacher.eval()
    student_tok = load_checkpoint(student_dir)[1]
    train_split = load_encoded(data, "train", student_tok)
    teacher_enc = load_encoded(data, "train", teacher_tok).encoded
    start = time.perf_counter()
    outs = teacher_outputs(teacher_dir, task, "train", train_split.examples, max_len=data.max_len,
                           cache_dir=data.cache_dir, device=rt.device, amp_dtype=None, batch_size=128)
    fill = time.perf_counter() - start
    print(f"   filling the cache once: {fill:.2f}s for {len(train_split.encoded)} examples (computed={outs.computed})")
    student_dim = int(load_checkpoint(student_dir)[0].config.hidden_size)
    projection = TeacherProjection(outs.cls.shape[1], student_dim, mode="fixed_random", seed=0)
    cached_cls = projection(torch.from_numpy(outs.cls))

    def cached(batch):
        return cached_cls[batch.indices]

    @torch.no_grad()
    def online(batch):
        tb = collate(teacher_enc, batch.indices.tolist(), teacher_tok.pad_token_id)
        cls, _ = forward_cls_logits(teacher, tb)
        return projection(cls)

    cfg = StageConfig(data=data, model="minilm", output_dir="unused", lr=1e-5, batch_size=args.batch_size)
    timings = Timings(("cached", "online", "distill"))
    for rep in range(args.repeats):
        order = ("cached", "online", "distill") if rep % 2 == 0 else ("online", "distill", "cached")
        for variant in order:
            if variant == "distill":
                with tempfile.TemporaryDirectory() as out:
                    dcfg = DistillConfig(
                        data=data, model=str(student_dir), teacher_checkpoint=str(teacher_dir), output_dir=out,
                        lr=1e-5, epochs=1, gamma=1.0, batch_size=args.batch_size, seed=SEED,
                        keep_checkpoints="none", torch_threads=torch.get_num_threads(),
                    )
                    m = distill(dcfg).history[0]
                w, c = m["epoch_seconds"], m["epoch_cpu_seconds"]
            else:
                student = load_checkpoint(student_dir)[0]
                params = list(student.parameters())
                batches = make_batches(train_split.encoded, args.batch_size, shuffle=True,
                                       seed=epoch_batch_seed(SEED, 0), batching="bucketed")
                optimizer, scheduler = build_optimizer(params, cfg, len(batches))
                torch.manual_seed(SEED)
                stats = train_epoch(
                    student, train_split.encoded, batches, student_tok.pad_token_id,
                    abd_step_loss(cached if variant == "cached" else online, 1.0),
                    optimizer, scheduler, params, max_grad_norm=1.0, rt=rt,
                )
                w, c = stats.seconds, stats.cpu_seconds
            timings.add(rep, variant, w, c)
    for variant in ("cached", "distill", "online"):
        print(f"   {variant:7s} {median(timings.wall[variant]):7.2f}s wall {median(timings.cpu[variant]):7.2f}s cpu")
    ratio, cpu_ratio = timings.ratios("cached", "online")
    dratio = timings.ratios("distill", "online")[0]
    print(
        f"RESULT cached/online ABD epoch time = {ratio:.3f} wall, {cpu_ratio:.3f} cpu; distill/online = {dratio:.3f} wall "
        f"(goal <= 0.8): {verdict(max(ratio, dratio) <= 0.8)}"
    )


if __name__ == "__main__":
    main()
