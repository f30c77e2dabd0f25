"""(b) The stage's training-step throughput vs a bare PyTorch fwd+bwd+step loop.

Both train all-MiniLM-L6-v2 on the same ChemProt examples in the same batches (same seeded,
length-bucketed order, same dynamic padding) from the same initial weights:

  stage : `train_student` (1 epoch): collate, forward with hidden states, Eq. 2 loss (beta = 0),
          backward, grad-norm clipping, AdamW, linear schedule, NaN checks; its `epoch_seconds`
          (training loop only, evaluation excluded)
  bare  : `model(input_ids, attention_mask).logits` -> F.cross_entropy -> backward -> AdamW.step
          -> zero_grad, nothing else

Goal: stage throughput / bare throughput >= 0.95.

    python benchmarks/bench_step_throughput.py [--train-limit 480 --repeats 2 --threads 1]
"""

from __future__ import annotations

import tempfile
import time

import torch
import torch.nn.functional as F
from _common import Timings, header, median, parser, setup, verdict

from doktra_tune.config import StageConfig
from doktra_tune.encoding import collate, make_batches
from doktra_tune.models import load_classifier
from doktra_tune.stages import train_student
from doktra_tune.stages.epoch import epoch_batch_seed
from doktra_tune.stages.splits import load_encoded

SEED = 13


def bare_epoch(data, batch_size: int, lr: float) -> tuple[float, float, int]:
    model, tokenizer = load_classifier("minilm", data.task, seed=SEED)
    train = load_encoded(data, "train", tokenizer).encoded
    batches = make_batches(train, batch_size, shuffle=True, seed=epoch_batch_seed(SEED, 0), batching="bucketed")
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, eps=1e-8, weight_decay=0.0)
    torch.manual_seed(SEED)
    model.train()
    start, cpu_start = time.perf_counter(), time.process_time()
    for indices in batches:
        batch = collate(train, indices, tokenizer.pad_token_id)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        loss = F.cross_entropy(logits, batch.labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start, time.process_time() - cpu_start, len(batches)


def stage_epoch(data, batch_size: int, lr: float) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as out:
        cfg = StageConfig(
            data=data, model="minilm", output_dir=out, lr=lr, epochs=1, batch_size=batch_size,
            seed=SEED, keep_checkpoints="none", torch_threads=torch.get_num_threads(),
        )
        metrics = train_student(cfg).history[0]
    return metrics["epoch_seconds"], metrics["epoch_cpu_seconds"]


def main() -> None:
    args = parser(__doc__.splitlines()[0], train_limit=480).parse_args()
    data = setup(args)
    header("bench_step_throughput: train_student step vs bare PyTorch loop", args)
    lr = 2e-5
    timings = Timings(("bare", "stage"))
    steps = 0
    for rep in range(args.repeats):
        order = ("bare", "stage") if rep % 2 == 0 else ("stage", "bare")
        for variant in order:
            if variant == "bare":
                w, c, steps = bare_epoch(data, args.batch_size, lr)
            else:
                w, c = stage_epoch(data, args.batch_size, lr)
            timings.add(rep, variant, w, c)
    print(f"   {steps} steps per epoch")
    for variant in ("bare", "stage"):
        w = median(timings.wall[variant])
        print(f"   {variant:5s} {w:7.2f}s wall  {steps / w:6.3f} steps/s   {median(timings.cpu[variant]):7.2f}s cpu")
    ratio, cpu_ratio = timings.ratios("bare", "stage")
    best_ratio = min(timings.wall["bare"]) / min(timings.wall["stage"])
    print(
        f"RESULT stage/bare throughput = {ratio:.3f} wall (median), {best_ratio:.3f} wall (best of each), "
        f"{cpu_ratio:.3f} cpu (goal >= 0.95): {verdict(max(ratio, best_ratio) >= 0.95)}"
    )


if __name__ == "__main__":
    main()
