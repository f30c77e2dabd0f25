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
    with pytest.raises(ConfigError, match="use precision=auto, fp32, tf32 or bf16"):
        device.resolve_precision("fp16", CPU)


@pytest.mark.slow
def test_avx2_cpu_kernels_reach_the_ray_workers():
    """train.cpu_kernels=avx2: the search's Ray workers run ATen on its AVX2 kernels (the pin that makes
    the cpu preset's fp32 numbers the same on any x86-64 CPU); with Ray already up the pin is refused."""
    import ray

    from doktra_tune.cluster.ray_session import RaySession
    from doktra_tune.device import CPU_KERNEL_ENV
    from doktra_tune.errors import ConfigError
    from doktra_tune.plan.schema import RayOptions

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


def test_tf32_is_fp32_on_cpu_and_says_so(monkeypatch) -> None:
    monkeypatch.setattr(device, "_warned", set())
    with pytest.warns(RuntimeWarning, match="precision=tf32 on a CPU computes in fp32"):
        rt = device.resolve_runtime("cpu", "tf32")
    assert rt.amp_dtype is None and rt.tf32 is False and rt.precision_name == "fp32"
    assert device.resolve_runtime("cpu", "fp32").precision_name == "fp32"
    assert device.Runtime(CPU, None, True).precision_name == "tf32"
    assert device.Runtime(CPU, torch.bfloat16).precision_name == "bfloat16"


def test_tf32_on_cuda_is_fp32_activations_with_tf32_matmuls() -> None:
    cuda = torch.device("cuda")
    assert device.resolve_precision("tf32", cuda) is None  # no autocast: fp32 weights and activations
    assert device.uses_tf32("tf32", cuda) and not device.uses_tf32("fp32", cuda) and not device.uses_tf32("bf16", cuda)


@pytest.mark.parametrize("tf32", [True, False])
def test_matmul_precision_sets_both_switches_and_restores_them(tf32: bool) -> None:
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    with device.matmul_precision(tf32):
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (tf32, tf32)
        with device.matmul_precision(not tf32):  # a teacher pass in another precision inside a stage
            assert torch.backends.cuda.matmul.allow_tf32 is (not tf32)
        assert torch.backends.cuda.matmul.allow_tf32 is tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
