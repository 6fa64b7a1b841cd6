"""The one model loader: sampling, scoring, training and the demo load models through here.

One rule for each thing that used to differ between the four loading paths:

* **dtype** — float32 on CPU. On CUDA, bfloat16 when the GPU supports it, for generation and
  scoring; training always gets float32 weights (TRL's ``bf16`` flag then runs mixed precision
  over float32 master weights, see ``core.steps.train.device_kwargs``).
* **device** — ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda"`` (an error when
  CUDA is missing). For generation the model is moved there and put in eval mode; for training it
  stays where it was loaded (the CPU) and the Trainer places it (``use_cpu``, or one device per
  process under ``accelerate``).
* **padding side** — left for generation (a batch of prompts ends where the new tokens begin).
  Training leaves the tokenizer's padding side alone: TRL's collators pad for themselves (SFT pads
  input ids and labels on the right; DPO pads prompts on the left and completions on the right).
* **pad / EOS ids** — a tokenizer without a pad token gets its EOS token as pad (what TRL does
  too); ``eos_ids`` is the set of the model's ``generation_config.eos_token_id`` (an int or a list),
  else the tokenizer's EOS id.
* **context** — ``max_position_embeddings`` / ``n_positions`` / ``max_sequence_length`` /
  ``seq_length`` / ``n_ctx`` of the *text* config (a vision-language model keeps them in its
  ``text_config``); None when the config names none.
* **vision** — the one place a model with a vision part plugs in. A config with a
  ``vision_config``, an image-text-to-text model type, or an image-text-to-text architecture is
  loaded with ``AutoModelForImageTextToText`` and its ``AutoProcessor`` (never with
  ``AutoModelForCausalLM``, which loads e.g. Gemma 3 and silently ignores its images);
  ``LoadedModel.vision`` says so and ``processor`` holds the processor. Backends that do not
  handle images yet refuse such models with a clear error.

Failures raise :class:`LoadError` naming the path; callers turn it into their own error type
(``SamplerError``, ``AttractorError``, ``ValueError``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "LoadError", "LoadedModel", "choose_dtype", "is_vision", "load_config", "load_model", "model_context", "reads_images",
    "resolve_device",
]

PURPOSES = ("generate", "train")
CONTEXT_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")


class LoadError(Exception):
    """A model, tokenizer or processor that cannot be loaded; the message names the path."""


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    processor: Any  # the AutoProcessor of a vision model; None for a text-only one
    device: str  # where the model's weights are
    dtype: Any  # torch dtype of the weights
    eos_ids: set[int]
    pad_id: int | None
    context: int | None  # positions the model can attend over; None when its config names none
    vision: bool


def resolve_device(device: str = "auto") -> str:
    """``auto`` → ``cuda`` when available, else ``cpu``; ``cuda`` without CUDA is a LoadError."""
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise LoadError(f"device={device} but CUDA is not available on this machine")
    return str(device)


def choose_dtype(device: str, purpose: str = "generate"):
    """float32 on CPU and for training; bfloat16 on a CUDA GPU that supports it."""
    import torch

    if purpose == "train" or not str(device).startswith("cuda"):
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32


def _text_config(config):
    get = getattr(config, "get_text_config", None)
    if callable(get):
        return get()
    return getattr(config, "text_config", None) or config


def model_context(model_or_config) -> int | None:
    """The context length read off the (text) config of a model or a config; None when unknown."""
    config = getattr(model_or_config, "config", model_or_config)
    for cfg in (_text_config(config), config):
        for name in CONTEXT_FIELDS:
            value = getattr(cfg, name, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def _image_text_names() -> tuple[set[str], set[str]]:
    """(model types, architecture names) of transformers' image-text-to-text models."""
    try:
        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES as names
    except ImportError:  # pragma: no cover - an older transformers
        return set(), set()
    archs: set[str] = set()
    for value in names.values():
        archs.update(value if isinstance(value, (list, tuple)) else [value])
    return set(names), archs


