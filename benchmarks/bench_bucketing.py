"""(a) Length-bucketed dynamic padding vs padding every batch to max_len: training-epoch time.

Same model (all-MiniLM-L6-v2), same ChemProt examples, same number of optimizer steps and the same
training step as the stages (`doktra_tune.stages.epoch.train_epoch`, CE loss); only the batching differs:

  bucketed : make_batches(batching="bucketed") + pad to the longest in the batch (train.batching=bucketed: the CPU presets')
  dynamic  : random batches + pad to the longest in the batch (train.batching=random: the paper preset's)
  pad_max  : random batches + every batch padded to max_len (the authors' pad_sequences recipe)

Goal: pad_max / bucketed epoch time >= 2.

    python benchmarks/bench_bucketing.py [--train-limit 640 --repeats 2 --threads 2]
"""

from __future__ import annotations

import math

import torch
from _common import header, median, parser, setup

from doktra_tune.config import StageConfig
from doktra_tune.encoding import make_batches, padding_tokens
from doktra_tune.models import load_classifier
from doktra_tune.device import Runtime
from doktra_tune.stages.epoch import build_optimizer, train_epoch
from doktra_tune.stages.splits import load_encoded
from doktra_tune.stages.step_losses import cpl_step_loss

VARIANTS = ("bucketed", "dynamic", "pad_max")


def main() -> None:
    args = parser(__doc__.splitlines()[0], train_limit=640).parse_args()
    data = setup(args)
    header("bench_bucketing: bucketed dynamic padding vs pad-to-max_len", args)
    model, tokenizer = load_classifier("minilm", data.task, seed=0)
    train = load_encoded(data, "train", tokenizer).encoded
    rt = Runtime(device=torch.device("cpu"), amp_dtype=None)
    cfg = StageConfig(data=data, model="minilm", output_dir="unused", batch_size=args.batch_size)
    steps = math.ceil(len(train) / args.batch_size)
    step_loss = cpl_step_loss(0.0, multi_label=False)
    params = list(model.parameters())
    lengths = train.lengths
    print(f"   {len(train)} examples, token lengths mean {lengths.mean():.1f}, median {int(median(lengths.tolist()))}, max {lengths.max()}")

    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
    tokens: dict[str, int] = {}
    for rep in range(args.repeats):
        for variant in VARIANTS:
            batches = make_batches(train, args.batch_size, shuffle=True, seed=rep, batching="bucketed" if variant == "bucketed" else "random")
            pad_to = args.max_len if variant == "pad_max" else None
            width = [args.max_len if pad_to else int(lengths[b].max()) for b in batches]
            tokens[variant] = sum(len(b) * w for b, w in zip(batches, width))
            optimizer, scheduler = build_optimizer(params, cfg, steps)
            stats = train_epoch(
                model, train, batches, tokenizer.pad_token_id, step_loss, optimizer, scheduler, params,
                max_grad_norm=1.0, rt=rt, pad_to=pad_to,
            )
            times[variant].append(stats.seconds)
            cpu[variant].append(stats.cpu_seconds)
            print(f"   rep {rep} {variant:9s} {stats.seconds:7.2f}s wall {stats.cpu_seconds:7.2f}s cpu ({steps} steps)", flush=True)

    print(f"   {'variant':9s} {'wall s':>8s} {'cpu s':>8s} {'tokens/epoch':>13s} {'pad share':>9s} {'wall speed-up':>14s} {'cpu speed-up':>13s}")
    real = int(lengths.sum())
    base, base_cpu = median(times["pad_max"]), median(cpu["pad_max"])
    for variant in VARIANTS:
        t, c = median(times[variant]), median(cpu[variant])
        print(
            f"   {variant:9s} {t:8.2f} {c:8.2f} {tokens[variant]:13d} {1 - real / tokens[variant]:9.1%} "
            f"{base / t:13.2f}x {base_cpu / c:12.2f}x"
        )
    ratio = base / median(times["bucketed"])
    cpu_ratio = base_cpu / median(cpu["bucketed"])
    unbucketed_pad = padding_tokens(train, make_batches(train, args.batch_size, shuffle=True, seed=0, batching="random"))
    bucketed_pad = padding_tokens(train, make_batches(train, args.batch_size, shuffle=True, seed=0, batching="bucketed"))
    print(f"   dynamic-padding pad tokens: bucketed {bucketed_pad}, unbucketed {unbucketed_pad}")
    print(
        f"RESULT pad_max/bucketed epoch-time ratio = {ratio:.2f}x wall, {cpu_ratio:.2f}x cpu "
        f"(goal >= 2x): {'PASS' if min(ratio, cpu_ratio) >= 2 else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
