"""Step 2 setup: load the base model once per process, then per trial keep the first k blocks, freeze,
re-head and wrap with LoRA. Works for BERT-like encoders and GPT-2- / Llama-like decoders."""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch import nn

from trainers.config import TrialConfig
from trainers.errors import ConfigError
from trainers.model_files import (
    TINY_FAMILIES,
    clear_tokenizers,
    load_error,
    load_model_config,
    load_tokenizer,
    resolve_model_path,
)
from trainers.plan import check_layers
from trainers.tasks import Task, get_task

_BASE_CACHE: dict[tuple[Any, ...], nn.Module] = {}


def load_base_model(name: str, task: Task, num_outputs: int) -> nn.Module:
    """The pretrained model, read from disk once per process; callers get their own deep copy."""
    return copy.deepcopy(cached_base_model(name, task, num_outputs))


def cached_base_model(name: str, task: Task, num_outputs: int) -> nn.Module:
    """Load into the per-process cache (consumes global RNG for new heads: call before seeding)."""
    key = (name, task.name, num_outputs)
    if key not in _BASE_CACHE:
        import transformers

        auto_class = getattr(transformers, task.auto_model)
        config = load_model_config(name)
        tok = load_tokenizer(name)
        if config.pad_token_id is None:
            config.pad_token_id = tok.pad_token_id  # decoders classify from the last non-pad token
        for k, v in task.model_kwargs(num_outputs).items():
            setattr(config, k, v)
        if name in TINY_FAMILIES:
            torch.manual_seed(0)  # the same random "pretrained" weights in every process
            model = auto_class.from_config(config)
        else:
            from transformers.utils import logging as hf_logging

            verbosity = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()  # "newly initialized head" is expected, not news
            hf_logging.disable_progress_bar()
            try:
                # fp32 master weights whatever the checkpoint's dtype: bf16 comes from autocast on CUDA
                model = auto_class.from_pretrained(resolve_model_path(name), config=config, dtype=torch.float32)
            except (OSError, ValueError) as exc:
                raise load_error(name, exc) from None
            finally:
                hf_logging.set_verbosity(verbosity)
                hf_logging.enable_progress_bar()
        _BASE_CACHE[key] = model.eval()
    return _BASE_CACHE[key]


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The ModuleList of transformer blocks: the one whose length is the config's layer count."""
    depth = model.config.num_hidden_layers
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == depth:
            return name, module
    raise ConfigError([f"model: cannot find the {depth} transformer blocks of {type(model).__name__}"])


def keep_first_layers(model: nn.Module, k: int) -> None:
    """Drop every block after the first ``k`` (in place; ``check_layers`` checked k) and make the config agree."""
    name, blocks = find_blocks(model)
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, nn.ModuleList(list(blocks)[:k]))
    model.config.num_hidden_layers = k
    layer_types = getattr(model.config, "layer_types", None)
    if isinstance(layer_types, list):  # Qwen/Llama-style per-layer attention types
        model.config.layer_types = layer_types[:k]


def head_module_name(model: nn.Module) -> str | None:
    for name in ("classifier", "score"):
        if isinstance(getattr(model, name, None), nn.Module):
            return name
    return None


def replace_head(model: nn.Module, hidden_sizes: list[int], num_labels: int) -> None:
    """Swap the linear prediction head for an MLP with the given hidden sizes."""
    name = head_module_name(model)
    if name is None:
        raise ConfigError([f"model.head_hidden_sizes: {type(model).__name__} has no classification head"])
    width = model.config.hidden_size
    layers: list[nn.Module] = []
    for size in hidden_sizes:
        layers += [nn.Linear(width, size), nn.GELU(), nn.Dropout(0.1)]
        width = size
    layers.append(nn.Linear(width, num_labels, bias=name == "classifier"))
    setattr(model, name, nn.Sequential(*layers))


def reset_head(model: nn.Module, seed: int) -> None:
    """A fresh head per trial seed (the cached base would otherwise hand every trial the same one)."""
    name = head_module_name(model)
    if name is None:
        return
    gen = torch.Generator().manual_seed(seed)
    std = getattr(model.config, "initializer_range", 0.02)
    for module in getattr(model, name).modules():
        if isinstance(module, nn.Linear):
            with torch.no_grad():
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * std)
                if module.bias is not None:
                    module.bias.zero_()


def freeze_below(model: nn.Module, num_trainable: int) -> None:
    """Train only the top ``num_trainable`` blocks and what follows them (final norm, pooler, head);
    embeddings and lower blocks are frozen."""
    name, blocks = find_blocks(model)
    first_trainable = len(blocks) - num_trainable
    prefix = name + "."
    seen_blocks = False
    for pname, param in model.named_parameters():
        if pname.startswith(prefix):
            seen_blocks = True
            index = int(pname[len(prefix) :].split(".", 1)[0])
            param.requires_grad = index >= first_trainable
        else:
            param.requires_grad = seen_blocks  # before the blocks = embeddings (frozen)


def add_lora(model: nn.Module, cfg: TrialConfig) -> nn.Module:
    """Wrap with a peft LoRA adapter; target modules default to peft's per-architecture choice."""
    from peft import LoraConfig, TaskType, get_peft_model

    ad = cfg.adaptation
    depth = model.config.num_hidden_layers
    layers = None
    if cfg.model.num_trainable_layers is not None:
        layers = list(range(depth - cfg.model.num_trainable_layers, depth))
    lora = LoraConfig(
        task_type=TaskType[get_task(cfg.task).peft_task_type],
        r=ad.r,
        lora_alpha=ad.alpha,  # type: ignore[arg-type]  # peft accepts floats
        lora_dropout=ad.dropout,
        target_modules=ad.target_modules,
        layers_to_transform=layers,
    )
    try:
        with warnings.catch_warnings():  # peft 0.21 calls a transformers API deprecated in 5.x
            warnings.simplefilter("ignore", FutureWarning)
            return get_peft_model(model, lora)
    except ValueError as exc:
        raise ConfigError(
            [
                f"adaptation.target_modules: {ad.target_modules} do not fit {type(model).__name__} ({exc}); "
                f"name modules of this model or leave it null for peft's default"
            ]
        ) from None


def build_model(cfg: TrialConfig, num_outputs: int, label_names: list[str]) -> nn.Module:
    """Base (cached) -> keep first k blocks -> new head -> freeze or LoRA."""
    check_layers(cfg)
    task = get_task(cfg.task)
    model = load_base_model(cfg.model.name_or_path, task, num_outputs)
    if cfg.model.num_layers is not None:
        keep_first_layers(model, cfg.model.num_layers)
    if task.has_head:
        if cfg.model.head_hidden_sizes:
            replace_head(model, cfg.model.head_hidden_sizes, num_outputs)
        reset_head(model, cfg.seed)
    if label_names:
        model.config.id2label = dict(enumerate(label_names))
        model.config.label2id = {n: i for i, n in enumerate(label_names)}
    if cfg.adaptation.method == "lora" and cfg.model.num_trainable_layers != 0:
        return add_lora(model, cfg)
    if cfg.model.num_trainable_layers is not None:
        freeze_below(model, cfg.model.num_trainable_layers)
    return model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def cached_models() -> int:
    """How many base models this process holds (reused by later trials)."""
    return len(_BASE_CACHE)


def clear_caches() -> None:
    """Forget the base models and tokenizers this process loaded."""
    _BASE_CACHE.clear()
    clear_tokenizers()
