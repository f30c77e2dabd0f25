"""Training and evaluation throughput, and MFU, of the paper's four architectures on one GPU.

Random-weight sequence classifiers (6 labels, `output_hidden_states=False`) built in code from each model's
published shape (no download, no network): BioBERT-base (`dmis-lab/biobert-base-cased-v1.1`), ALBERT-xlarge-v2
(E 128, H 2048, 24 uses of one shared layer), RoBERTa-large and RoBERTa-base. Each trains on random token ids
(full attention mask, random labels) in batches of `--batch-size` x `--seq-len` tokens (the authors'
--batch_size=50, --max_seq_len=128), in three precisions:

  fp32 : fp32 weights and matmuls (torch.backends.cuda.matmul.allow_tf32 = cudnn.allow_tf32 = False)
  tf32 : fp32 weights, matmuls on tensor cores in TF32 (both flags True); on a CPU it is fp32, and the row says so
  bf16 : bf16 autocast around fp32 weights (TF32 flags False), as the project trains on CUDA (`precision=auto`)

A training step is forward, cross-entropy, backward, AdamW step, zero_grad(set_to_none=True); an evaluation
step one forward pass under torch.no_grad(). After `--warmup` steps of each, `--train-steps` and `--eval-steps`
are timed (time.perf_counter, the device synchronised before and after). Each (model, precision) row gets a
fresh model and optimizer and prints train steps/s and sequences/s, eval sequences/s, MFU (achieved FLOP/s /
the card's dense peak in that precision; FLOPs per sequence are `doktra_tune.plan.estimate`'s own,
`architecture(spec).train_flops` / `.forward_flops`) and the peak of torch.cuda.max_memory_allocated. A row
that runs out of memory prints OOM and the run goes on. The last line is `RESULT {json}` (card, torch, date,
settings, every row); `--json-out PATH` writes the same JSON to a file.

These figures feed `doktra_tune/plan/estimate.py`'s measured table (`UTILISATION`: the share of the peak a
fine-tuning step reaches, each entry with its card and date) in place of its assumed shares.

    python benchmarks/bench_gpu_throughput.py --json-out gpu_throughput.json     # one GPU, < 5 min on an H100
    python benchmarks/bench_gpu_throughput.py --models albert-xlarge --precisions bf16 --train-steps 20
    python benchmarks/bench_gpu_throughput.py --params-only                      # parameter counts, no timing
    python benchmarks/bench_gpu_throughput.py --device cpu --models roberta-base --precisions fp32 \\
        --batch-size 2 --seq-len 16 --train-steps 1 --eval-steps 1 --warmup 1          # smoke test

Peak FLOP/s come from `PEAK_TFLOPS` (datasheet dense figures, matched on torch.cuda.get_device_name());
an unknown card, a MIG slice or a CPU prints MFU n/a unless `--peak-tflops fp32=..,tf32=..,bf16=..` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from doktra_tune.plan.estimate import architecture

NUM_LABELS = 6
PRECISIONS = ("fp32", "tf32", "bf16")


@dataclass(frozen=True)
class Model:
    label: str
    spec: str  # the estimator's model spec (`architecture(spec)`)
    build: Callable[[], torch.nn.Module]


def _bert() -> torch.nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    return BertForSequenceClassification(BertConfig(
        vocab_size=28996, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        max_position_embeddings=512, type_vocab_size=2, num_labels=NUM_LABELS, output_hidden_states=False))


def _albert() -> torch.nn.Module:
    from transformers import AlbertConfig, AlbertForSequenceClassification

    # albert-xlarge-v2's config.json: v2 trains without dropout (hidden/attention dropout 0), classifier 0.1
    return AlbertForSequenceClassification(AlbertConfig(
        vocab_size=30000, embedding_size=128, hidden_size=2048, num_hidden_layers=24, num_hidden_groups=1,
        inner_group_num=1, num_attention_heads=16, intermediate_size=8192, hidden_act="gelu_new",
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout_prob=0.1,
        max_position_embeddings=512, type_vocab_size=2, num_labels=NUM_LABELS, output_hidden_states=False))


def _roberta(layers: int, hidden: int, heads: int) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        from transformers import RobertaConfig, RobertaForSequenceClassification

        return RobertaForSequenceClassification(RobertaConfig(
            vocab_size=50265, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
            intermediate_size=4 * hidden, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
            bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5, num_labels=NUM_LABELS,
            output_hidden_states=False))

    return build


MODELS: dict[str, Model] = {
    "biobert-base": Model("BioBERT-base", "dmis-lab/biobert-base-cased-v1.1", _bert),
    "albert-xlarge": Model("ALBERT-xlarge-v2", "albert-xlarge-v2", _albert),
    "roberta-large": Model("RoBERTa-large", "roberta-large", _roberta(24, 1024, 16)),
    "roberta-base": Model("RoBERTa-base", "roberta-base", _roberta(12, 768, 12)),
}

# Dense (no sparsity) datasheet peaks in TFLOP/s: fp32 on CUDA cores, TF32 and bf16 on tensor cores. Matched in
# order on torch.cuda.get_device_name(); None: a card (or MIG slice) whose peak is not in the table (MFU n/a).
PEAK_TFLOPS: tuple[tuple[str, dict[str, float] | None], ...] = (
    ("MIG", None),  # a slice of a card: a share of its peak this table does not know
    ("H100 NVL", None),
    ("H200 NVL", None),
    ("H100 PCIe", {"fp32": 51.0, "tf32": 378.0, "bf16": 756.0}),
    ("H100", {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4}),  # SXM5 ("NVIDIA H100 80GB HBM3")
    ("H200", {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4}),  # SXM, as H100 SXM
    ("A100", {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0}),
)


def card_peak(name: str) -> tuple[dict[str, float] | None, str]:
    """(peak FLOP/s per precision, the table key that matched) of a device name; (None, why) when unknown."""
    for key, tflops in PEAK_TFLOPS:
        if key.lower() in name.lower():
            if tflops is None:
                return None, f"{key!r}: not in the table"
            return {p: t * 1e12 for p, t in tflops.items()}, f"datasheet dense peak, table key {key!r}"
    return None, "card not in the table"


def parse_peaks(text: str) -> dict[str, float]:
    """`fp32=67,tf32=494.7,bf16=989.4` (TFLOP/s) -> FLOP/s per precision (any subset of the three)."""
    peaks: dict[str, float] = {}
    for part in filter(None, (s.strip() for s in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in PRECISIONS:
            raise SystemExit(f"--peak-tflops: expected fp32=..,tf32=..,bf16=.. (TFLOP/s), got {part!r}")
        peaks[key.strip()] = float(value) * 1e12
    return peaks


@contextlib.contextmanager
def precision_mode(precision: str, device: torch.device) -> Iterator[None]:
    """TF32 flags (True for tf32 only) for the block, restored after; bf16: autocast around it."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        if precision == "bf16":
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                yield
        else:
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def computes_in(precision: str, device: torch.device) -> str:
    if device.type == "cuda":
        return {"fp32": "fp32", "tf32": "tf32 matmuls, fp32 weights",
                "bf16": "bf16 autocast, fp32 weights"}[precision]
    return {"fp32": "fp32", "tf32": "fp32 (no TF32 on a CPU)", "bf16": "bf16 CPU autocast, fp32 weights"}[precision]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_params(model: torch.nn.Module) -> int:
    """Stored parameters (ALBERT's shared layer once: `parameters()` yields each tensor once)."""
    return sum(p.numel() for p in model.parameters())


