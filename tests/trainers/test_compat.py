import pytest
import torch

from trainers._compat import cpu_has_bf16

PRIVATE = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")


def test_the_pinned_torch_answers_with_its_private_checks():
    if not all(hasattr(torch.cpu, name) for name in PRIVATE):
        pytest.skip("this torch has no private bf16 checks (the fallbacks below cover it)")
    assert cpu_has_bf16() is bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


@pytest.mark.parametrize("native", [True, False])
def test_without_the_private_checks_the_public_capability_table_answers(monkeypatch, native):
    for name in PRIVATE:
        monkeypatch.delattr(torch.cpu, name, raising=False)
    table = {"avx512_bf16": False, "amx_tile": native, "architecture": "x86_64"}
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: table, raising=False)
    assert cpu_has_bf16() is native


def test_without_any_check_the_answer_is_fp32(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "get_capabilities", raising=False)
    assert cpu_has_bf16() is False
