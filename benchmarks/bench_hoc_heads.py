"""HoC's two heads on real HoC: the authors' 20 outputs (pairs20) vs one sigmoid per hallmark (sigmoid10).

Trains the same model (default all-MiniLM-L6-v2) with `train_teacher` (Eq. 2, beta = --beta) on the raw
Hallmarks of Cancer corpus (`hoc_raw`, split by abstract in BLUE's proportions; a seeded stratified
subsample of --train-limit training sentences, dev and test whole), once per head and seed, with
everything else equal. Reports per run BLUE's example-based F1 at the abstract level (dev, test), ECE
over the hallmark decisions, and on test:

  heads   : the fraction of (sentence, hallmark) and (abstract, hallmark) decisions on which
            pairs20 and sigmoid10 of the same seed agree, and the sentences with any disagreement;
  seeds   : the same between two seeds of one head (how much agreement seed noise alone leaves);
  rule    : pairs20's decision `<i>_1` beats `<i>_0` (the one used, bluebert's per-pair argmax) vs
            `<i>_1` alone above 0.5: agreement and the F1 of each.

    python benchmarks/bench_hoc_heads.py [--model minilm@L3 --train-limit 6000 --epochs 4 --lr 1e-4 --seeds 1 --threads 1
                                          --heads pairs20 sigmoid10 --out-dir DIR]
    python benchmarks/bench_hoc_heads.py --out-dir DIR --compare-only   # after one invocation per head in parallel

At the CPU sizes tried here both heads stay at the label prior (no hallmark predicted; benchmarks/README.md,
"HoC's two heads"): the comparison needs a GPU run on the whole training split (--train-limit 0).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from doktra_tune.config import DataConfig, StageConfig
from doktra_tune.encoding import collate
from doktra_tune.losses import label_probabilities
from doktra_tune.metrics import hoc_example_prf
from doktra_tune.models import forward_cls_logits, load_checkpoint
from doktra_tune.stages import train_teacher
from doktra_tune.stages.splits import load_encoded

REPO_ROOT = Path(__file__).resolve().parents[1]
HEADS = ("pairs20", "sigmoid10")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="minilm")
    p.add_argument("--train-limit", type=int, default=2000, help="training sentences (0: the whole split)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--beta", type=float, default=0.0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-len", type=int, default=96)
    p.add_argument("--seeds", type=int, nargs="+", default=[1])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--heads", nargs="+", choices=HEADS, default=list(HEADS))
    p.add_argument("--out-dir", default=None, help="where each run's test decisions and numbers go (default: a temp dir);"
                   " runs of several invocations (one head each, in parallel) are compared together")
    p.add_argument("--compare-only", action="store_true", help="only compare the runs already in --out-dir")
    p.add_argument("--cache-dir", default=None)
    return p.parse_args()


@torch.no_grad()
def raw_logits(checkpoint: Path, data: DataConfig, split: str) -> tuple[np.ndarray, np.ndarray, list]:
    """The checkpoint's raw logits [N, outputs] on `split`, its hallmark multi-hot [N, 10] and doc ids."""
    model, tokenizer, _ = load_checkpoint(checkpoint)
    model.eval()
    enc = load_encoded(data, split, tokenizer).encoded
    out = np.zeros((len(enc), int(model.config.num_labels)), dtype=np.float64)
    for start in range(0, len(enc), 128):
        idx = list(range(start, min(start + 128, len(enc))))
        _, logits = forward_cls_logits(model, collate(enc, idx, tokenizer.pad_token_id))
        out[idx] = logits.double().numpy()
    return out, np.asarray(enc.labels), list(enc.doc_ids)


def decisions(head: str, logits: np.ndarray, rule: str = "pair") -> np.ndarray:
    """[N, 10] hallmark decisions: the stages' own (`label_probabilities` >= 0.5: sigmoid10 z >= 0, pairs20
    z_1 >= z_0), or for pairs20 with rule "one" the `<i>_1` output alone (z_1 >= 0)."""
    if head == "pairs20" and rule == "one":
        return (logits[:, 1::2] >= 0).astype(np.int64)
    probs = label_probabilities(torch.from_numpy(logits), multi_label=True, pairs=head == "pairs20")
    return (probs >= 0.5).numpy().astype(np.int64)


def doc_level(pred: np.ndarray, doc_ids: list) -> np.ndarray:
    keys = {d: i for i, d in enumerate(dict.fromkeys(doc_ids))}
    out = np.zeros((len(keys), pred.shape[1]), dtype=bool)
    np.logical_or.at(out, np.array([keys[d] for d in doc_ids]), pred.astype(bool))
    return out


def agreement(a: np.ndarray, b: np.ndarray, doc_ids: list) -> dict[str, float]:
    return {
        "sentence_decisions": float((a == b).mean()),
        "abstract_decisions": float((doc_level(a, doc_ids) == doc_level(b, doc_ids)).mean()),
        "sentences_all_equal": float((a == b).all(axis=1).mean()),
    }


