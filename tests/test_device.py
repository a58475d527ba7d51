"""compute.precision auto: bf16 where it pays (CUDA, AMX), not on AVX512-BF16 alone."""

import pytest
import torch

from segdiff.core.device import native_bf16, use_bf16

CPU = torch.device("cpu")


@pytest.mark.parametrize("amx,avx512_bf16,expected", [(True, True, True), (False, True, False), (False, False, False)])
def test_auto_precision_follows_amx_not_the_avx512_bf16_flag(monkeypatch, amx, avx512_bf16, expected):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    assert native_bf16(CPU) is expected
    assert use_bf16("auto", CPU) is expected
    assert use_bf16("bf16", CPU) and not use_bf16("fp32", CPU)
    assert native_bf16(torch.device("cuda"))


def test_a_torch_without_the_probe_means_fp32(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert not native_bf16(CPU)
    with pytest.raises(ValueError, match="precision must be auto, bf16 or fp32"):
        use_bf16("fp16", CPU)
