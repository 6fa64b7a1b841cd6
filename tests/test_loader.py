"""The one model loader (core.loader) on real tiny models saved to disk: dtype, device, padding
side, pad/EOS ids, context, already-loaded models, errors, and a Gemma3-shaped VLM told apart."""

import json

import pytest

from core.loader import LoadError, choose_dtype, is_vision, load_config, load_model, model_context
from tests.models import build_tiny_model


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("loader") / "llama", max_positions=640)


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("loader") / "gpt2", family="gpt2", max_positions=384)


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory):
    """A ~60k-parameter Gemma3-shaped image-text-to-text model with its processor, saved."""
    from transformers import (
        AutoTokenizer,
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessorPil,
        Gemma3Processor,
        PreTrainedTokenizerFast,
    )

    out = tmp_path_factory.mktemp("loader") / "gemma3"
    text = build_tiny_model(tmp_path_factory.mktemp("loader") / "text")
    base = AutoTokenizer.from_pretrained(text)
    base.add_special_tokens({"additional_special_tokens": ["<start_of_image>", "<end_of_image>", "<image_soft_token>"]})
    tok = PreTrainedTokenizerFast(
        tokenizer_object=base.backend_tokenizer, bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|pad|>",
        extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                              "image_token": "<image_soft_token>"},
    )
    ids = tok.convert_tokens_to_ids
    cfg = Gemma3Config(
        text_config={"vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16, "max_position_embeddings": 512,
                     "sliding_window": 64, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
                     "pad_token_id": tok.pad_token_id},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 64, "patch_size": 16},
        mm_tokens_per_image=4, boi_token_index=ids("<start_of_image>"), eoi_token_index=ids("<end_of_image>"),
        image_token_index=ids("<image_soft_token>"),
    )
    Gemma3ForConditionalGeneration(cfg).save_pretrained(out)
    Gemma3Processor(image_processor=Gemma3ImageProcessorPil(size={"height": 64, "width": 64}), tokenizer=tok,
                    image_seq_length=4).save_pretrained(out)
    return out


def test_a_saved_causal_lm_for_generation(tiny_dir):
    import torch

    lm = load_model(str(tiny_dir), device="cpu")
    assert lm.device == "cpu" and lm.dtype == torch.float32 and next(lm.model.parameters()).dtype == torch.float32
    assert not lm.vision and lm.processor is None and type(lm.model).__name__ == "LlamaForCausalLM"
    assert lm.tokenizer.padding_side == "left" and not lm.model.training
    assert lm.pad_id == lm.tokenizer.pad_token_id == lm.tokenizer.convert_tokens_to_ids("<|pad|>")
    assert lm.eos_ids == {lm.tokenizer.eos_token_id}
    assert lm.context == 640 == model_context(lm.model) == model_context(lm.model.config)
    # "auto" on this machine is CPU unless CUDA is there
    assert load_model(tiny_dir, device="auto").device.startswith("cuda" if torch.cuda.is_available() else "cpu")


def test_training_keeps_float32_and_the_padding_side(tiny_dir):
    import torch

    lm = load_model(tiny_dir, device="cpu", purpose="train")
    assert lm.dtype == torch.float32 and lm.tokenizer.padding_side == "right"  # TRL's collators pad for themselves
    assert choose_dtype("cpu") == torch.float32 and choose_dtype("cuda", "train") == torch.float32


