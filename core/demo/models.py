"""The embedded demo's tiny model families, built on CPU from a seed.

Per family (GPT-2-, Llama- and Qwen2-shaped transformers configs of about 1–2M parameters):

1. a byte-level BPE tokenizer trained locally with ``tokenizers`` (every digit its own token),
   wrapped as a ``PreTrainedTokenizerFast`` (bos/eos ``<|endoftext|>``, pad ``<|pad|>``);
2. *vanilla*: a fresh model pretrained briefly on generic pt_BR text (Faker prose, addresses,
   lists of names and prices; not the task format) — through the same ``core.train.train_sft``;
3. *SFT*: fine-tuned from vanilla on the demo task's train split with TRL's ``SFTTrainer``
   (prompt = document text + instruction, completion = the JSON transcription), short documents
   first, stopped inside the window where greedy decoding still loops on some held-out documents
   (DESIGN.md, "What the demo experiment showed"): those loops are what the rest of the app mines;
4. evaluation of the saved SFT model on the validation split under the default evaluation
   decoding (greedy, ``max_new_tokens`` covering the longest reference plus a margin, saved as the
   model's ``generation_config``), through the product's own path: decoded by
   ``core.samplers.transformers.TransformersSampler`` (loaded by ``core.loader``), scored with
   ``core.policy.metrics.quality`` ((Levenshtein ratio + BLEU-4)/2) and ``core.policy.detect.analyze``.

``build_demo_models`` writes ``<out>/<family>/{vanilla,sft}/`` (``save_pretrained``, loadable with
``AutoModelForCausalLM``/``AutoTokenizer``), the runs' ``metrics.jsonl`` and ``<out>/manifest.json``.
``measure_demo_models`` re-measures saved SFT models the same way without retraining (it rewrites
the manifest's ``validation`` and ``runs/sft/{evaluation.json,validation_outputs.jsonl}``).
``register_demo_models`` puts them into a workspace's models table (family, stage, parent).

Measured for the shipped build (seed 0, built with OMP_NUM_THREADS=1 on the shared 2-core box;
re-measured 2026-12 through the product's sampler by ``measure_demo_models``, one thread;
100 validation documents, greedy, max_new_tokens 736; "hit limit" = no EOS before the limit):

    family  params  SFT steps  quality  degenerate (core.detect)  hit limit  valid JSON
    llama   1.18M   175        0.322    3/100  (95% CI 1.0–8.5%)  32/100     14/100
    qwen2   1.02M   205        0.365    13/100 (95% CI 7.8–21%)   67/100     20/100
    gpt2    1.12M   250        0.230    19/100 (95% CI 13–28%)    78/100     22/100

(The build's own figures, from its former generation loop in the build environment, were
0.315 4/100, 0.360 14/100, 0.234 22/100; that loop run today gives the sampler's outputs exactly,
so the difference is the environment's floating point, not the measurement.)
(degeneration measured with the current detector, which masks numbers with their inner separators
and so counts the templated item-row loops.) The loop window is narrow and not monotonic in the SFT
budget: qwen2 at 200/205/210/215/225/240 steps looped on 42/14/9/0/5/2 of 100 validation documents
(quality 0.360/0.360/0.419/0.302/0.319/0.393; the sweep's own measurement), so a family's ``sft_steps`` is picked from such a
sweep (``DemoBuildConfig.sft_steps`` overrides it per family).

At this budget the models have learned the JSON layout and the vocabulary but do not yet copy
values from the input; most outputs that hit the limit are item tables cycling over two or three
invented rows, of which the detector counts only the strictly periodic tails. A rebuild with a
different thread count changes float reductions and therefore the exact numbers.
"""
from __future__ import annotations

import dataclasses
import json
import math
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from core.demo.docs import PRODUCTS, build_demo_records, format_brl
from core.policy.prompts import DEFAULT_INSTRUCTION, build_prompt, completion_for
from core.steps.train import SFTRunConfig, train_sft