def head_params(spec: str) -> int:
    """The classifier's parameters the estimator leaves out (its `params` has BERT's and ALBERT's pooler):
    the output layer H x 6 + 6; RoBERTa's head also has a dense H x H + H, and RoBERTa has no pooler, which
    the estimator counts: the two cancel."""
    arch = architecture(spec)
    assert arch is not None, spec
    return arch.hidden * NUM_LABELS + NUM_LABELS


def params_row(key: str, model: torch.nn.Module) -> dict[str, Any]:
    m = MODELS[key]
    arch = architecture(m.spec)
    assert arch is not None, m.spec
    hf = count_params(model)
    return {"params_hf": hf, "params_estimate": arch.params, "params_head": head_params(m.spec),
            "params_unexplained": hf - arch.params - head_params(m.spec)}


def print_params(key: str, row: dict[str, Any]) -> None:
    print(f"   {key:14s} params: HF model {row['params_hf']:,}; estimate.architecture "
          f"{row['params_estimate']:,} + head {row['params_head']:,} -> difference "
          f"{row['params_unexplained']:+,}", flush=True)


def measure(key: str, precision: str, device: torch.device, args: argparse.Namespace,
            peaks: dict[str, float] | None) -> dict[str, Any]:
    m = MODELS[key]
    arch = architecture(m.spec)
    assert arch is not None, m.spec
    torch.manual_seed(args.seed)
    with torch.device(device):  # weights initialised where they run: fast, and no host copy
        model = m.build()
    model.config.output_hidden_states = False
    row: dict[str, Any] = {"model": key, "label": m.label, "spec": m.spec, "precision": precision,
                           "computes": computes_in(precision, device),
                           "attn_implementation": getattr(model.config, "_attn_implementation", None)}
    row.update(params_row(key, model))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, eps=1e-8)
    vocab = model.config.vocab_size
    b, t = args.batch_size, args.seq_len
    # ids above the special tokens (RoBERTa's <s> 0, <pad> 1, </s> 2; BERT's [PAD] 0): no position is padding
    input_ids = torch.randint(5, vocab, (b, t), device=device)
    attention_mask = torch.ones(b, t, dtype=torch.long, device=device)
    labels = torch.randint(0, NUM_LABELS, (b,), device=device)

    def train_step() -> torch.Tensor:
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
        loss = F.cross_entropy(logits.float(), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def eval_step() -> None:
        with torch.no_grad():
            model(input_ids=input_ids, attention_mask=attention_mask)

    def timed(step, steps: int) -> tuple[float, object]:
        """Seconds of `steps` calls of `step` after `args.warmup` untimed ones, and its last value."""
        for _ in range(args.warmup):
            step()
        sync(device)
        start = time.perf_counter()
        last = None
        for _ in range(steps):
            last = step()
        sync(device)
        return time.perf_counter() - start, last

    with precision_mode(precision, device):
        model.train()
        train_s, loss = timed(train_step, args.train_steps)
        model.eval()
        eval_s, _ = timed(eval_step, args.eval_steps)
    train_flops, forward_flops = arch.train_flops(t), arch.forward_flops(t)
    train_rate = args.train_steps / train_s
    eval_rate = args.eval_steps / eval_s
    # tf32 on a CPU computes in fp32: its MFU is against the fp32 peak
    peak_key = "fp32" if precision == "tf32" and device.type != "cuda" else precision
    peak = peaks.get(peak_key) if peaks else None
    row.update({
        "status": "ok",
        "train_s": train_s, "eval_s": eval_s,
        "train_steps_per_s": train_rate, "train_seq_per_s": train_rate * b,
        "eval_steps_per_s": eval_rate, "eval_seq_per_s": eval_rate * b,
        "train_flops_per_seq": train_flops, "forward_flops_per_seq": forward_flops,
        "train_flops_per_s": train_rate * b * train_flops, "eval_flops_per_s": eval_rate * b * forward_flops,
        "peak_flops_per_s": peak,
        "train_mfu": train_rate * b * train_flops / peak if peak else None,
        "eval_mfu": eval_rate * b * forward_flops / peak if peak else None,
        "peak_memory_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
        "last_loss": float(loss) if args.train_steps else None,
    })
    return row


def run_row(key: str, precision: str, device: torch.device, args: argparse.Namespace,
            peaks: dict[str, float] | None) -> dict[str, Any]:
    """One row; OOM (or another failure) recorded in the row and the run goes on."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    failure: tuple[str, str] | None = None
    try:
        row = measure(key, precision, device, args, peaks)
    except torch.OutOfMemoryError as err:
        failure = ("OOM", str(err).splitlines()[0] if str(err) else "out of memory")
    except Exception as err:  # noqa: BLE001  (one row's failure must not lose the rest of a device run)
        failure = ("error", f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
    if failure is not None:  # outside the except block: the traceback (and its tensors) is gone
        gc.collect()
        if device.type == "cuda":
            peak_mem = torch.cuda.max_memory_allocated(device)
            torch.cuda.empty_cache()
        else:
            peak_mem = None
        m = MODELS[key]
        row = {"model": key, "label": m.label, "spec": m.spec, "precision": precision,
               "computes": computes_in(precision, device), "status": failure[0], "message": failure[1],
               "peak_memory_bytes": peak_mem}
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def _fmt(value: float | None, spec: str, scale: float = 1.0) -> str:
    return "n/a" if value is None or not math.isfinite(value) else format(value * scale, spec)


def print_row(row: dict[str, Any]) -> None:
    head = f"{row['model']:14s} {row['precision']:5s}"
    if row["status"] != "ok":
        mem = _fmt(row.get("peak_memory_bytes"), ".1f", 2**-30)
        print(f"{head} {row['status']} (peak {mem} GiB): {row['message']}", flush=True)
        return
    mem = _fmt(row["peak_memory_bytes"], "9.1f", 2**-30)
    print(f"{head} {row['train_steps_per_s']:9.2f} {row['train_seq_per_s']:9.1f} {row['eval_seq_per_s']:9.1f} "
          f"{_fmt(row['train_flops_per_s'], '9.2f', 1e-12)} {_fmt(row['eval_flops_per_s'], '9.2f', 1e-12)} "
          f"{_fmt(row['train_mfu'], '7.1%'):>7s} {_fmt(row['eval_mfu'], '7.1%'):>7s} {mem:>9s}  "
          f"{row['computes']}", flush=True)


def comma_list(text: str, known: tuple[str, ...], what: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in items if s not in known]
    if unknown or not items:
        raise SystemExit(f"--{what}: unknown {unknown or text!r}; choose from {','.join(known)}")
    return items


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS), help=f"comma list of {','.join(MODELS)}")
    p.add_argument("--precisions", default=",".join(PRECISIONS), help="comma list of fp32,tf32,bf16")
    p.add_argument("--batch-size", type=int, default=50, help="sequences per step (the authors' --batch_size=50)")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per sequence (the authors' --max_seq_len=128)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before each timed train and eval block")
    p.add_argument("--train-steps", type=int, default=10)
    p.add_argument("--eval-steps", type=int, default=10)
    p.add_argument("--device", default="cuda", help="cuda, cuda:<i> or cpu (a smoke test)")
    p.add_argument("--peak-tflops", default=None,
                   help="fp32=..,tf32=..,bf16=.. dense peak TFLOP/s (over the table's)")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--params-only", action="store_true",
                   help="build each model on the meta device and compare its parameter count with the estimator's")
    p.add_argument("--json-out", default=None, help="also write the RESULT JSON to this file")
    args = p.parse_args()
    models = comma_list(args.models, tuple(MODELS), "models")
    precisions = comma_list(args.precisions, PRECISIONS, "precisions")
    if not 1 <= args.seq_len <= 512:
        raise SystemExit("--seq-len must be 1..512 (BERT's and ALBERT's 512 positions; RoBERTa's 514 less 2)")
    if args.batch_size < 1 or min(args.train_steps, args.eval_steps) < 1 or args.warmup < 0:
        raise SystemExit("--batch-size, --train-steps and --eval-steps must be >= 1, --warmup >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.params_only:
        print("== bench_gpu_throughput --params-only: parameter counts (meta device, nothing allocated)")
        for key in models:
            with torch.device("meta"):
                model = MODELS[key].build()
            print_params(key, params_row(key, model))
        return

    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("CUDA is not available here; use --device cpu for a smoke test")
        name = torch.cuda.get_device_name(device)
    else:
        name = "cpu"
    peaks, peak_source = card_peak(name) if device.type == "cuda" else (None, "no CPU peak in the table")
    if args.peak_tflops:
        peaks = {**(peaks or {}), **parse_peaks(args.peak_tflops)}
        over = f" over {peak_source}" if "table key" in peak_source else ""
        peak_source = f"--peak-tflops {args.peak_tflops}{over}"
    import transformers

    result: dict[str, Any] = {
        "bench": "bench_gpu_throughput", "card": name, "device": str(device), "torch": torch.__version__,
        "cuda": torch.version.cuda, "transformers": transformers.__version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "batch_size": args.batch_size, "seq_len": args.seq_len, "warmup": args.warmup,
        "train_steps": args.train_steps, "eval_steps": args.eval_steps,
        "peak_flops_per_s": peaks, "peak_source": peak_source,
        "flops_source": "doktra_tune.plan.estimate.architecture(spec).train_flops / forward_flops per sequence",
        "rows": [],
    }
    print(f"== bench_gpu_throughput: {name} ({device}), torch {torch.__version__}, batch {args.batch_size} x "
          f"{args.seq_len} tokens, {args.warmup} warm-up then {args.train_steps} train / {args.eval_steps} eval steps")
    peak_text = ", ".join(f"{k} {v / 1e12:g}" for k, v in peaks.items()) if peaks else "none: MFU n/a"
    print(f"   peak TFLOP/s: {peak_text} ({peak_source})")
    print(f"{'model':14s} {'prec':5s} {'train/s':>9s} {'train seq':>9s} {'eval seq':>9s} {'train TF':>9s} "
          f"{'eval TF':>9s} {'tr MFU':>7s} {'ev MFU':>7s} {'peak GiB':>9s}  computes in", flush=True)
    wall = time.perf_counter()
    for key in models:
        for precision in precisions:
            row = run_row(key, precision, device, args, peaks)
            result["rows"].append(row)
            print_row(row)
    result["wall_s"] = time.perf_counter() - wall
    print(f"   (train/s: steps/s; seq: sequences/s; TF: achieved TFLOP/s by the estimator's FLOP count; "
          f"{result['wall_s']:.0f} s in all)")
    print("   parameters, HF model vs doktra_tune.plan.estimate.architecture(spec).params:")
    for key in models:
        row = next((r for r in result["rows"] if r["model"] == key and "params_hf" in r), None)
        if row is not None:
            print_params(key, row)
    print("RESULT " + json.dumps(result))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
