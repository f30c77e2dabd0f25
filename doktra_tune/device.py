"""Device and numeric-precision resolution for the stages (StageConfig.device / .precision).

Precisions (`train.precision`, README: Protocol):
* ``fp32``: strict fp32: weights, activations and matmuls (TF32 off for matmuls and convolutions);
* ``tf32``: fp32 weights and activations, matmuls and convolutions on CUDA in TF32 (tensor cores, 10-bit
  mantissa inputs, fp32 accumulation). PyTorch 1.7 to 1.11 did this by default
  (``torch.backends.cuda.matmul.allow_tf32`` "defaults to True in PyTorch 1.7 to PyTorch 1.11, and False in
  PyTorch 1.12 and later", PyTorch CUDA semantics notes): the authors' PyTorch 1.8.1 "fp32" on an RTX 3090
  ran so. On a CPU there is no TF32: it computes in fp32 and says so (a warning);
* ``bf16``: bf16 autocast around fp32 weights; ``auto``: bf16 on CUDA (when supported), fp32 on a CPU.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import ContextManager, Iterator

import torch

from doktra_tune.errors import ConfigError


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto``: the first CUDA device when available, else the CPU; otherwise a torch device string."""
    spec = str(spec).strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError) as err:
        raise ConfigError(f"unknown device {spec!r}; use device=auto, cpu, cuda or cuda:<index>") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={spec} requested but CUDA is not available here; use device=auto or device=cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(
            f"device={spec} but only {torch.cuda.device_count()} CUDA device(s) exist; use device=cuda:0 or auto"
        )
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {spec!r}; use device=auto, cpu or cuda")
    return device


@dataclass
class Runtime:
    """Where a stage or an evaluation runs, its autocast dtype (None: plain fp32) and whether its fp32
    matmuls run in TF32 (``precision=tf32`` on CUDA)."""

    device: torch.device
    amp_dtype: torch.dtype | None
    tf32: bool = False

    @property
    def precision_name(self) -> str:
        """What the runtime computes in: bf16 | float16 | tf32 | fp32 (the teacher cache's key part)."""
        if self.amp_dtype is not None:
            return str(self.amp_dtype).replace("torch.", "")
        return "tf32" if self.tf32 else "fp32"


def resolve_runtime(device: str = "auto", precision: str = "auto") -> Runtime:
    """The ``Runtime`` of a ``device`` and ``precision`` setting (see ``resolve_device`` / ``resolve_precision``)."""
    resolved = resolve_device(device)
    return Runtime(resolved, resolve_precision(precision, resolved), uses_tf32(precision, resolved))


def uses_tf32(precision: str, device: torch.device) -> bool:
    """Whether ``precision`` runs fp32 matmuls in TF32 on ``device``: ``tf32`` on CUDA. On a CPU
    ``tf32`` computes in fp32 (no TF32 there), with a warning that says so."""
    if str(precision).strip().lower() != "tf32":
        return False
    if device.type != "cuda":
        _warn_once("precision=tf32 on a CPU computes in fp32 (TF32 is a CUDA tensor-core format): the numbers are "
                   "precision=fp32's")
        return False
    return True


@contextlib.contextmanager
def matmul_precision(tf32: bool) -> Iterator[None]:
    """Set torch's TF32 switches for CUDA matmuls and cuDNN convolutions to ``tf32`` (strict fp32 when
    False) for the block, and restore them after: every stage and evaluation computes as its precision
    says, whatever ran before it in the same process."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = bool(tf32)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``precision`` on ``device``; None means plain fp32.

    ``auto``: bf16 autocast on CUDA (when the GPU supports bf16), fp32 on CPU; ``tf32``: no autocast
    (fp32 activations; its TF32 matmuls are ``uses_tf32`` / ``matmul_precision``'s).
    """
    precision = str(precision).strip().lower()
    if precision in ("fp32", "tf32"):
        return None
    if precision == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError("precision=bf16 but this GPU has no bf16 support; use precision=fp32 or auto")
        if device.type == "cpu" and not cpu_has_native_bf16():
            _warn_once(
                "precision=bf16 on a CPU without native bf16 (AVX512-BF16 / AMX) runs emulated and slower "
                "than fp32; set precision=fp32"
            )
        return torch.bfloat16
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    raise ConfigError(f"unknown precision {precision!r}; use precision=auto, fp32, tf32 or bf16")


# train.cpu_kernels: the environment that pins torch's CPU kernels. `avx2` makes ATen's vectorised
# kernels and oneDNN use their AVX2 code paths (MKL's as well) even on AVX-512/AMX CPUs, so an fp32 run
# computes bit for bit what it computes on any x86-64 CPU with AVX2 (README: reproducibility). These
# variables are read when torch first dispatches a kernel: they must be in a process's environment
# before it trains anything (the search gives them to its Ray workers).
CPU_KERNEL_ENV: dict[str, dict[str, str]] = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 matmuls natively on this CPU (AVX512-BF16 or AMX): bf16 autocast then
    trains a BERT-base-sized encoder ~1.5x faster than fp32 (measured: MiniLM-L6, 1 thread)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def autocast(device: torch.device, dtype: torch.dtype | None) -> ContextManager[object]:
    """Autocast context for the forward pass (a no-op context for fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def apply_torch_threads(threads: int | None) -> None:
    """torch.set_num_threads(threads) when set (StageConfig.torch_threads)."""
    if threads is None:
        return
    if int(threads) < 1:
        raise ConfigError(f"torch_threads={threads} must be >= 1; omit it to keep torch's default")
    if torch.get_num_threads() != int(threads):
        torch.set_num_threads(int(threads))