def train_and_save(args: argparse.Namespace, root: Path, cache: str, work: Path, out_dir: Path) -> None:
    for seed in args.seeds:
        for head in args.heads:
            data = DataConfig(task="hoc", data_dir=str(root), data_format="hoc_raw", max_len=args.max_len,
                              train_limit=args.train_limit or None, cache_dir=cache, hoc_head=head)
            cfg = StageConfig(data=data, model=args.model, output_dir=str(work / f"{head}-{seed}"), lr=args.lr,
                              epochs=args.epochs, batch_size=args.batch_size, beta=args.beta, seed=seed,
                              precision="fp32", device="cpu", eval_splits=("dev", "test"), eval_every_epoch=False,
                              keep_checkpoints="last")
            t0 = time.time()
            result = train_teacher(cfg, on_epoch=lambda rep: print(
                f"      {head} seed {seed} epoch {rep.epoch}: train loss {rep.metrics['train_loss']:.4f}, dev F1 "
                f"{100 * rep.metrics['dev_f1']:.2f}, dev loss {rep.metrics['dev_loss']:.4f} "
                f"({rep.metrics['epoch_seconds']:.0f} s)", flush=True))
            last = result.last_metrics
            logits, gold, doc_ids = raw_logits(result.last_checkpoint, data, "test")
            run = {"head": head, "seed": seed, "seconds": time.time() - t0, "outputs": int(logits.shape[1]),
                   "dev": {k: last[f"dev_{k}"] for k in ("f1", "precision", "recall", "ece", "loss")},
                   "test": {k: last[f"test_{k}"] for k in ("f1", "precision", "recall", "ece", "loss")}}
            pred = decisions(head, logits)
            run["test_f1_from_logits"] = hoc_example_prf(gold, pred, doc_ids)[2]
            arrays = {"pred": pred, "gold": gold, "doc_ids": np.array(doc_ids, dtype=str)}
            if head == "pairs20":
                one = decisions(head, logits, rule="one")
                run["rule_one_vs_pair"] = agreement(pred, one, doc_ids)
                run["test_f1_rule_one"] = hoc_example_prf(gold, one, doc_ids)[2]
                arrays["pred_one"] = one
            np.savez(out_dir / f"{head}-{seed}.npz", **arrays)
            (out_dir / f"{head}-{seed}.json").write_text(json.dumps({"args": vars(args), **run}, indent=1))
            print(f"   {head:9s} seed {seed}: dev F1 {100 * run['dev']['f1']:.2f} ECE {100 * run['dev']['ece']:.2f} | "
                  f"test F1 {100 * run['test']['f1']:.2f} (from logits {100 * run['test_f1_from_logits']:.2f}) "
                  f"P {100 * run['test']['precision']:.2f} R {100 * run['test']['recall']:.2f} "
                  f"ECE {100 * run['test']['ece']:.2f} ({run['seconds']:.0f} s)", flush=True)
            if head == "pairs20":
                print(f"      rule <i>_1 > 0.5 alone: test F1 {100 * run['test_f1_rule_one']:.2f}, agreement with "
                      f"<i>_1 > <i>_0: {run['rule_one_vs_pair']}", flush=True)


def compare(out_dir: Path) -> dict[str, object]:
    """Agreement of the saved test decisions: the two heads per seed, two seeds per head."""
    runs = {p.stem: dict(np.load(p)) for p in sorted(out_dir.glob("*.npz"))}
    seeds = sorted({int(k.split("-")[1]) for k in runs})
    summary: dict[str, object] = {"runs": {p.stem: json.loads(p.read_text()) for p in sorted(out_dir.glob("*.json"))
                                           if p.stem in runs}}
    heads = {}
    for seed in seeds:
        a, b = runs.get(f"pairs20-{seed}"), runs.get(f"sigmoid10-{seed}")
        if a is not None and b is not None:
            heads[seed] = agreement(a["pred"], b["pred"], list(a["doc_ids"]))
            print(f"   heads agree (seed {seed}, test): {heads[seed]}")
    summary["heads_agreement"] = heads
    across = {}
    for head in HEADS:
        mine = [s for s in seeds if f"{head}-{s}" in runs]
        if len(mine) > 1:
            a, b = runs[f"{head}-{mine[0]}"], runs[f"{head}-{mine[1]}"]
            across[head] = agreement(a["pred"], b["pred"], list(a["doc_ids"]))
            print(f"   seeds {mine[0]} vs {mine[1]} agree ({head}, test): {across[head]}")
    summary["seeds_agreement"] = across
    print("RESULT " + json.dumps({k: {"dev_f1": v["dev"]["f1"], "test_f1": v["test"]["f1"]}
                                  for k, v in summary["runs"].items()}))  # type: ignore[union-attr]
    return summary


def main() -> None:
    args = parse()
    out_dir = Path(args.out_dir or tempfile.mkdtemp(prefix="doktra-hoc-heads-out-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    if not args.compare_only:
        if args.threads:
            torch.set_num_threads(args.threads)
        root = Path(os.environ.get("DOKTRA_DATA_ROOT", REPO_ROOT.parent / "shared" / "data")) / "hoc_raw"
        if not (root / "text").is_dir():
            raise SystemExit(f"HoC not found at {root}; set DOKTRA_DATA_ROOT to the shared data folder")
        cache = args.cache_dir or tempfile.mkdtemp(prefix="doktra-hoc-heads-")
        work = Path(tempfile.mkdtemp(prefix="doktra-hoc-runs-"))
        print(f"== bench_hoc_heads: {args.model}, HoC train_limit={args.train_limit or 'none'} (dev, test whole), "
              f"{args.epochs} epochs, lr {args.lr}, beta {args.beta}, batch {args.batch_size}, max_len {args.max_len}, "
              f"heads {args.heads}, seeds {args.seeds}, torch threads {torch.get_num_threads()}; out {out_dir}",
              flush=True)
        train_and_save(args, root, cache, work, out_dir)
    summary = compare(out_dir)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
    main()