__all__ = [
    "DEFAULT_MODELS_DIR",
    "DEMO_MAX_ITEMS",
    "FAMILIES",
    "DemoBuildConfig",
    "FamilySpec",
    "build_demo_models",
    "evaluate_model",
    "load_manifest",
    "measure_demo_models",
    "make_model",
    "register_demo_models",
    "train_demo_tokenizer",
    "vanilla_corpus",
]

DEFAULT_MODELS_DIR = Path(__file__).resolve().parents[2] / "data" / "models"  # the repo root's data/models
DEMO_MAX_ITEMS = 12  # invoice tables of the demo models' documents: 1..12 items
EOS = "<|endoftext|>"
PAD = "<|pad|>"


# --------------------------------------------------------------------------- families


@dataclass
class FamilySpec:
    """A model family: an architecture and its size, plus its SFT budget."""

    name: str
    model_type: str  # transformers config class key: gpt2, llama, qwen2
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int | None = None
    intermediate_size: int = 512
    sft_steps: int = 175  # inside the loop window (see module doc)
    sft_learning_rate: float = 2e-3
    vision: bool = False  # a vision-language model that reads the page image only (core.demo.vlm)
    image_size: int = 256  # vision: the square the page is scaled to
    patch_size: int = 16
    image_tokens: int = 64  # vision: tokens per page (must divide the patch grid evenly)
    vision_hidden_size: int = 64
    vision_layers: int = 2
    vanilla_steps: int | None = None  # None: the build's vanilla_steps (vision: caption pretraining steps)
    vanilla_batch_size: int | None = None  # None: the build's batch size

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


FAMILIES: dict[str, FamilySpec] = {
    "llama": FamilySpec("llama", "llama", hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=4, intermediate_size=512, sft_steps=175),
    "qwen2": FamilySpec("qwen2", "qwen2", hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=448, sft_steps=205),
    "gpt2": FamilySpec("gpt2", "gpt2", hidden_size=128, num_layers=4, num_heads=4, intermediate_size=512, sft_steps=250),
    "gemma3": FamilySpec("gemma3", "gemma3", hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=448,
                         sft_steps=200, vision=True, vanilla_steps=300, vanilla_batch_size=16),
}


def make_model(spec: FamilySpec, tokenizer, max_positions: int, seed: int = 0):
    """A freshly initialised model of the family's shape, sized to ``tokenizer`` (a VLM: core.demo.vlm)."""
    if spec.vision:
        from core.demo.vlm import make_vlm

        return make_vlm(spec, tokenizer, max_positions, seed)
    import torch
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    torch.manual_seed(seed)
    ids = dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if spec.model_type == "gpt2":
        cfg = GPT2Config(
            n_embd=spec.hidden_size, n_layer=spec.num_layers, n_head=spec.num_heads, n_inner=spec.intermediate_size,
            n_positions=max_positions, tie_word_embeddings=True, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
            **ids,
        )  # no dropout: at this size it only costs time (a quarter of GPT-2's CPU step) and slows learning
        return GPT2LMHeadModel(cfg)
    common = dict(
        hidden_size=spec.hidden_size, num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads or spec.num_heads, intermediate_size=spec.intermediate_size,
        max_position_embeddings=max_positions, tie_word_embeddings=True, **ids,
    )
    if spec.model_type == "llama":
        return LlamaForCausalLM(LlamaConfig(**common))
    if spec.model_type == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**common))
    raise ValueError(f"unknown model_type {spec.model_type!r}")


# --------------------------------------------------------------------------- build config