def test_bf16_on_a_gpu_that_supports_it(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert choose_dtype("cuda") == torch.bfloat16 and choose_dtype("cuda:1") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert choose_dtype("cuda") == torch.float32


def test_pad_falls_back_to_eos_and_eos_ids_come_from_the_generation_config(tiny_dir, tmp_path):
    import shutil

    from transformers import AutoTokenizer, GenerationConfig

    d = tmp_path / "nopad"
    shutil.copytree(tiny_dir, d)
    tok = AutoTokenizer.from_pretrained(d)
    eos = tok.eos_token_id
    tc = json.loads((d / "tokenizer_config.json").read_text())
    tc.pop("pad_token", None)
    (d / "tokenizer_config.json").write_text(json.dumps(tc))
    assert AutoTokenizer.from_pretrained(d).pad_token is None
    GenerationConfig(eos_token_id=[eos, 7]).save_pretrained(d)
    lm = load_model(d, device="cpu")
    assert lm.tokenizer.pad_token == lm.tokenizer.eos_token and lm.pad_id == eos
    assert lm.eos_ids == {eos, 7}


def test_context_of_a_gpt2_config_and_an_already_loaded_model(gpt2_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert load_model(gpt2_dir, device="cpu").context == 384  # n_positions
    model = AutoModelForCausalLM.from_pretrained(gpt2_dir, dtype=torch.bfloat16)
    tok = AutoTokenizer.from_pretrained(gpt2_dir)
    lm = load_model(model, tokenizer=tok, device="cpu", purpose="train")
    assert lm.model is model and lm.tokenizer is tok and lm.dtype == torch.float32  # the one rule, also for a given model
    assert lm.context == 384 and lm.eos_ids == {tok.eos_token_id}
    with pytest.raises(LoadError, match="needs its tokenizer"):
        load_model(model)
    assert load_model(model, tokenizer=str(gpt2_dir), device="cpu").tokenizer.padding_side == "left"


def test_errors_name_the_path(tiny_dir, tmp_path):
    import shutil

    import torch

    with pytest.raises(LoadError, match="cannot load a model from .*nowhere"):
        load_model(tmp_path / "nowhere")
    d = tmp_path / "no-tokenizer"
    d.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_dir / name, d / name)
    with pytest.raises(LoadError, match="cannot load a tokenizer from .*no-tokenizer"):
        load_model(d)
    d2 = tmp_path / "no-weights"
    shutil.copytree(tiny_dir, d2)
    (d2 / "model.safetensors").unlink()
    with pytest.raises(LoadError, match="cannot load a model .*no-weights"):
        load_model(d2)
    if not torch.cuda.is_available():
        with pytest.raises(LoadError, match="CUDA is not available"):
            load_model(tiny_dir, device="cuda")


def test_callers_translate_load_errors(tmp_path):
    from core.samplers.base import SamplerError
    from core.samplers.transformers import TransformersSampler
    from core.steps.attractor import AttractorError
    from core.steps.attractor import load_model as attractor_load
    from core.steps.train import _load

    with pytest.raises(SamplerError, match="cannot load a model from"):
        TransformersSampler(str(tmp_path / "nowhere"), "cpu")
    with pytest.raises(AttractorError, match="cannot load a model from"):
        attractor_load(str(tmp_path / "nowhere"), "cpu")
    with pytest.raises(ValueError, match="train_dpo: cannot load a model from"):
        _load(str(tmp_path / "nowhere"), None, "train_dpo", "cpu")


def test_a_gemma3_shaped_vlm_is_vision_and_never_a_causal_lm(vlm_dir, tiny_dir, monkeypatch):
    import transformers
    from transformers import Gemma3Config, LlamaConfig

    from core.samplers.transformers import TransformersSampler

    assert is_vision(load_config(vlm_dir)) and is_vision(Gemma3Config())
    assert not is_vision(load_config(tiny_dir)) and not is_vision(LlamaConfig())
    assert is_vision(LlamaConfig(architectures=["LlavaForConditionalGeneration"]))  # named by its architecture

    def refuse(*a, **k):
        raise AssertionError("a vision model was loaded with AutoModelForCausalLM")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    lm = load_model(vlm_dir, device="cpu")
    assert lm.vision and type(lm.model).__name__ == "Gemma3ForConditionalGeneration"
    assert type(lm.processor).__name__ == "Gemma3Processor" and lm.tokenizer is lm.processor.tokenizer
    assert lm.context == 512  # from the text config
    assert lm.tokenizer.padding_side == "left" and lm.pad_id == lm.tokenizer.pad_token_id is not None
    assert lm.eos_ids == {lm.tokenizer.eos_token_id}
    assert TransformersSampler(str(vlm_dir), "cpu").vision  # the sampler feeds it pages (tests/test_vision.py)
