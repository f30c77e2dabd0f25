"""FLOP/s one torch thread sustains on this CPU, training and evaluating the cpu preset's models on its
batches: the measured rate `doktra_tune/plan/estimate.py: CPU_REFERENCE` turns the FLOP model into
a predicted time per stage (the dry run's CPU column), which the README sets beside measured stage times.

Each of `--processes` worker processes (one torch thread each, fp32, ATen/oneDNN pinned to AVX2 as
`train.cpu_kernels=avx2`) trains a model on the cpu preset's data and batches (ChemProt, SciBERT's copy,
1,000 training sentences, max_len 96, length-bucketed batches of 16) for `--steps` AdamW steps after
`--warmup`, then runs one forward pass over 200 dev sentences in batches of 128, each padded to its longest.
FLOPs per batch are the estimator's own (`Architecture.train_flops` / `forward_flops` of each batch's
width), so FLOP/s = those FLOPs / wall seconds. With 2 processes, both run at once: the rate a trial gets
when the local Ray runs two on this 2-core box, as the cpu preset does.

    python benchmarks/bench_cpu_throughput.py [--processes 1 2] [--models minilm random:bert:L4-H192]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def _worker(spec: str, steps: int, warmup: int, data_root: str, start: "mp.synchronize.Barrier",
            out: "mp.Queue") -> None:
    import tempfile

    import torch
    import torch.nn.functional as F

    from doktra_tune.config import DataConfig
    from doktra_tune.encoding import collate, make_batches
    from doktra_tune.models import load_classifier
    from doktra_tune.plan.estimate import architecture
    from doktra_tune.stages.splits import load_encoded

    torch.set_num_threads(1)
    arch = architecture(spec)
    assert arch is not None, spec
    data = DataConfig(task="chemprot", data_dir=str(Path(data_root) / "chemprot_scibert"), max_len=96,
                      train_limit=1000, dev_limit=200, test_limit=300, cache_dir=tempfile.mkdtemp(prefix="bench-cpu-"))
    model, tokenizer = load_classifier(spec, "chemprot", seed=13)
    train = load_encoded(data, "train", tokenizer).encoded
    dev = load_encoded(data, "dev", tokenizer).encoded
    batches = make_batches(train, 16, shuffle=True, seed=13, batching="bucketed")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=1e-8)
    model.train()

    def step(indices: list[int]) -> float:
        batch = collate(train, indices, tokenizer.pad_token_id)
        loss = F.cross_entropy(model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits, batch.labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return len(indices) * arch.train_flops(int(batch.input_ids.shape[1]))

    for indices in batches[:warmup]:
        step(indices)
    start.wait()
    t0 = time.perf_counter()
    train_flops = sum(step(indices) for indices in batches[warmup:warmup + steps])
    train_s = time.perf_counter() - t0
    model.eval()
    eval_flops = 0.0
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(dev), 128):
            batch = collate(dev, list(range(i, min(i + 128, len(dev)))), tokenizer.pad_token_id)
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
            eval_flops += batch.input_ids.shape[0] * arch.forward_flops(int(batch.input_ids.shape[1]))
    eval_s = time.perf_counter() - t0
    out.put({"model": spec, "train_flops_per_s": train_flops / train_s, "eval_flops_per_s": eval_flops / eval_s,
             "train_s": train_s, "eval_s": eval_s, "steps": steps})


def measure(spec: str, processes: int, steps: int, warmup: int, data_root: str) -> list[dict]:
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(processes), ctx.Queue()
    workers = [ctx.Process(target=_worker, args=(spec, steps, warmup, data_root, barrier, queue))
               for _ in range(processes)]
    for w in workers:
        w.start()
    rows = [queue.get() for _ in workers]
    for w in workers:
        w.join()
    return rows


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="worker processes at once (each 1 thread)")
    p.add_argument("--models", nargs="+", default=["minilm", "random:bert:L4-H192"])
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--json-out", default=None)
    args = p.parse_args()
    os.environ.update(AVX2)  # read by each spawned worker's torch at its first kernel
    data_root = os.environ.get("DOKTRA_DATA_ROOT", str(REPO_ROOT.parent / "shared" / "data"))
    result = {"cpu": cpu_name(), "cores": os.cpu_count(), "date": datetime.now(timezone.utc).date().isoformat(),
              "kernels": "avx2", "threads_per_process": 1, "rows": []}
    print(f"== bench_cpu_throughput: {result['cpu']} ({result['cores']} cores), fp32, AVX2 kernels, 1 thread per "
          f"process, cpu-preset batches (16 x <=96 tokens, bucketed), {args.steps} steps after {args.warmup}")
    print(f"{'model':22s} {'procs':>5s} {'train GFLOP/s':>14s} {'eval GFLOP/s':>13s} {'train s':>8s}")
    for spec in args.models:
        for n in args.processes:
            rows = measure(spec, n, args.steps, args.warmup, data_root)
            train = statistics.fmean(r["train_flops_per_s"] for r in rows)
            evaluate = statistics.fmean(r["eval_flops_per_s"] for r in rows)
            result["rows"].append({"model": spec, "processes": n, "train_flops_per_s": train,
                                   "eval_flops_per_s": evaluate, "per_process": rows})
            print(f"{spec:22s} {n:5d} {train / 1e9:14.2f} {evaluate / 1e9:13.2f} "
                  f"{statistics.fmean(r['train_s'] for r in rows):8.1f}")
    print("RESULT " + json.dumps(result))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
