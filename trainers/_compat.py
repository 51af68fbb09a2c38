"""The one place trainers/ reads private torch names: each guarded, with a fallback that holds where a
torch release renames or drops the name (tests/trainers/test_compat.py takes the names away)."""

from __future__ import annotations

import torch


def cpu_has_bf16() -> bool:
    """Native bf16 matmuls on this CPU (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slower than fp32.

    torch's own checks are private (``torch.cpu._is_avx512_bf16_supported``, ``_is_amx_tile_supported``);
    where they are gone, its public capability table (``torch.cpu.get_capabilities``, newer releases)
    answers, and without that too the answer is no: fp32, the choice that is never slow."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:
        pass
    get_capabilities = getattr(torch.cpu, "get_capabilities", None)
    if get_capabilities is None:
        return False
    capabilities = get_capabilities()
    return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_tile"))