@dataclass
class DemoBuildConfig:
    """How the demo families are built. Defaults are the shipped build."""

    seed: int = field(default=0, metadata={"help": "Seed for documents, tokenizer corpus, weights and data order."})
    families: list[str] = field(default_factory=lambda: list(FAMILIES), metadata={"help": "Families to build."})
    vocab_size: int = field(default=1024, metadata={"help": "BPE vocabulary size (digits are always single tokens)."})
    n_train: int = field(default=600, metadata={"help": "Demo train documents for SFT."})
    n_validation: int = field(default=100, metadata={"help": "Validation documents for the quality/degeneration report."})
    max_items: int = field(default=DEMO_MAX_ITEMS, metadata={"help": "Largest invoice table (items) of the build's documents."})
    noise: float = field(default=0.3, metadata={"help": "OCR noise of the input text (0..1)."})
    max_positions: int = field(default=1536, metadata={"help": "Context length of the models."})
    n_vanilla_texts: int = field(default=2000, metadata={"help": "Generic pt_BR texts for vanilla pretraining."})
    vanilla_steps: int = field(default=60, metadata={"help": "Vanilla pretraining steps."})
    vanilla_max_length: int = field(default=128, metadata={"help": "Token length of vanilla pretraining examples."})
    vanilla_learning_rate: float = field(default=3e-3, metadata={"help": "Vanilla pretraining learning rate."})
    batch_size: int = field(default=8, metadata={"help": "Batch size of both stages."})
    group_by_length: bool = field(default=False, metadata={"help": "SFT batches of similar length after the first pass (1.3x fewer tokens processed at batch 16; changes the data order, so off for the shipped build)."})
    sft_lr_scheduler: str = field(default="constant_with_warmup", metadata={"help": "SFT learning-rate schedule (constant: a checkpoint at step s equals a run of s steps)."})
    sft_steps: dict[str, int] | None = field(default=None, metadata={"help": "Per-family SFT steps overriding FAMILIES."})
    eval_batch_size: int = field(default=20, metadata={"help": "Documents decoded together during evaluation."})
    max_new_tokens: int | None = field(default=None, metadata={"help": "Evaluation limit; None = longest validation reference + 25%."})
    spec_overrides: dict[str, dict] | None = field(default=None, metadata={"help": "Per-family FamilySpec field overrides (tests)."})

    def spec(self, family: str) -> FamilySpec:
        base = FAMILIES[family]
        over = dict((self.spec_overrides or {}).get(family, {}))
        if self.sft_steps and family in self.sft_steps:
            over["sft_steps"] = self.sft_steps[family]
        return dataclasses.replace(base, **over) if over else base

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- data


def demo_records(cfg: DemoBuildConfig, images_dir: Path | None = None) -> list[dict]:
    """The build's documents (train + validation; no test split is used here), with their page
    images rendered into ``images_dir`` when given (the VLM family reads them)."""
    return build_demo_records(
        seed=cfg.seed, n_train=cfg.n_train, n_validation=cfg.n_validation, n_test=0,
        noise=cfg.noise, max_items=cfg.max_items, images_dir=images_dir,
    )


def vanilla_corpus(n: int, seed: int = 0) -> list[str]:
    """Generic pt_BR text: prose, addresses, lists of people/companies/products with prices and
    dates. Deliberately not the task format (no key:value lines, no JSON)."""
    from faker import Faker

    fake = Faker("pt_BR")
    fake.seed_instance(seed)
    rng = random.Random(seed)
    out: list[str] = []
    for i in range(n):
        k = i % 6
        if k == 0:
            out.append(fake.text(max_nb_chars=rng.choice([200, 300, 400])))
        elif k == 1:
            out.append(f"{fake.name()} mora em {fake.address()}. Telefone {fake.phone_number()}.")
        elif k == 2:
            names = [fake.name() if rng.random() < 0.5 else fake.company() for _ in range(rng.randint(3, 8))]
            out.append("Lista: " + "; ".join(names) + ".")
        elif k == 3:
            items = [f"{rng.choice(PRODUCTS)} por R$ {format_brl(rng.uniform(0.5, 300))}" for _ in range(rng.randint(2, 6))]
            out.append("Compramos " + ", ".join(items) + f" em {fake.date(pattern='%d/%m/%Y')}.")
        elif k == 4:
            out.append(
                f"A empresa {fake.company()} (CNPJ {fake.cnpj()}) fica em {fake.city()} - {fake.estado_sigla()}, "
                f"CEP {fake.postcode()}. {fake.sentence()}"
            )
        else:
            out.append(f"{fake.name()}, CPF {fake.cpf()}, nasceu em {fake.date(pattern='%d/%m/%Y')}. {fake.paragraph()}")
    return out


