"""Shared setup of the benchmarks: the real ChemProt split, a scratch cache dir."""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import torch  # noqa: E402

from doktra_tune.config import DataConfig  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    root = Path(os.environ.get("DOKTRA_DATA_ROOT", REPO_ROOT.parent / "shared" / "data"))
    if not (root / "chemprot_scibert" / "train.jsonl").is_file():
        raise SystemExit(f"ChemProt not found under {root}; set DOKTRA_DATA_ROOT to the shared data folder")
    return root


def parser(description: str, *, train_limit: int, repeats: int = 2) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--train-limit", type=int, default=train_limit, help="ChemProt training examples")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-len", type=int, default=128)
    p.add_argument("--repeats", type=int, default=repeats, help="interleaved repetitions of each variant")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--cache-dir", default=None, help="default: a fresh temporary folder")
    return p


def setup(args: argparse.Namespace) -> DataConfig:
    if args.threads:
        torch.set_num_threads(args.threads)
    cache = args.cache_dir or tempfile.mkdtemp(prefix="doktra-bench-")
    return DataConfig(
        task="chemprot",
        data_dir=str(data_root() / "chemprot_scibert"),
        max_len=args.max_len,
        train_limit=args.train_limit,
        dev_limit=64,
        cache_dir=cache,
    )


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def header(title: str, args: argparse.Namespace) -> None:
    print(f"== {title}")
    print(
        f"   model=minilm (all-MiniLM-L6-v2, H=384, L=6), ChemProt train_limit={args.train_limit}, "
        f"batch_size={args.batch_size}, max_len={args.max_len}, torch threads={torch.get_num_threads()}, "
        f"device=cpu, repeats={args.repeats} (interleaved; medians)"
    )


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


class Timings:
    """Wall and CPU seconds of each variant over interleaved repetitions (the verdicts take medians)."""

    def __init__(self, variants: tuple[str, ...]) -> None:
        self.width = max(len(v) for v in variants)
        self.wall: dict[str, list[float]] = {v: [] for v in variants}
        self.cpu: dict[str, list[float]] = {v: [] for v in variants}

    def add(self, rep: int, variant: str, wall: float, cpu: float) -> None:
        self.wall[variant].append(wall)
        self.cpu[variant].append(cpu)
        print(f"   rep {rep} {variant:{self.width}s} {wall:7.2f}s wall {cpu:7.2f}s cpu", flush=True)

    def ratios(self, num: str, den: str) -> tuple[float, float]:
        """median(num) / median(den) of the wall and of the CPU seconds."""
        return (median(self.wall[num]) / median(self.wall[den]), median(self.cpu[num]) / median(self.cpu[den]))
