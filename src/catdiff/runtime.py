"""Where code runs: the torch device named by a config and the precision of its matmuls (autocast,
with a start-up probe of bf16 speed). It knows no method, data or config schema."""

from __future__ import annotations

import torch

from .errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """'auto' → CUDA when present, else CPU; 'cpu', 'cuda', 'cuda:N' checked against this machine."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but CUDA is not available")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None


# ---- mixed precision ------------------------------------------------------------------------
AMP_MODES = ("auto", "bf16", "fp16", "off")
AUTO_MIN_SPEEDUP = 1.5  # `auto` takes bf16 when its matmuls are at least this much faster than fp32
_SPEEDUP: dict[str, float] = {}  # bf16 / fp32 matmul speed, probed once per process and device type


def bf16_speedup(device: torch.device, timer=None, size: int = 512, repeats: int = 5) -> float:
    """fp32 time / bf16 time of a (size × size) matmul on `device`, best of `repeats` each (tens of
    milliseconds in all); cached per process and device type unless a `timer` is given (tests
    pass a fake clock). CPUs without bf16 units (no AVX512-BF16/AMX) come out below 1."""
    key = device.type
    if timer is None and key in _SPEEDUP:
        return _SPEEDUP[key]
    import time

    clock = timer or time.perf_counter
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    best = {}
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.randn(size, size, device=device).to(dtype)
        b = torch.randn(size, size, device=device).to(dtype)
        a @ b  # warm-up: kernels, threads, caches
        sync()
        times = []
        for _ in range(repeats):
            t0 = clock()
            a @ b
            sync()
            times.append(clock() - t0)
        best[dtype] = max(min(times), 1e-12)
    ratio = best[torch.float32] / best[torch.bfloat16]
    if timer is None:
        _SPEEDUP[key] = ratio
    return ratio


def amp_dtype(mode: str, device: torch.device, timer=None) -> torch.dtype | None:
    """The autocast dtype of an `amp` setting on `device`: None (fp32) for off, bfloat16/float16 as
    named, and for auto bf16 where the probe (`bf16_speedup`) finds it >= AUTO_MIN_SPEEDUP× fp32."""
    mode = "off" if mode == "none" else mode  # the name of `off` in configs saved before issue 18
    if mode not in AMP_MODES:
        raise ConfigError(f"amp must be one of {AMP_MODES}, got {mode!r}")
    if mode == "off" or device.type not in ("cpu", "cuda"):
        return None
    if mode == "auto":
        return torch.bfloat16 if bf16_speedup(device, timer) >= AUTO_MIN_SPEEDUP else None
    return torch.bfloat16 if mode == "bf16" else torch.float16


def autocast(mode: str, device: torch.device):
    """A context that runs matmuls and convolutions in the `amp` dtype (torch.autocast; weights,
    optimizer state and every reduction stay fp32), or does nothing for fp32."""
    dtype = amp_dtype(mode, device)
    if dtype is None:
        from contextlib import nullcontext

        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


# ---- compilation ----------------------------------------------------------------------------
def compile_enabled(setting: bool | str, device: torch.device) -> bool:
    """Whether `model.compile` = true | false | auto compiles the network on `device`. auto: on CUDA
    (fused elementwise kernels, fewer launches), not on CPU or MPS: on a 2-core AMD EPYC
    (benchmarks/results/throughput, 6x384 KJV step) the compiled training step was 1.00x the eager
    one in fp32 and 1.08x in bf16, after 55 s and 38 s of compilation, and the compiled sampling
    chain 0.77x the eager one: nothing a run of minutes wins back."""
    if setting == "auto":
        return device.type == "cuda"
    if isinstance(setting, bool):
        return setting
    raise ConfigError(f"model.compile must be true, false or auto, got {setting!r}")
