"""doktra_tune.device: precision resolution on the CPU (the GPU path needs a GPU and is not run here)."""

from __future__ import annotations

import warnings

import pytest
import torch

from doktra_tune import device
from doktra_tune.errors import ConfigError

CPU = torch.device("cpu")


def test_auto_and_fp32_are_plain_fp32_on_cpu() -> None:
    assert device.resolve_precision("auto", CPU) is None
    assert device.resolve_precision("FP32", CPU) is None


def test_bf16_on_cpu_is_bf16_autocast_and_warns_only_when_emulated(monkeypatch) -> None:
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert device.resolve_precision("bf16", CPU) is torch.bfloat16
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(device, "_warned", set())
    with pytest.warns(RuntimeWarning, match="precision=fp32"):
        assert device.resolve_precision("bf16", CPU) is torch.bfloat16
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process
        device.resolve_precision("bf16", CPU)


def test_bf16_autocast_runs_matmuls_in_bf16_on_cpu() -> None:
    a = torch.randn(4, 8)
    with device.autocast(CPU, torch.bfloat16):
        out = a @ a.T
    assert out.dtype == torch.bfloat16
    assert isinstance(device.cpu_has_native_bf16(), bool)


def test_unknown_precision_is_one_line_config_error() -> None:
    with pytest.raises(ConfigError, match="use precision=auto, fp32 or bf16"):
        device.resolve_precision("fp16", CPU)


@pytest.mark.slow
def test_avx2_cpu_kernels_reach_the_ray_workers():
    """train.cpu_kernels=avx2: the search's Ray workers run ATen on its AVX2 kernels (the pin that makes
    the cpu preset's fp32 numbers the same on any x86-64 CPU); with Ray already up the pin is refused."""
    import ray

    from doktra_tune.device import CPU_KERNEL_ENV
    from doktra_tune.errors import ConfigError
    from doktra_tune.search.ray_session import RaySession
    from doktra_tune.search.schema import RayOptions

    options = RayOptions(address=None, num_cpus=1, connect_timeout_s=10)
    with RaySession(options, worker_env=CPU_KERNEL_ENV["avx2"]):
        @ray.remote
        def capability() -> str:
            import torch as worker_torch

            return worker_torch.backends.cpu.get_cpu_capability()

        assert ray.get(capability.remote()) in ("AVX2", "DEFAULT")  # DEFAULT: a CPU without AVX2
        with pytest.raises(ConfigError, match="train.cpu_kernels"):
            RaySession(options, worker_env=CPU_KERNEL_ENV["avx2"]).__enter__()
    assert not ray.is_initialized()
