"""Training runs on top of TRL: the project's one training path.

A run is a config dataclass (defaults + a one-line help per field, the same object drives the UI
form and the CLI), a folder, and TRL underneath. The run's folder receives ``run_config.json``,
``metrics.jsonl`` (one JSON object per logging step, appended live so pages can chart it) and the
trained model + tokenizer (``save_pretrained``).

Device defaults are CPU-safe: on a machine without CUDA the TRL config gets ``use_cpu=True``,
``bf16=False`` and no gradient checkpointing (TRL's defaults are ~12x slower on CPU and its DPO
config raises on CPU without ``use_cpu``); on a GPU that supports it, bf16 is on.

SFT (``SFTRunConfig`` / ``train_sft``) and DPO (``DPORunConfig`` / ``train_dpo``) share
``TrainRunConfig``, ``device_kwargs`` and the callbacks. DPO applies the project's EOS rule: a
rejected completion cut at the length limit never emitted EOS and gets none appended (chosen keep
theirs); see :func:`apply_eos_rule`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from core.prompts import DEFAULT_INSTRUCTION, build_prompt, completion_for

__all__ = [
    "DPO_LOSSES",
    "DPORunConfig",
    "LogHookCallback",
    "apply_eos_rule",
    "dpo_loss_kwargs",
    "pathology_warnings",
    "train_dpo",
    "MetricsJsonlCallback",
    "ProgressCallback",
    "SFTRunConfig",
    "TrainResult",
    "TrainRunConfig",
    "config_help",
    "device_kwargs",
    "pretokenize",
    "records_to_sft_examples",
    "train_sft",
]


def _f(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class TrainRunConfig:
    """Fields shared by every training stage (SFT now, DPO later)."""

    learning_rate: float = _f(2e-3, "Peak learning rate of AdamW.")
    max_steps: int = _f(150, "Optimizer steps to run; -1 to use num_train_epochs instead.")
    num_train_epochs: float = _f(1.0, "Passes over the training examples when max_steps is -1.")
    per_device_train_batch_size: int = _f(16, "Examples per optimizer step per device (before accumulation).")
    gradient_accumulation_steps: int = _f(1, "Micro-batches accumulated into one optimizer step.")
    lr_scheduler_type: str = _f("linear", "Learning-rate schedule (linear, cosine, constant, constant_with_warmup, ...).")
    warmup_steps: int = _f(10, "Linear warm-up steps at the start of the schedule.")
    weight_decay: float = _f(0.0, "AdamW weight decay.")
    max_grad_norm: float = _f(1.0, "Gradient clipping norm.")
    max_length: int | None = _f(2048, "Longest tokenized example kept (prompt + completion); longer ones are truncated.")
    seed: int = _f(0, "Random seed for weights of new heads, dropout and data order.")
    shuffle: bool = _f(True, "Shuffle the examples each epoch; False keeps the given order (a curriculum).")
    logging_steps: int = _f(10, "Log loss and learning rate every this many steps (to metrics.jsonl).")
    device: str = _f("auto", "auto (CUDA if available), cpu or cuda.")
    bf16: bool | None = _f(None, "bfloat16 mixed precision; None = on for CUDA GPUs that support it, off on CPU.")
    gradient_checkpointing: bool = _f(False, "Recompute activations to save memory (slow; never useful on CPU).")
    use_lora: bool = _f(False, "Train LoRA adapters (PEFT) instead of all weights.")
    lora_r: int = _f(16, "LoRA rank.")
    lora_alpha: int = _f(32, "LoRA scaling alpha.")
    lora_dropout: float = _f(0.05, "LoRA dropout.")
    lora_target_modules: str = _f("all-linear", "Modules that get LoRA adapters ('all-linear' or comma-separated names).")
    instruction: str = _f(DEFAULT_INSTRUCTION, "Instruction appended to each document text in the prompt.")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainRunConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class SFTRunConfig(TrainRunConfig):
    """Supervised fine-tuning on prompt/completion pairs (or plain text) with TRL's SFTTrainer."""

    completion_only_loss: bool = _f(True, "Compute the loss on the completion tokens only (prompt-completion data).")
    packing: bool = _f(False, "Pack several short examples into one sequence (plain-text data).")