def train_demo_tokenizer(texts: Iterable[str], vocab_size: int = 1024):
    """Byte-level BPE with every digit its own token, as a ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS, PAD], min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=None, pad_token=PAD,
        clean_up_tokenization_spaces=False, model_max_length=4096,
    )


def curriculum(records: Sequence[dict], n_examples: int, seed: int, tokenizer=None, batch_size: int = 0) -> list[dict]:
    """Training order: one pass short documents first (by length), then shuffled passes, cut to
    ``n_examples`` (= steps x batch). With ``batch_size``, each shuffled pass is grouped into
    batches of similar length (windows of 8 batches sorted by length, the batches then shuffled),
    which cuts the padded tokens of the demo's train split from 1.54x to 1.18x the real ones at
    batch 16 (1.37x to 1.06x at batch 8). The order never depends on ``n_examples``, so
    a run of s steps sees exactly the first s batches of a longer run."""
    rng = random.Random(seed)

    def size(r: dict) -> int:
        return len(r["text"]) + len(r["reference"])

    first = sorted(records, key=lambda r: (size(r), r["id"]))
    out = list(first)
    while len(out) < n_examples:
        more = list(records)
        rng.shuffle(more)
        if batch_size > 1:
            window = batch_size * 8
            batches: list[list[dict]] = []
            for w in range(0, len(more), window):
                chunk = sorted(more[w : w + window], key=lambda r: (size(r), r["id"]))
                batches.extend(chunk[b : b + batch_size] for b in range(0, len(chunk), batch_size))
            rng.shuffle(batches)
            more = [r for b in batches for r in b]
        out.extend(more)
    return out[:n_examples]


# --------------------------------------------------------------------------- generation + evaluation


def evaluate_model(
    model, tokenizer, records: Sequence[dict], *, max_new_tokens: int, batch_size: int = 20,
    instruction: str = DEFAULT_INSTRUCTION, progress: Callable[[int], None] | None = None,
    keep_outputs: bool = False, device: str = "cpu", pages: Sequence | None = None,
) -> dict:
    """Quality and degeneration rate of greedy outputs on ``records`` (items with a reference),
    measured the way the product's evaluation measures them: decoded by
    ``core.samplers.transformers.TransformersSampler`` (``model`` is a saved model's path, with
    ``tokenizer`` None, or a loaded model with its tokenizer), scored with ``core.policy.detect.analyze``,
    ``core.policy.metrics.quality`` and ``core.steps.evaluate.wilson_interval``. Documents are
    decoded ``batch_size`` at a time, shortest prompts first (less padding); ``n_tokens`` counts
    the EOS token of an output that stopped, as the sampler does. A vision model reads each record's
    page (``record["image"]``, or ``pages[i]`` — e.g. blank pages, to see what the page is worth)."""
    from core.policy.detect import analyze
    from core.policy.metrics import quality
    from core.samplers.base import DecodingConfig, ItemSkipped, Request
    from core.samplers.transformers import TransformersSampler
    from core.steps.evaluate import wilson_interval

    if hasattr(model, "format_prompt"):  # a sampler already made
        sampler = model
    else:
        sampler = TransformersSampler(str(model) if isinstance(model, Path) else model, device, tokenizer=tokenizer)
    sampler.max_batch_rows = max(sampler.max_batch_rows, batch_size)
    decoding = DecodingConfig(n=0, with_greedy=True, max_new_tokens=max_new_tokens, early_stop=False)
    if sampler.vision:
        from core.images import load_image

        prompts = [sampler.format_image_prompt(instruction, "auto")] * len(records)
        images = list(pages) if pages is not None else [load_image(r["image"]) for r in records]
        order = list(range(len(records)))
    else:
        prompts = [sampler.format_prompt(build_prompt(r["text"], instruction), "auto") for r in records]
        images = [None] * len(records)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    outs: list[dict | None] = [None] * len(records)
    for b in range(0, len(order), max(1, batch_size)):
        idx = order[b : b + batch_size]
        results = sampler.generate([Request(prompts[i], 1, True, 0, images[i]) for i in idx], decoding)
        for i, res in zip(idx, results):
            if isinstance(res, ItemSkipped):
                raise ValueError(f"document {records[i].get('id')!r} cannot be evaluated: {res}")
            g = res[0]
            outs[i] = {"text": g.text, "finish_reason": g.finish_reason, "n_tokens": g.n_tokens}
        if progress:
            progress(len(idx))
    qs, degen, lengths, valid_json = [], [], [], 0
    rows = []
    for r, o in zip(records, outs):
        text = o["text"].strip()
        q = quality(text, r["reference"].strip())
        d = bool(analyze(o["text"], o["finish_reason"]).degenerate)
        try:
            json.loads(text)
            valid_json += 1
        except ValueError:
            pass
        qs.append(q)
        degen.append(d)
        lengths.append(o["n_tokens"])
        rows.append({"id": r["id"], "n_items": r.get("n_items"), "quality": round(q, 4), "degenerate": d, **o})
    n = len(records)
    k = sum(degen)
    lo, hi = wilson_interval(k, n)
    summary = {
        "n": n,
        "quality": round(sum(qs) / n, 4) if n else None,
        "quality_non_degenerate": round(sum(q for q, d in zip(qs, degen) if not d) / max(1, n - k), 4),
        "degenerate": k,
        "degeneration_rate": round(k / n, 4) if n else None,
        "degeneration_ci95": [round(lo, 4), round(hi, 4)],
        "hit_limit": sum(o["finish_reason"] == "length" for o in outs),
        "valid_json": valid_json,
        "mean_new_tokens": round(sum(lengths) / n, 1) if n else None,
        "decoding": {"do_sample": False, "max_new_tokens": max_new_tokens, "sampler": sampler.name},
    }
    if keep_outputs:
        summary["outputs"] = rows
    return summary


def _write_evaluation(fam_dir: Path, ev: dict) -> dict:
    """``runs/sft/validation_outputs.jsonl`` (one row per document) and ``runs/sft/evaluation.json``;
    returns the summary without its outputs."""
    ev = dict(ev)
    outputs = ev.pop("outputs", None)
    run = fam_dir / "runs" / "sft"
    run.mkdir(parents=True, exist_ok=True)
    if outputs is not None:
        with (run / "validation_outputs.jsonl").open("w", encoding="utf-8") as fh:
            for row in outputs:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    (run / "evaluation.json").write_text(json.dumps(ev, indent=2))
    return ev


def _validation_records(cfg: DemoBuildConfig, images_dir: Path | None = None) -> list[dict]:
    return [r for r in demo_records(cfg, images_dir) if r["split"] == "validation"]


def _manifest_build_config(manifest: dict) -> DemoBuildConfig:
    known = {f.name for f in dataclasses.fields(DemoBuildConfig)}
    return DemoBuildConfig(**{k: v for k, v in (manifest.get("build_config") or {}).items() if k in known})


def measure_demo_models(
    models_dir: Path | str | None = None, families: Sequence[str] | None = None, *, device: str = "cpu",
    quiet: bool = False, log: Callable[[str], None] | None = None,
) -> dict[str, dict]:
    """Re-measure the shipped SFT models without retraining: each family's saved ``sft`` model on
    the build's validation documents (the manifest's ``build_config`` and ``max_new_tokens``),
    through :func:`evaluate_model`. Rewrites ``validation`` in the manifest and the family's
    ``runs/sft/evaluation.json`` + ``validation_outputs.jsonl``. Returns {family: {"old", "new"}}."""
    out = Path(models_dir) if models_dir is not None else DEFAULT_MODELS_DIR
    say = log or (lambda s: None if quiet else print(s, file=sys.stderr, flush=True))
    manifest = load_manifest(out)
    if not manifest:
        raise FileNotFoundError(f"no manifest.json in {out}: build the demo models first")
    import tempfile

    cfg = _manifest_build_config(manifest)
    pages = Path(tempfile.mkdtemp(prefix="loopbreak-demo-pages-"))
    val = _validation_records(cfg, pages)
    max_new = int(manifest["max_new_tokens"])
    families = list(families or manifest.get("families", {}))
    result: dict[str, dict] = {}
    for family in families:
        entry = manifest.get("families", {}).get(family)
        if entry is None or not (out / family / "sft" / "config.json").exists():
            raise FileNotFoundError(f"demo family {family!r} is not built in {out}")
        t0 = time.time()
        ev = evaluate_model(out / family / "sft", None, val, max_new_tokens=max_new, batch_size=cfg.eval_batch_size,
                            keep_outputs=True, device=device)
        ev = _write_evaluation(out / family, ev)
        _update_manifest(out, {}, {family: {**entry, "validation": ev}})
        result[family] = {"old": entry.get("validation"), "new": ev}
        say(f"{family:<6} quality {ev['quality']:.3f}  degenerate {ev['degenerate']}/{ev['n']}  hit limit "
            f"{ev['hit_limit']}/{ev['n']}  valid JSON {ev['valid_json']}/{ev['n']}  [{time.time() - t0:.0f}s]")
    shutil.rmtree(pages, ignore_errors=True)
    return result


# --------------------------------------------------------------------------- build


def _bar(total: int, desc: str, disable: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, disable=disable, unit="step", dynamic_ncols=True)


def _save_generation_config(path: Path, tokenizer, max_new_tokens: int) -> None:
    from transformers import GenerationConfig

    GenerationConfig(
        do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
    ).save_pretrained(str(path))


def _dir_mb(path: Path) -> float:
    return round(sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) / 1e6, 2)


def build_demo_models(
    out_dir: Path | str | None = None,
    config: DemoBuildConfig | None = None,
    *,
    quiet: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Build every family of ``config`` into ``out_dir`` and return the manifest (also written
    to ``<out_dir>/manifest.json``; an existing manifest's other families are kept)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one tqdm bar per family instead of load/save bars
    cfg = config or DemoBuildConfig()
    out = Path(out_dir) if out_dir is not None else DEFAULT_MODELS_DIR
    out.mkdir(parents=True, exist_ok=True)
    say = log or (lambda s: None if quiet else print(s, file=sys.stderr, flush=True))
    unknown = [f for f in cfg.families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown families {unknown}; known: {', '.join(FAMILIES)}")
    t_all = time.time()

    pages = None
    if any(cfg.spec(f).vision for f in cfg.families):
        import tempfile

        pages = Path(tempfile.mkdtemp(prefix="loopbreak-demo-pages-"))
    records = demo_records(cfg, pages)
    train = [r for r in records if r["split"] == "train"]
    val = [r for r in records if r["split"] == "validation"]  # = _validation_records(cfg)
    corpus = vanilla_corpus(cfg.n_vanilla_texts, cfg.seed)
    tokenizer = train_demo_tokenizer(
        corpus + [r["text"] for r in train] + [r["reference"] for r in train], cfg.vocab_size
    )
    ref_tokens = max(len(tokenizer(completion_for(r["reference"]), add_special_tokens=False)["input_ids"]) for r in val)
    max_new = cfg.max_new_tokens or int(math.ceil(ref_tokens * 1.25 / 32) * 32)

    header = {"seed": cfg.seed, "build_config": cfg.to_dict(), "max_new_tokens": max_new}
    built: dict[str, dict] = {}

    for family in cfg.families:
        spec = cfg.spec(family)
        fam_dir = out / family
        if fam_dir.exists():
            shutil.rmtree(fam_dir)
        t_fam = time.time()
        # vanilla: generic pt_BR text; for the VLM, caption pretraining on the pages (core.demo.vlm)
        tok, processor = tokenizer, None
        if spec.vision:
            from core.demo.vlm import caption, make_processor, vlm_tokenizer

            tok = vlm_tokenizer(tokenizer)
            processor = make_processor(tok, spec.image_size, spec.image_tokens)
        model = make_model(spec, tok, cfg.max_positions, seed=cfg.seed)
        n_params = sum(p.numel() for p in model.parameters())
        v_steps = spec.vanilla_steps or cfg.vanilla_steps
        vcfg = SFTRunConfig(
            learning_rate=cfg.vanilla_learning_rate if not spec.vision else spec.sft_learning_rate, max_steps=v_steps,
            per_device_train_batch_size=spec.vanilla_batch_size or cfg.batch_size,
            max_length=None if spec.vision else cfg.vanilla_max_length,
            warmup_steps=min(10, v_steps // 5), seed=cfg.seed, logging_steps=10, device="cpu",
        )
        total = v_steps + spec.sft_steps + len(val)
        with _bar(total, f"{family}", quiet) as bar:
            bar.set_postfix_str("vanilla")
            last = [0]

            def step(s: int, _m: int, last=last, bar=bar) -> None:
                bar.update(s - last[0])
                last[0] = s

            vanilla_data = ([{"completion": caption(r), "image": r["image"]} for r in train] if spec.vision
                            else [{"text": t} for t in corpus])
            train_sft(
                vcfg, vanilla_data, fam_dir / "vanilla", model=model, tokenizer=tok, processor=processor,
                run_dir=fam_dir / "runs" / "vanilla", progress=step,
            )
            _save_generation_config(fam_dir / "vanilla", tok, max_new)
            # SFT from vanilla
            last[0] = 0
            bar.set_postfix_str("sft")
            scfg = SFTRunConfig(
                learning_rate=spec.sft_learning_rate, max_steps=spec.sft_steps,
                per_device_train_batch_size=cfg.batch_size, max_length=cfg.max_positions,
                warmup_steps=10, lr_scheduler_type=cfg.sft_lr_scheduler, seed=cfg.seed, shuffle=False, logging_steps=10, device="cpu",
            )
            ordered = curriculum(train, spec.sft_steps * cfg.batch_size, cfg.seed, batch_size=cfg.batch_size if cfg.group_by_length else 0)
            res = train_sft(
                scfg, ordered, fam_dir / "sft", model=str(fam_dir / "vanilla"), tokenizer=None if spec.vision else tokenizer,
                run_dir=fam_dir / "runs" / "sft", progress=step,
            )
            _save_generation_config(fam_dir / "sft", tok, max_new)
            # evaluate the saved SFT model, as others will load it: through the product's sampler
            bar.set_postfix_str("eval")
            ev = evaluate_model(
                fam_dir / "sft", None, val, max_new_tokens=max_new, batch_size=cfg.eval_batch_size,
                progress=bar.update, keep_outputs=True, device="cpu",
            )
        ev = _write_evaluation(fam_dir, ev)
        for sub in ("vanilla", "sft"):
            shutil.rmtree(fam_dir / sub / "trainer", ignore_errors=True)
        entry = {
            "family": family,
            "architecture": spec.model_type,
            "vision": spec.vision,
            "spec": spec.to_dict(),
            "n_params": n_params,
            "vanilla": {"path": f"{family}/vanilla", "name": f"demo-{family}-vanilla", "size_mb": _dir_mb(fam_dir / "vanilla")},
            "sft": {
                "path": f"{family}/sft", "name": f"demo-{family}-sft", "parent": f"demo-{family}-vanilla",
                "steps": res.global_step, "train_loss": res.train_loss, "size_mb": _dir_mb(fam_dir / "sft"),
            },
            "validation": ev,
            "build_seconds": round(time.time() - t_fam, 1),
        }
        built[family] = entry
        _update_manifest(out, header, {family: entry})
        say(
            f"{family:<6} {spec.model_type} {n_params / 1e6:.2f}M params  SFT {res.global_step} steps  "
            f"validation quality {ev['quality']:.3f}  degeneration {ev['degenerate']}/{ev['n']} "
            f"({100 * ev['degeneration_rate']:.1f}%, 95% CI {100 * ev['degeneration_ci95'][0]:.1f}–"
            f"{100 * ev['degeneration_ci95'][1]:.1f}%)  valid JSON {ev['valid_json']}/{ev['n']}  "
            f"[{entry['build_seconds']:.0f}s]"
        )
    if pages is not None:
        shutil.rmtree(pages, ignore_errors=True)
    return _update_manifest(out, {**header, "build_seconds": round(time.time() - t_all, 1)}, {})


def _update_manifest(out: Path, header: dict, families: dict) -> dict:
    """Merge into ``<out>/manifest.json`` under a lock, so builds of different families can run
    side by side into one folder."""
    import fcntl
    import hashlib
    import tempfile

    key = hashlib.sha1(str(out.resolve()).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"loopbreak-manifest-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        manifest = load_manifest(out) or {}
        manifest.update(header)
        manifest.setdefault("families", {}).update(families)
        tmp = out / "manifest.json.tmp"
        tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
        tmp.replace(out / "manifest.json")
    return manifest


def load_manifest(models_dir: Path | str | None = None) -> dict | None:
    p = Path(models_dir if models_dir is not None else DEFAULT_MODELS_DIR) / "manifest.json"
    if not p.exists():
        return None
    return json.loads(p.read_text())


def _family_present(models_dir: Path, family: str) -> bool:
    return all((models_dir / family / st / "config.json").exists() for st in ("vanilla", "sft"))


def register_demo_models(ws, models_dir: Path | str | None = None, *, build_missing: bool = True, quiet: bool = False) -> list[str]:
    """Register every demo family's vanilla and SFT model in the workspace's models table
    (family, stage, parent = the vanilla model for SFT). Builds them first if they are missing.
    Returns the registered names."""
    from core.store.models import register_model

    models_dir = Path(models_dir) if models_dir is not None else DEFAULT_MODELS_DIR
    manifest = load_manifest(models_dir)
    listed = list((manifest or {}).get("families", {}) or FAMILIES)
    families = [f for f in FAMILIES if f in listed] + [f for f in listed if f not in FAMILIES]
    missing = [f for f in families if not _family_present(models_dir, f)]
    if missing or manifest is None:
        if not build_missing:
            raise FileNotFoundError(f"demo models missing in {models_dir}: {', '.join(missing or families)}")
        cfg = DemoBuildConfig(families=missing or families)
        if manifest and manifest.get("build_config"):
            cfg = _manifest_build_config(manifest)
            cfg.families = missing or families
        build_demo_models(models_dir, cfg, quiet=quiet)
        manifest = load_manifest(models_dir) or {"families": {}}
    names: list[str] = []
    cur = ws.cursor()
    try:
        for family in families:
            entry = manifest["families"].get(family, {})
            vname, sname = f"demo-{family}-vanilla", f"demo-{family}-sft"
            common = {"architecture": entry.get("architecture"), "n_params": entry.get("n_params"), "demo": True,
                      "vision": bool(entry.get("vision"))}
            names.append(register_model(
                cur, name=vname, path=str((models_dir / family / "vanilla").resolve()), family=family, stage="vanilla",
                parent=None, config=common,
            ))
            names.append(register_model(
                cur, name=sname, path=str((models_dir / family / "sft").resolve()), family=family, stage="sft",
                parent=vname, config={**common, "sft_steps": entry.get("sft", {}).get("steps"), "validation": entry.get("validation")},
            ))
    finally:
        try:
            cur.close()
        except Exception:
            pass
    return names
