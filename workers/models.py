"""Loading configs, tokenizers and models with transformers, from the hub, a folder or a config.

The real `from_pretrained` path is the one that runs in tests too (they save tiny models to a temp
folder). Random weights come from `from_config` under the job's seed, so a random model is the
same on every worker and every run.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workers.errors import UserError, did_you_mean, first_line
from workers.specs import ModelSpec, looks_like_local_path

if TYPE_CHECKING:
    import torch

AUTO_CLASSES = {"masked_lm": "AutoModelForMaskedLM", "causal_lm": "AutoModelForCausalLM"}


def _local(name: str) -> str:
    """`~/models/x` as a path from_pretrained understands; hub ids unchanged."""
    return str(Path(name).expanduser()) if looks_like_local_path(name) else name


def _hub_kwargs(spec: ModelSpec) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"trust_remote_code": spec.trust_remote_code}
    if spec.revision:
        kwargs["revision"] = spec.revision
    if spec.gguf_file:
        kwargs["gguf_file"] = spec.gguf_file
    return kwargs


def check_local_paths(spec: ModelSpec) -> None:
    """Fail fast, before any actor starts, on a model or tokenizer path that is not there."""
    named = [("model.source", spec.source), ("model.tokenizer", spec.tokenizer)]
    if isinstance(spec.random, str):
        named.append(("model.random", spec.random))
    for field, name in named:
        if name and looks_like_local_path(name) and not Path(name).expanduser().exists():
            raise UserError(f"{field}: '{name}' does not exist (a local path was given; hub ids look like org/name)")
    if spec.gguf_file and spec.source and Path(spec.source).expanduser().is_dir():
        if not (Path(spec.source).expanduser() / spec.gguf_file).exists():
            raise UserError(f"model.gguf_file: '{spec.gguf_file}' is not in {spec.source}")


def known_model_types() -> set[str]:
    """transformers' model types (the keys of CONFIG_MAPPING_NAMES), without importing transformers.

    Importing `transformers.models.auto` costs ~4 s (it imports torch); transformers 5 keeps the
    table in a dependency-free module, `auto_mappings.py`, which we load on its own from the
    installed package. Empty when that file is absent (transformers 4): callers then ask transformers.
    """
    spec = importlib.util.find_spec("transformers")
    path = Path(spec.origin).parent / "models" / "auto" / "auto_mappings.py" if spec and spec.origin else None
    if path is None or not path.is_file():
        return set()
    module_spec = importlib.util.spec_from_file_location("_raybench_auto_mappings", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return set(module.CONFIG_MAPPING_NAMES)


def check_model_type(spec: ModelSpec) -> None:
    """A random model's `model_type` must be one transformers knows: "did you mean" for typos.

    The fast table may miss a few types that transformers adds at import time, so a name it does
    not know is confirmed against transformers itself before it is refused.
    """
    if not isinstance(spec.random, dict):
        return
    name = str(spec.random["model_type"])
    if name in known_model_types():
        return
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if name not in CONFIG_MAPPING_NAMES:
        raise UserError(f"model.random.model_type: unknown transformers model type '{name}'."
                        f"{did_you_mean(name, CONFIG_MAPPING_NAMES)}")


def _load_failed(field: str, name: str, exc: Exception) -> UserError:
    where = "local folder" if looks_like_local_path(name) else "Hugging Face hub id (offline, or a typo?)"
    return UserError(f"{field}: could not load '{name}' as a {where}: {first_line(exc)}")


# configs read from local files in this process, by the spec and the file's size and mtime: a GGUF's
# config takes ~3 s to read (transformers parses the file's metadata), and with --no-ray the data
# preparation and the worker read it in one process
_LOCAL_CONFIGS: dict[tuple, Any] = {}


def _local_config_key(spec: ModelSpec) -> tuple | None:
    """What a local config is read from, so a file edited since is read again; None for a hub id."""
    if spec.source is None or not looks_like_local_path(spec.source):
        return None
    folder = Path(spec.source).expanduser()
    path = folder / spec.gguf_file if spec.gguf_file else folder / "config.json"
    try:
        stat = path.stat()
    except OSError:
        return None
    return spec.model_dump_json(), str(path), stat.st_size, stat.st_mtime_ns


def load_config(spec: ModelSpec):
    """The transformers config of the model, without loading weights (a copy of the one this
    process already read, when it was read from the same unchanged local file)."""
    import copy

    key = _local_config_key(spec) if spec.random is None else None
    if key is not None and key in _LOCAL_CONFIGS:
        return copy.deepcopy(_LOCAL_CONFIGS[key])
    config = _read_config(spec)
    if key is not None:
        _LOCAL_CONFIGS[key] = copy.deepcopy(config)
    return config


def _read_config(spec: ModelSpec):
    from transformers import AutoConfig

    check_local_paths(spec)
    if isinstance(spec.random, dict):
        options = dict(spec.random)
        model_type = options.pop("model_type")
        try:
            return AutoConfig.for_model(model_type, **options)
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(f"model.random: not a valid transformers config for '{model_type}': {first_line(exc)}") from exc
    name = spec.source if spec.source is not None else str(spec.random)
    field = "model.source" if spec.source is not None else "model.random"
    try:
        return AutoConfig.from_pretrained(_local(name), **_hub_kwargs(spec))
    except (OSError, ValueError) as exc:
        raise _load_failed(field, name, exc) from exc


def load_tokenizer(spec: ModelSpec):
    """The tokenizer, or None for a random model given as a bare config (synthetic ids then).

    A `.txt` tokenizer is a WordPiece vocabulary; transformers 5 wants `BertTokenizer(vocab=...)`
    (its `vocab_file=` is silently ignored). A `.gguf` tokenizer is the vocabulary stored in a GGUF
    file, so a random model can borrow the tokenizer of a GGUF a user already has, offline.
    """
    from transformers import AutoTokenizer, BertTokenizer

    name = spec.tokenizer or spec.source or (spec.random if isinstance(spec.random, str) else None)
    if name is None:
        return None
    if name.endswith(".txt"):
        return BertTokenizer(vocab=str(Path(name).expanduser()))
    kwargs = _hub_kwargs(spec) if name == spec.source else {"trust_remote_code": spec.trust_remote_code}
    if name.endswith(".gguf"):
        path = Path(name).expanduser()
        name, kwargs = str(path.parent), dict(kwargs, gguf_file=path.name)
    try:
        return AutoTokenizer.from_pretrained(_local(name), **kwargs)
    except (OSError, ValueError) as exc:
        raise _load_failed("model.tokenizer", name, exc) from exc


def needs_fetch(spec: ModelSpec) -> bool:
    """True for weights that come from the hub (a local folder or a random model needs no download)."""
    return spec.source is not None and not looks_like_local_path(spec.source)


def fetch_weights(spec: ModelSpec) -> str:
    """Download the model's files into this node's Hugging Face cache; returns the local folder.

    Run once per node by the driver before the actors start, so N actors on a node do not download
    the same weights N times at once; the actors' `from_pretrained` then reads the cache.
    """
    from huggingface_hub import snapshot_download

    patterns = [spec.gguf_file] if spec.gguf_file else ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken"]
    try:
        return snapshot_download(spec.source, revision=spec.revision, allow_patterns=patterns + ["*.json"])
    except Exception as exc:  # noqa: BLE001 - any hub failure is the user's to fix (id, token, network)
        raise _load_failed("model.source", spec.source, exc) from exc


def _dense_gguf(spec: ModelSpec) -> dict[str, Any]:
    """Unpack a GGUF file into a plain dense model, the same on every device.

    Without this, transformers 5 keeps its GGUF quantizer on the model: packed blocks with a
    device-dependent kernel where one exists, elsewhere dense weights on a model that still reports
    itself quantized and refuses `save_pretrained`. Transformers 4 always dequantized (no GgufConfig).
    """
    if not spec.gguf_file:
        return {}
    try:
        from transformers import GgufConfig
    except ImportError:
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def load_model(spec: ModelSpec, config, kind: str, dtype: "torch.dtype", device: "torch.device", seed: int,
               **pretrained_options: Any):
    """The torch model in eval mode on `device` at `dtype`. `pretrained_options` go to `from_pretrained`
    (a tensor-parallel rank passes its `distributed_config`); random weights ignore them."""
    import torch
    import transformers

    auto = getattr(transformers, AUTO_CLASSES[kind])
    if spec.random is not None:
        torch.manual_seed(seed)
        model = auto.from_config(config)
        model = model.to(dtype)
    else:
        try:
            model = auto.from_pretrained(_local(spec.source), dtype=dtype, **_hub_kwargs(spec), **_dense_gguf(spec),
                                         **pretrained_options)
        except (OSError, ValueError) as exc:
            raise _load_failed("model.source", spec.source, exc) from exc
    return model.to(device).eval()


_POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def max_positions(config) -> int | None:
    """The longest sequence the model accepts, from its config (None when it does not say)."""
    for attr in _POSITION_KEYS:
        value = config.get(attr) if isinstance(config, dict) else getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def declared_config(spec: ModelSpec) -> dict[str, Any] | None:
    """The model's config as the spec points at it, without importing transformers: the random
    config mapping itself, or a local folder's config.json. None for a hub id or a GGUF file."""
    if isinstance(spec.random, dict):
        return dict(spec.random)
    name = spec.source if spec.source is not None else spec.random
    config_file = Path(str(name)).expanduser() / "config.json"
    if spec.gguf_file or not config_file.is_file():
        return None
    try:
        raw = json.loads(config_file.read_text())
    except (OSError, ValueError):
        return None  # the workers load it for real and say what is wrong
    return raw if isinstance(raw, dict) else None


def declared_max_positions(spec: ModelSpec) -> int | None:
    """The model's position limit from what the spec points at, without importing transformers:
    the random config mapping itself, or a local folder's config.json. None when neither says
    (a hub id, a GGUF file): the workers check it then, after loading the config for real."""
    check_local_paths(spec)
    if isinstance(spec.random, dict):
        return max_positions(spec.random)
    name = spec.source if spec.source is not None else spec.random
    config_file = Path(str(name)).expanduser() / "config.json"
    if spec.gguf_file or not config_file.is_file():
        return None
    try:
        return max_positions(json.loads(config_file.read_text()))
    except (OSError, ValueError) as exc:
        raise UserError(f"model: {config_file} is not a readable JSON config ({exc})") from exc


def encoder_only(config) -> bool:
    """An encoder-only model (BERT, RoBERTa, ...): it has a masked-LM head and is neither marked a
    decoder (`is_decoder`, which makes BERT's causal-LM class attend causally) nor an
    encoder-decoder. Such a model can be loaded as a causal LM by transformers but generates noise."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    get = config.get if isinstance(config, dict) else lambda key, default=None: getattr(config, key, default)
    return (get("model_type") in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not get("is_decoder", False)
            and not get("is_encoder_decoder", False))
