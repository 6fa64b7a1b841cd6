"""The demo's vision-language family: a tiny Gemma3-shaped VLM that reads the rendered page.

Gemma 3 is the shape that needs no torchvision here (``Gemma3ImageProcessorPil``); Qwen2.5-VL's
processor imports torchvision, whose PyPI build does not load beside CPU torch. The pieces:

* the demo's BPE tokenizer plus Gemma 3's three image tokens (``boi``/``eoi``/image soft token),
  named on the tokenizer so ``Gemma3Processor`` finds them;
* ``Gemma3ImageProcessorPil`` at ``image_size`` (the page is scaled to a square; every demo page has
  the same square size) and a ``Gemma3Processor`` with a chat template that renders the image
  part, the instruction, and ``JSON:`` as the generation prompt — the text families' prompt with
  the page in place of the OCR text;
* ``Gemma3ForConditionalGeneration`` with a SigLIP tower of two layers. Its projector starts at
  zero in transformers' init, which leaves the page invisible until the rest has learned without
  it; here it starts random, so the page is seen from the first step.

*Vanilla* is caption pretraining (what a real VLM brings from its pretraining): the page → its
kind and how many item rows it has, a short completion whose loss is all about the image. *SFT*
then learns the JSON transcription from the page alone.
"""

from __future__ import annotations

BOI, EOI, IMAGE = "<start_of_image>", "<end_of_image>", "<image_soft_token>"

CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['content'] is string %}{% set parts = [{'type': 'text', 'text': m['content']}] %}"
    "{% else %}{% set parts = m['content'] %}{% endif %}"
    "{% if m['role'] == 'user' %}"
    "{% for c in parts %}{% if c['type'] == 'image' %}{{ '<start_of_image>' }}"
    "{% elif c['type'] == 'text' %}{{ '\n\n' + c['text'] }}{% endif %}{% endfor %}"
    "{% else %}{% for c in parts %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{{ eos_token }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '\nJSON:' }}{% endif %}"
)


def vlm_tokenizer(tokenizer):
    """A copy of the demo tokenizer with Gemma 3's image tokens added and named (the text families'
    tokenizer is left as it was)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    inner = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    tok = PreTrainedTokenizerFast(
        tokenizer_object=inner, bos_token=tokenizer.bos_token, eos_token=tokenizer.eos_token, pad_token=tokenizer.pad_token,
        unk_token=None, clean_up_tokenization_spaces=False, model_max_length=tokenizer.model_max_length,
    )
    tok.add_tokens([BOI, EOI, IMAGE], special_tokens=True)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok.backend_tokenizer, bos_token=tok.bos_token, eos_token=tok.eos_token, pad_token=tok.pad_token,
        unk_token=None, clean_up_tokenization_spaces=False, model_max_length=tok.model_max_length,
        extra_special_tokens={"boi_token": BOI, "eoi_token": EOI, "image_token": IMAGE},
    )


def make_processor(tokenizer, image_size: int, image_tokens: int):
    from transformers import Gemma3ImageProcessorPil, Gemma3Processor

    images = Gemma3ImageProcessorPil(size={"height": image_size, "width": image_size}, image_mean=[1.0] * 3,
                                     image_std=[0.25] * 3, do_pan_and_scan=False)
    return Gemma3Processor(image_processor=images, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE, image_seq_length=image_tokens)


def make_vlm(spec, tokenizer, max_positions: int, seed: int = 0):
    """A freshly initialised Gemma3-shaped VLM of ``spec``'s size for ``tokenizer`` (from :func:`vlm_tokenizer`)."""
    import torch
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, SiglipVisionConfig

    torch.manual_seed(seed)
    ids = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
    text = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads or spec.num_heads, head_dim=spec.hidden_size // spec.num_heads,
        max_position_embeddings=max_positions, sliding_window=max_positions, tie_word_embeddings=True, **ids,
    )
    vision = SiglipVisionConfig(
        hidden_size=spec.vision_hidden_size, intermediate_size=4 * spec.vision_hidden_size, num_hidden_layers=spec.vision_layers,
        num_attention_heads=2, image_size=spec.image_size, patch_size=spec.patch_size,
    )
    config = Gemma3Config(
        text_config=text, vision_config=vision, mm_tokens_per_image=spec.image_tokens, boi_token_index=tokenizer.boi_token_id,
        eoi_token_index=tokenizer.eoi_token_id, image_token_index=tokenizer.image_token_id, tie_word_embeddings=True, **ids,
    )
    model = Gemma3ForConditionalGeneration(config)
    with torch.no_grad():  # transformers starts the projector at zero: the page would stay invisible for long
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0.0, spec.vision_hidden_size ** -0.5)
    return model


def caption(record: dict) -> str:
    """The caption pretraining target of a page: its kind and, for an invoice, its number of item rows."""
    if record.get("kind") == "invoice":
        return f" nota fiscal com {record['n_items']} itens"
    return " ficha cadastral"
