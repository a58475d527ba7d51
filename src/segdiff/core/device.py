"""Where a job computes and in which precision: ``compute.device`` and ``compute.precision``."""

from __future__ import annotations

import torch

__all__ = ["pick_device", "native_bf16", "use_bf16"]


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 pays on ``device``: CUDA, or a CPU with AMX tiles.

    On a CPU with AMX, oneDNN runs bf16 convolutions on the tiles: a training step of the default
    model took 0.62x its fp32 time. AVX512-BF16 alone is not enough: there bf16 autocast made the
    same step 1.17x slower (334 vs 391 ms, issue 20), so such CPUs stay in fp32.
    """
    if device.type == "cuda":
        return True
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)  # private torch API: absent means no
    return device.type == "cpu" and bool(amx())


def use_bf16(precision: str, device: torch.device) -> bool:
    """Whether to train in bf16.

    Args:
        precision: ``compute.precision``: ``auto`` (bf16 where ``device`` computes it natively),
            ``bf16`` or ``fp32``.
        device: the training device.

    Returns:
        True for bf16 autocast.

    Raises:
        ValueError: an unknown ``precision``.
    """
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be auto, bf16 or fp32, got {precision!r}")
    return native_bf16(device) if precision == "auto" else precision == "bf16"


def pick_device(preference: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(preference)