def config_help(config_cls: type) -> dict[str, str]:
    """Field name -> one-line help, for forms and CLI flags."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(config_cls)}


def device_kwargs(config: TrainRunConfig) -> dict:
    """CPU-safe device settings for a TRL/transformers config."""
    import torch

    want = config.device
    cuda = torch.cuda.is_available() and want in ("auto", "cuda")
    if want == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but CUDA is not available")
    if cuda:
        bf16 = torch.cuda.is_bf16_supported() if config.bf16 is None else bool(config.bf16)
        return {"use_cpu": False, "bf16": bf16, "fp16": False, "gradient_checkpointing": config.gradient_checkpointing}
    return {"use_cpu": True, "bf16": False, "fp16": False, "gradient_checkpointing": False}


# --------------------------------------------------------------------------- callbacks


_CALLBACKS: dict[str, type] = {}


def _callback_classes() -> dict[str, type]:
    """The TrainerCallback subclasses, defined on first use so that importing this module (for
    the config dataclasses, e.g. in a page) does not import transformers."""
    if _CALLBACKS:
        return _CALLBACKS
    from transformers import TrainerCallback

    class MetricsJsonlCallback(TrainerCallback):
        """Appends every log event (loss, learning rate, rewards/…, logps/…) as one JSON line to
        ``<run_dir>/metrics.jsonl``, with step, epoch and wall time."""

        def __init__(self, path: Path | str):
            self.path = Path(path)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.t0 = time.time()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs:
                return
            row = {"step": state.global_step, "epoch": state.epoch, "time_s": round(time.time() - self.t0, 3)}
            for k, v in logs.items():
                if isinstance(v, float) and not math.isfinite(v):
                    v = None
                row[k] = v
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(row, default=float) + "\n")

    class ProgressCallback(TrainerCallback):
        """Calls ``fn(step, max_steps)`` after each optimizer step (progress bars, job files)."""

        def __init__(self, fn: Callable[[int, int], None]):
            self.fn = fn

        def on_step_end(self, args, state, control, **kwargs):
            self.fn(state.global_step, state.max_steps)

    _CALLBACKS.update(MetricsJsonlCallback=MetricsJsonlCallback, ProgressCallback=ProgressCallback)
    return _CALLBACKS


def __getattr__(name: str):  # lazy: core.train.MetricsJsonlCallback, core.train.ProgressCallback
    if name in ("MetricsJsonlCallback", "ProgressCallback"):
        return _callback_classes()[name]
    raise AttributeError(name)


# --------------------------------------------------------------------------- data


def records_to_sft_examples(records: Iterable[dict], instruction: str = DEFAULT_INSTRUCTION) -> list[dict]:
    """Items ({"text", "reference"}) -> {"prompt", "completion"}; records that already have
    prompt/completion pass through; records with only "text" stay plain text (language modelling)."""
    out = []
    for r in records:
        if "prompt" in r and "completion" in r:
            out.append({"prompt": r["prompt"], "completion": r["completion"]})
        elif "reference" in r and r.get("reference") is not None:
            out.append({"prompt": build_prompt(r["text"], instruction), "completion": completion_for(r["reference"])})
        elif "text" in r:
            out.append({"text": r["text"]})
        else:
            raise ValueError(f"record has neither prompt/completion, text/reference nor text: {sorted(r)}")
    kinds = {tuple(sorted(e)) for e in out}
    if len(kinds) > 1:
        raise ValueError("mixed plain-text and prompt/completion records in one training set")
    return out


def pretokenize(examples: Sequence[dict], tokenizer) -> list[dict]:
    """Prompt/completion examples -> ``input_ids`` + ``completion_mask`` exactly as TRL's
    SFTTrainer builds them (EOS appended to the completion, the completion starting where the
    tokenized prompt and prompt+completion diverge), each distinct example tokenized once: a
    curriculum that repeats documents then costs no extra tokenization."""
    eos = tokenizer.eos_token or ""
    uniq: dict[tuple[str, str], int] = {}
    for e in examples:
        uniq.setdefault((e["prompt"], e["completion"]), len(uniq))
    keys = list(uniq)
    p_ids = tokenizer([k[0] for k in keys], add_special_tokens=False)["input_ids"]
    pc_ids = tokenizer(
        [k[0] + (k[1] if k[1].endswith(eos) else k[1] + eos) for k in keys], add_special_tokens=False
    )["input_ids"]
    rows = []
    for p, pc in zip(p_ids, pc_ids):
        n = 0
        for a, b in zip(p, pc):
            if a != b:
                break
            n += 1
        rows.append({"input_ids": pc, "completion_mask": [0] * n + [1] * (len(pc) - n)})
    return [rows[uniq[(e["prompt"], e["completion"])]] for e in examples]


# --------------------------------------------------------------------------- SFT


@dataclass
class TrainResult:
    out_dir: str
    metrics_path: str
    global_step: int
    train_loss: float | None
    runtime_s: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _sft_config(config: SFTRunConfig, out_dir: Path, plain_text: bool, disable_tqdm: bool):
    from trl import SFTConfig

    kw = dict(
        output_dir=str(out_dir / "trainer"),
        learning_rate=config.learning_rate,
        max_steps=config.max_steps,
        num_train_epochs=config.num_train_epochs,
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        max_length=config.max_length,
        seed=config.seed,
        data_seed=config.seed,
        logging_steps=config.logging_steps,
        save_strategy="no",
        report_to="none",
        disable_tqdm=disable_tqdm,
        packing=config.packing,
        completion_only_loss=None if plain_text else config.completion_only_loss,
        dataloader_num_workers=0,
        train_sampling_strategy="random" if config.shuffle else "sequential",
        optim="adamw_torch",
        **device_kwargs(config),
    )
    if plain_text:
        kw["dataset_text_field"] = "text"
    return SFTConfig(**kw)


def _peft_config(config: TrainRunConfig):
    if not config.use_lora:
        return None
    from peft import LoraConfig

    targets: Any = config.lora_target_modules
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    return LoraConfig(
        r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=targets, task_type="CAUSAL_LM",
    )


def train_sft(
    config: SFTRunConfig,
    train_records: Sequence[dict],
    out_dir: Path | str,
    *,
    model: Any = None,
    tokenizer: Any = None,
    run_dir: Path | str | None = None,
    progress: Callable[[int, int], None] | None = None,
    disable_tqdm: bool = True,
    save: bool = True,
    callbacks: Sequence[Any] = (),
) -> TrainResult:
    """Fine-tune ``model`` (a path, hub id or loaded model) on ``train_records`` with TRL's
    SFTTrainer and save it (merged, if LoRA) with its tokenizer to ``out_dir``.

    ``train_records`` are items ({"text", "reference"} -> prompt + completion via
    ``core.prompts``), ready {"prompt", "completion"} examples, or plain {"text"} (language
    modelling). Metrics go to ``<run_dir>/metrics.jsonl`` (run_dir defaults to out_dir).
    """
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    out_dir = Path(out_dir)
    run_dir = Path(run_dir) if run_dir is not None else out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    if model is None:
        raise ValueError("train_sft needs a model (path or loaded model)")
    if isinstance(model, (str, Path)):
        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(str(model))
        model = AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32)
    if tokenizer is None:
        raise ValueError("train_sft needs a tokenizer when the model is given loaded")
    if isinstance(tokenizer, (str, Path)):
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer))

    examples = records_to_sft_examples(train_records, config.instruction)
    plain_text = "text" in examples[0]
    dataset = Dataset.from_list(examples if plain_text else pretokenize(examples, tokenizer))
    (run_dir / "run_config.json").write_text(
        json.dumps({"stage": "sft", "config": config.to_dict(), "n_examples": len(examples)}, indent=2, ensure_ascii=False)
    )
    metrics_path = run_dir / "metrics.jsonl"
    cb = _callback_classes()
    extra = list(callbacks)
    callbacks = [cb["MetricsJsonlCallback"](metrics_path)] + extra
    if progress is not None:
        callbacks.append(cb["ProgressCallback"](progress))

    torch.manual_seed(config.seed)
    with warnings.catch_warnings():  # transformers 5 renamed gradient_checkpointing; TRL still sets it
        warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*", category=FutureWarning)
        args = _sft_config(config, out_dir, plain_text, disable_tqdm)
    if disable_tqdm:
        import datasets

        datasets.disable_progress_bars()
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=callbacks,
        peft_config=_peft_config(config),
    )
    if disable_tqdm:
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # logs go to metrics.jsonl, not stdout
    t0 = time.time()
    out = trainer.train()
    runtime = time.time() - t0
    trained = trainer.model
    if config.use_lora:
        trained = trained.merge_and_unload()
    if save:
        trained.save_pretrained(str(out_dir))
        tokenizer.save_pretrained(str(out_dir))
    return TrainResult(
        out_dir=str(out_dir),
        metrics_path=str(metrics_path),
        global_step=int(trainer.state.global_step),
        train_loss=float(out.training_loss) if out.training_loss is not None else None,
        runtime_s=round(runtime, 2),
    )