def is_vision(config) -> bool:
    """Whether a config (or a model) has a vision part: a ``vision_config``, an image-text-to-text
    model type, or an architecture that transformers lists as image-text-to-text."""
    config = getattr(config, "config", config)
    if getattr(config, "vision_config", None) is not None:
        return True
    types, archs = _image_text_names()
    if getattr(config, "model_type", None) in types:
        return True
    names = list(getattr(config, "architectures", None) or []) + [type(config).__name__]
    return any(n in archs or n.endswith(("ForImageTextToText", "ForVision2Seq")) for n in names)


def load_config(path: str | Path):
    """The model's config only (no weights): enough to tell a vision model before loading it."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(path))
    except Exception as e:
        raise LoadError(f"cannot load a model from {str(path)!r}: {e}") from None


def reads_images(model_path: str | Path | None) -> bool | None:
    """Whether a local model folder's config has a vision part; None when there is no local config to
    read (a hub id, a server's model name) — the checks made before a job starts ask this."""
    if not model_path or not (Path(model_path) / "config.json").exists():
        return None
    try:
        return is_vision(load_config(model_path))
    except LoadError:
        return None


def _eos_ids(model, tokenizer) -> set[int]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None or eos == []:
        eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        return set()
    return {int(e) for e in (eos if isinstance(eos, (list, tuple, set)) else [eos])}


def _weights_device(model) -> str:
    try:
        return str(next(model.parameters()).device)
    except (StopIteration, AttributeError, TypeError):
        return "cpu"


def _weights_dtype(model):
    try:
        return next(model.parameters()).dtype
    except (StopIteration, AttributeError, TypeError):
        return None


def load_model(
    path_or_model: Any,
    *,
    device: str = "auto",
    purpose: str = "generate",
    tokenizer: Any = None,
    processor: Any = None,
) -> LoadedModel:
    """Load a model (local path or hub id) with its tokenizer — or take an already-loaded model
    and its ``tokenizer`` — and apply the rules of this module for ``purpose`` ("generate" covers
    sampling and teacher-forced scoring; "train" is TRL). ``tokenizer`` may also be a path to load
    it from; ``processor`` (an already-loaded vision model's) is kept as given."""
    if purpose not in PURPOSES:
        raise ValueError(f"purpose is one of {', '.join(PURPOSES)} (got {purpose!r})")
    dev = resolve_device(device)
    dtype = choose_dtype(dev, purpose)
    name = str(path_or_model) if isinstance(path_or_model, (str, Path)) else None

    if name is not None:
        config = load_config(name)
        vision = is_vision(config)
        if vision:
            from transformers import AutoModelForImageTextToText as model_class
            from transformers import AutoProcessor

            if processor is None:
                try:
                    processor = AutoProcessor.from_pretrained(name)
                except Exception as e:
                    raise LoadError(f"cannot load a processor from {name!r}: {e}") from None
            if tokenizer is None:
                tokenizer = getattr(processor, "tokenizer", None)
        else:
            from transformers import AutoModelForCausalLM as model_class
        if tokenizer is None or isinstance(tokenizer, (str, Path)):
            tokenizer = _load_tokenizer(str(tokenizer) if tokenizer is not None else name)
        try:
            model = model_class.from_pretrained(name, dtype=dtype)
        except Exception as e:
            kind = "an image-text-to-text model" if vision else "a causal LM"
            raise LoadError(f"cannot load a model ({kind}) from {name!r}: {e}") from None
    else:
        model = path_or_model
        if model is None:
            raise LoadError("no model given (a path, hub id or loaded model)")
        if tokenizer is None:
            raise LoadError("a model given loaded needs its tokenizer")
        if isinstance(tokenizer, (str, Path)):
            tokenizer = _load_tokenizer(str(tokenizer))
        vision = is_vision(model)
        current = _weights_dtype(model)
        if current is not None and current.is_floating_point and current != dtype:
            model = model.to(dtype)

    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    if purpose == "generate":
        tokenizer.padding_side = "left"
        model = model.to(dev)
        model.eval()
    return LoadedModel(
        model=model, tokenizer=tokenizer, processor=processor, device=_weights_device(model),
        dtype=_weights_dtype(model) or dtype, eos_ids=_eos_ids(model, tokenizer), pad_id=tokenizer.pad_token_id,
        context=model_context(model), vision=vision,
    )


def _load_tokenizer(path: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as e:
        raise LoadError(f"cannot load a tokenizer from {path!r}: {e}") from None

