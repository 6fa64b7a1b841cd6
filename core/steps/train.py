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

Vision-language models (``core.loader`` tells them by their config) train with their processor as
TRL's processing class and an ``images`` column (TRL's vision collators). TRL skips its dataset
preparation for vision data and so appends EOS to nothing; the EOS rule is therefore applied in
the text (:func:`with_eos`): SFT completions and chosen completions end with EOS, a rejected one
cut at the limit does not. Reference log-probs are never precomputed for vision data (TRL cannot).
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from core.config import option
from core.policy.prompts import DEFAULT_INSTRUCTION, build_prompt, completion_for

__all__ = [
    "DPO_LOSSES",
    "DPORunConfig",
    "apply_eos_rule",
    "dpo_loss_kwargs",
    "pathology_warnings",
    "train_dpo",
    "SFTRunConfig",
    "TrainResult",
    "TrainRunConfig",
    "device_kwargs",
    "pretokenize",
    "records_to_sft_examples",
    "train_sft",
]


@dataclass
class TrainRunConfig:
    """Fields shared by every training stage (SFT now, DPO later)."""

    learning_rate: float = option(2e-3, "Peak learning rate of AdamW.")
    max_steps: int = option(150, "Optimizer steps to run; -1 to use num_train_epochs instead.")
    num_train_epochs: float = option(1.0, "Passes over the training examples when max_steps is -1.")
    per_device_train_batch_size: int = option(16, "Examples per optimizer step per device (before accumulation).")
    gradient_accumulation_steps: int = option(1, "Micro-batches accumulated into one optimizer step.")
    lr_scheduler_type: str = option("linear", "Learning-rate schedule (linear, cosine, constant, constant_with_warmup, ...).")
    warmup_steps: int = option(10, "Linear warm-up steps at the start of the schedule.")
    weight_decay: float = option(0.0, "AdamW weight decay.")
    max_grad_norm: float = option(1.0, "Gradient clipping norm.")
    max_length: int | None = option(2048, "Longest tokenized example kept (prompt + completion); longer ones are truncated.")
    seed: int = option(0, "Random seed for weights of new heads, dropout and data order.")
    shuffle: bool = option(True, "Shuffle the examples each epoch; False keeps the given order (a curriculum).")
    logging_steps: int = option(10, "Log loss and learning rate every this many steps (to metrics.jsonl).")
    device: str = option("auto", "auto (CUDA if available), cpu or cuda.")
    bf16: bool | None = option(None, "bfloat16 mixed precision; None = on for CUDA GPUs that support it, off on CPU.")
    gradient_checkpointing: bool = option(False, "Recompute activations to save memory (slow; never useful on CPU).")
    use_lora: bool = option(False, "Train LoRA adapters (PEFT) instead of all weights.")
    lora_r: int = option(16, "LoRA rank.")
    lora_alpha: int = option(32, "LoRA scaling alpha.")
    lora_dropout: float = option(0.05, "LoRA dropout.")
    lora_target_modules: str = option("all-linear", "Modules that get LoRA adapters ('all-linear' or comma-separated names).")
    instruction: str = option(DEFAULT_INSTRUCTION, "Instruction appended to each document text in the prompt.")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainRunConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class SFTRunConfig(TrainRunConfig):
    """Supervised fine-tuning on prompt/completion pairs (or plain text) with TRL's SFTTrainer."""

    completion_only_loss: bool = option(True, "Compute the loss on the completion tokens only (prompt-completion data).")
    packing: bool = option(False, "Pack several short examples into one sequence (plain-text data).")




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
            if not logs or not state.is_world_process_zero:
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

    class LogHookCallback(TrainerCallback):
        """Calls ``fn(step, logs)`` on every log event (e.g. a job writing ``train_metrics`` shards)."""

        def __init__(self, fn: Callable[[int, dict], None]):
            self.fn = fn

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and state.is_world_process_zero:  # one writer when run on several GPUs
                self.fn(state.global_step, dict(logs))

    _CALLBACKS.update(MetricsJsonlCallback=MetricsJsonlCallback, ProgressCallback=ProgressCallback,
                      LogHookCallback=LogHookCallback)
    return _CALLBACKS


def __getattr__(name: str):  # lazy: core.train.MetricsJsonlCallback, core.train.ProgressCallback
    if name in ("MetricsJsonlCallback", "ProgressCallback", "LogHookCallback"):
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
        **_trainer_args(config, out_dir, disable_tqdm),
        save_strategy="no",
        packing=config.packing,
        completion_only_loss=None if plain_text else config.completion_only_loss,
    )
    if plain_text:
        kw["dataset_text_field"] = "text"
    return SFTConfig(**kw)


def _trainer_args(config: TrainRunConfig, out_dir: Path, disable_tqdm: bool) -> dict:
    """The TrainingArguments fields SFT and DPO share, device settings included."""
    return dict(
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
        report_to="none",
        disable_tqdm=disable_tqdm,
        dataloader_num_workers=0,
        train_sampling_strategy="random" if config.shuffle else "sequential",
        optim="adamw_torch",
        ddp_find_unused_parameters=False,  # every trained parameter is in the graph: no extra autograd pass per step
        **device_kwargs(config),
    )


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
    processor: Any = None,
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
    from trl import SFTTrainer

    out_dir = Path(out_dir)
    run_dir = Path(run_dir) if run_dir is not None else out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    lm = _load(model, tokenizer, "train_sft", config.device, processor)
    model, tokenizer = lm.model, lm.tokenizer
    cpu = device_kwargs(config)["use_cpu"]
    if lm.vision:
        examples = vision_sft_examples(train_records, lm.processor, config.instruction)
        plain_text = False
        dataset = train_dataset(examples, run_dir, cpu)
    else:
        examples = records_to_sft_examples(train_records, config.instruction)
        plain_text = "text" in examples[0]
        dataset = train_dataset(examples if plain_text else pretokenize(examples, tokenizer), run_dir, cpu)
    (run_dir / "run_config.json").write_text(
        json.dumps({"stage": "sft", "config": config.to_dict(), "n_examples": len(examples), "vision": lm.vision}, indent=2, ensure_ascii=False)
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
        processing_class=lm.processor if lm.vision else tokenizer,
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
        (lm.processor if lm.vision else tokenizer).save_pretrained(str(out_dir))
    return TrainResult(
        out_dir=str(out_dir),
        metrics_path=str(metrics_path),
        global_step=int(trainer.state.global_step),
        train_loss=float(out.training_loss) if out.training_loss is not None else None,
        runtime_s=round(runtime, 2),
    )


# --------------------------------------------------------------------------- DPO

# Loss name (UI/CLI) -> TRL 1.16 ``loss_type`` list. RPO is sigmoid DPO plus an SFT (NLL) term on the
# chosen completion, weighted by ``rpo_weight`` (TRL 1.16 dropped ``rpo_alpha``).
DPO_LOSSES: dict[str, list[str]] = {
    "sigmoid": ["sigmoid"],
    "ipo": ["ipo"],
    "rpo": ["sigmoid", "sft"],
    "robust": ["robust"],
    "hinge": ["hinge"],
    "apo_zero": ["apo_zero"],
    "apo_down": ["apo_down"],
    "sppo_hard": ["sppo_hard"],
    "nca_pair": ["nca_pair"],
    "bco_pair": ["bco_pair"],
    "exo_pair": ["exo_pair"],
    "discopop": ["discopop"],
    "sigmoid_norm": ["sigmoid_norm"],
}


@dataclass
class DPORunConfig(TrainRunConfig):
    """Preference optimisation on chosen/rejected pairs with TRL's DPOTrainer (defaults: the demo run)."""

    learning_rate: float = option(5e-5, "Peak learning rate of AdamW (DPO wants far less than SFT; too high drives chosen log-probs down; the ~1M-parameter demo models want 2e-4: at 5e-5 gpt2 looped more than its SFT).")
    max_steps: int = option(-1, "Optimizer steps to run; -1 to use num_train_epochs instead.")
    num_train_epochs: float = option(2.0, "Passes over the pairs when max_steps is -1.")
    per_device_train_batch_size: int = option(8, "Pairs per optimizer step per device (before accumulation).")
    warmup_steps: int = option(0, "Linear warm-up steps at the start of the schedule.")
    logging_steps: int = option(1, "Log loss, rewards and log-probs every this many steps (to metrics.jsonl, charted live).")
    loss: str = option("sigmoid", "DPO loss: sigmoid, ipo, rpo (sigmoid + SFT term), robust, hinge, apo_zero, apo_down, sppo_hard, nca_pair, bco_pair, exo_pair, discopop, sigmoid_norm.")
    beta: float = option(0.5, "β: how far the policy may move from the reference (higher = closer); τ for IPO.")
    rpo_weight: float = option(1.0, "RPO only: weight of the SFT (NLL on chosen) term next to the sigmoid term's 1.0.")
    label_smoothing: float = option(0.0, "Robust DPO: probability a preference label is flipped, in [0, 0.5).")
    precompute_ref_log_probs: bool = option(True, "Compute the reference log-probs once before training (≈1.4x faster; no reference model in memory); falls back when unsupported.")
    precompute_ref_batch_size: int | None = option(None, "Batch size of that precompute pass; None = the training batch size.")
    merge_lora: bool = option(True, "LoRA: merge the adapters into the base weights when saving; False saves the adapters only.")
    save_steps: int = option(0, "Save a checkpoint every this many steps (the last one is kept; a cancelled run leaves it); 0 = only the final model.")


def dpo_loss_kwargs(config: DPORunConfig) -> dict:
    """``loss_type`` / ``loss_weights`` for TRL from the config's loss name; raises ValueError on an unknown one."""
    loss = config.loss.strip().lower()
    if loss not in DPO_LOSSES:
        raise ValueError(f"unknown DPO loss {config.loss!r}: use one of {', '.join(DPO_LOSSES)}")
    kw: dict = {"loss_type": list(DPO_LOSSES[loss])}
    if loss == "rpo":
        kw["loss_weights"] = [1.0, float(config.rpo_weight)]
    return kw


def validate_dpo_config(config: DPORunConfig) -> None:
    """Bad values fail before any model is loaded, with the field named."""
    dpo_loss_kwargs(config)
    _validate_common(config)
    if not config.beta > 0:
        raise ValueError(f"beta must be > 0 (got {config.beta})")
    if config.loss == "rpo" and config.rpo_weight < 0:
        raise ValueError(f"rpo_weight must be ≥ 0 (got {config.rpo_weight})")
    if not 0 <= config.label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5) (got {config.label_smoothing})")
    if config.save_steps < 0:
        raise ValueError("save_steps must be ≥ 0")


def _validate_common(config: TrainRunConfig) -> None:
    if not config.learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0 (got {config.learning_rate})")
    if config.per_device_train_batch_size < 1 or config.gradient_accumulation_steps < 1:
        raise ValueError("batch size and gradient accumulation must be ≥ 1")
    if config.max_steps == 0 or config.max_steps < -1:
        raise ValueError(f"max_steps must be ≥ 1, or -1 to use epochs (got {config.max_steps})")
    if config.max_steps == -1 and not config.num_train_epochs > 0:
        raise ValueError(f"num_train_epochs must be > 0 (got {config.num_train_epochs})")
    if config.max_length is not None and config.max_length < 8:
        raise ValueError(f"max_length must be ≥ 8 tokens or None (got {config.max_length})")
    if config.device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device is auto, cpu or cuda (got {config.device!r})")


def _dpo_config(config: DPORunConfig, out_dir: Path, disable_tqdm: bool, precompute: bool):
    from trl import DPOConfig

    save = {"save_strategy": "no"}
    if config.save_steps:
        save = {"save_strategy": "steps", "save_steps": config.save_steps, "save_total_limit": 1}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*", category=FutureWarning)
        return DPOConfig(
            **_trainer_args(config, out_dir, disable_tqdm),
            beta=config.beta,
            label_smoothing=config.label_smoothing,
            precompute_ref_log_probs=precompute,
            precompute_ref_batch_size=config.precompute_ref_batch_size,
            **dpo_loss_kwargs(config),
            **save,
        )


def apply_eos_rule(dataset, eos_token_id: int | None):
    """The EOS rule on a dataset TRL has tokenized (``prompt_ids``/``chosen_ids``/``rejected_ids``):
    where ``rejected_cut_at_limit`` is true, the EOS that TRL appended to the rejected completion is
    taken off again. The model never emitted it there; training on "loop, then stop" would teach
    the model that the loop is a way to end. Chosen completions, and rejected ones that stopped by
    themselves, keep theirs. A rejected text that carried EOS itself (``_rejected_had_eos``) is left
    alone, as are datasets without the column."""
    if eos_token_id is None or "rejected_cut_at_limit" not in (dataset.column_names or []):
        return dataset

    def strip(example):
        ids = example["rejected_ids"]
        if example["rejected_cut_at_limit"] and not example.get("_rejected_had_eos") and ids and ids[-1] == eos_token_id:
            example["rejected_ids"] = ids[:-1]
        return example

    return dataset.map(strip, desc="EOS rule: no EOS after rejected completions cut at the limit")


def _dpo_trainer_class():
    """A DPOTrainer whose dataset preparation applies :func:`apply_eos_rule` after TRL's own
    tokenization (so everything else — prompt/completion split, chat templates — is TRL's)."""
    from trl import DPOTrainer

    class LoopbreakDPOTrainer(DPOTrainer):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            cut = None
            if "rejected_cut_at_limit" in (getattr(dataset, "column_names", None) or []):
                eos = self._tokenizer.eos_token
                # remember which rejected texts already ended with EOS themselves: those keep it
                dataset = dataset.map(lambda e: {"_rejected_had_eos": bool(eos) and isinstance(e["rejected"], str)
                                                 and e["rejected"].endswith(eos)})
                cut = True
            dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            if cut:
                dataset = apply_eos_rule(dataset, self._tokenizer.eos_token_id)
            return dataset

    return LoopbreakDPOTrainer


def records_to_dpo_examples(records: Iterable[dict]) -> list[dict]:
    """Approved pairs / an export's rows -> {"prompt", "chosen", "rejected", "rejected_cut_at_limit"}."""
    out = []
    for r in records:
        missing = [k for k in ("prompt", "chosen", "rejected") if r.get(k) is None]
        if missing:
            raise ValueError(f"a pair lacks {', '.join(missing)}")
        out.append({"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"],
                    "rejected_cut_at_limit": bool(r.get("rejected_cut_at_limit") or False)})
    if not out:
        raise ValueError("no pairs to train on")
    return out


def _load(model: Any, tokenizer: Any, what: str, device: str = "auto", processor: Any = None):
    """The LoadedModel for training, through the one model loader (``core.loader``, purpose
    "train": float32 weights, placed by the Trainer, the tokenizer's padding left to TRL)."""
    from core.loader import LoadError, load_model

    if model is None:
        raise ValueError(f"{what} needs a model (path or loaded model)")
    if not isinstance(model, (str, Path)) and tokenizer is None:
        raise ValueError(f"{what} needs a tokenizer when the model is given loaded")
    try:
        lm = load_model(model, device=device, purpose="train", tokenizer=tokenizer, processor=processor)
    except LoadError as e:
        raise ValueError(f"{what}: {e}") from None
    if lm.vision and lm.processor is None:
        raise ValueError(f"{what}: a vision-language model needs its processor")
    return lm


def with_eos(text: str, eos: str | None, keep: bool = True) -> str:
    """``text`` ending with EOS when ``keep`` (a chosen or SFT completion), without when not (a rejected
    completion cut at the limit: the model never emitted it there)."""
    if not eos:
        return text
    if keep:
        return text if text.endswith(eos) else text + eos
    return text[: -len(eos)] if text.endswith(eos) else text


def train_dataset(examples: list[dict], run_dir: Path, cpu: bool, log: Callable[[str], None] = lambda m: None):
    """The examples as a datasets.Dataset. Under several processes, one copy saved in the run folder and
    loaded by every rank: TRL names its cached maps (the precomputed reference log-probs) after the
    dataset's cache files, and an in-memory dataset's live in each process's own temporary folder, so
    rank 1 looked for rank 0's file in a folder of its own (torchrun: "Failed to open local file
    /tmp/hf_datasets-…/cache-….arrow"). The Trainer's distributed sampler gives each rank its share."""
    from datasets import Dataset, load_from_disk

    from core.jobs.worker import world

    rank, size = world()
    if size <= 1:
        return Dataset.from_list(examples)
    import shutil

    from accelerate import PartialState

    # Joins the process group torchrun / accelerate set up. On CPU accelerate needs cpu=True to see it: without,
    # every rank thought it was the main process alone and saved the folder while the others read it (ArrowInvalid).
    state = PartialState(cpu=cpu)
    if state.num_processes != size:
        raise RuntimeError(f"{size} processes launched, but accelerate sees {state.num_processes}: no process group")
    path = Path(run_dir) / "train_dataset"
    with state.main_process_first():
        if state.is_main_process:
            shutil.rmtree(path, ignore_errors=True)  # a relaunch: no cached map of the last attempt
            Dataset.from_list(examples).save_to_disk(str(path))
    log(f"rank {rank} of {size}: {len(range(rank, len(examples), size))} of {len(examples)} examples per epoch")
    return load_from_disk(str(path))


PAGE_KEYS = ("images", "image", "image_bytes", "image_path")  # where a training record may carry its page


def _page(record: dict, what: str):
    """The page image of a training record: an ``images`` list, or an ``image``/``image_path`` to load."""
    from core.images import ImageProblem, load_image

    if record.get("images"):
        img = record["images"][0]
    elif record.get("image_bytes"):
        img = {"bytes": record["image_bytes"]}
    else:
        img = record.get("image") or record.get("image_path")
    if img is None:
        raise ValueError(f"{what}: a vision-language model trains on pages, and a record has none")
    if hasattr(img, "convert"):
        return img.convert("RGB")
    if isinstance(img, dict):  # a datasets Image cell
        import io

        from PIL import Image

        return Image.open(io.BytesIO(img["bytes"])).convert("RGB") if img.get("bytes") else _page({"image": img.get("path")}, what)
    try:
        return load_image(img)
    except ImageProblem as e:
        raise ValueError(f"{what}: {e}") from None


def _vision_prompt(prompt: str | None, processor, instruction: str) -> str:
    """The stored prompt when it holds the processor's image placeholder (what the model was sampled
    with), else the VLM's own prompt for the instruction."""
    from core.samplers.base import image_prompt

    token = getattr(processor, "image_token", None)
    if prompt and token and token in prompt:
        return prompt
    return image_prompt(processor, instruction, "auto")


def vision_sft_examples(records: Sequence[dict], processor, instruction: str = DEFAULT_INSTRUCTION) -> list[dict]:
    """TRL vision prompt-completion examples ({"images", "prompt", "completion"}): the EOS in the text."""
    eos = processor.tokenizer.eos_token
    out = []
    for r in records:
        completion = r["completion"] if "completion" in r else completion_for(r["reference"])
        out.append({"images": [_page(r, "train_sft")], "prompt": _vision_prompt(r.get("prompt"), processor, instruction),
                    "completion": with_eos(completion, eos)})
    return out


def vision_dpo_examples(pairs: Sequence[dict], processor, instruction: str = DEFAULT_INSTRUCTION) -> list[dict]:
    """TRL vision preference examples ({"images", "prompt", "chosen", "rejected"}) with the EOS rule in
    the text: chosen ends with EOS; a rejected cut at the limit does not, one that stopped does."""
    eos = processor.tokenizer.eos_token
    return [{"images": [_page(r, "train_dpo")], "prompt": _vision_prompt(r.get("prompt"), processor, instruction),
             "chosen": with_eos(r["chosen"], eos), "rejected": with_eos(r["rejected"], eos, not r.get("rejected_cut_at_limit"))}
            for r in pairs]


def train_dpo(
    config: DPORunConfig,
    pairs: Sequence[dict],
    out_dir: Path | str,
    *,
    model: Any = None,
    tokenizer: Any = None,
    processor: Any = None,
    run_dir: Path | str | None = None,
    progress: Callable[[int, int], None] | None = None,
    callbacks: Sequence[Any] = (),
    disable_tqdm: bool = True,
    save: bool = True,
    log: Callable[[str], None] = lambda m: None,
    resume_from_checkpoint: str | None = None,
) -> TrainResult:
    """DPO on ``pairs`` ({prompt, chosen, rejected, rejected_cut_at_limit}) with TRL's DPOTrainer,
    from ``model`` (path or loaded); the reference is the initial model (with LoRA: the base with
    the adapters disabled). Saves the model (merged LoRA unless ``merge_lora`` is off) and tokenizer
    to ``out_dir``; metrics stream to ``<run_dir>/metrics.jsonl``."""
    import torch

    validate_dpo_config(config)
    out_dir = Path(out_dir)
    run_dir = Path(run_dir) if run_dir is not None else out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    examples = records_to_dpo_examples(pairs)
    lm = _load(model, tokenizer, "train_dpo", config.device, processor)
    model, tokenizer = lm.model, lm.tokenizer
    if lm.vision:
        examples = vision_dpo_examples([{**e, **{k: p.get(k) for k in PAGE_KEYS}} for e, p in zip(examples, pairs)],
                                       lm.processor, config.instruction)
    (run_dir / "run_config.json").write_text(json.dumps(
        {"stage": "dpo", "config": config.to_dict(), "n_pairs": len(examples), "vision": lm.vision,
         "n_rejected_cut_at_limit": sum(bool(p.get("rejected_cut_at_limit")) for p in pairs)}, indent=2, ensure_ascii=False))
    metrics_path = run_dir / "metrics.jsonl"
    cb = _callback_classes()
    all_callbacks = [cb["MetricsJsonlCallback"](metrics_path), *callbacks]
    if progress is not None:
        all_callbacks.append(cb["ProgressCallback"](progress))
    if disable_tqdm:
        import datasets

        datasets.disable_progress_bars()
    torch.manual_seed(config.seed)
    dataset = train_dataset(examples, run_dir, device_kwargs(config)["use_cpu"], log)
    trainer_cls = _dpo_trainer_class()
    precompute = bool(config.precompute_ref_log_probs) and not lm.vision  # TRL cannot for vision data: decided here
    if lm.vision and config.precompute_ref_log_probs:
        log("vision data: reference log-probs are computed live (TRL cannot precompute them for images)")

    def build(pre: bool):
        return trainer_cls(model=model, args=_dpo_config(config, out_dir, disable_tqdm, pre), train_dataset=dataset,
                           processing_class=lm.processor if lm.vision else tokenizer, callbacks=all_callbacks,
                           peft_config=_peft_config(config))

    try:
        trainer = build(precompute)
    except (ValueError, NotImplementedError) as e:
        if not precompute or "precompute" not in str(e):
            raise
        log(f"precompute_ref_log_probs unsupported here ({e}); falling back to a live reference model")
        precompute = False
        trainer = build(False)
    if disable_tqdm:
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    t0 = time.time()
    out = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    runtime = time.time() - t0
    if save and trainer.is_world_process_zero():
        trained = trainer.model
        if config.use_lora and config.merge_lora:
            trained = trained.merge_and_unload()
        trained.save_pretrained(str(out_dir))
        (lm.processor if lm.vision else tokenizer).save_pretrained(str(out_dir))
    result = TrainResult(
        out_dir=str(out_dir), metrics_path=str(metrics_path), global_step=int(trainer.state.global_step),
        train_loss=float(out.training_loss) if out.training_loss is not None else None, runtime_s=round(runtime, 2),
    )
    result.precomputed_ref = precompute  # type: ignore[attr-defined]
    return result


# --------------------------------------------------------------------------- pathologies


def pathology_warnings(metrics: Sequence[dict], min_points: int = 4, min_drop: float = 1.0) -> list[str]:
    """Warnings read off a run's logged metrics (rows as in metrics.jsonl). Pure; the page shows them.

    * Chosen log-probs falling steadily — DPO's known failure where the likelihood of both
      completions drops and the model drifts (valid-JSON share 94% → 9% in the demo experiment):
      at least ``min_points`` logged values, the last third's mean below the first third's by
      ``min_drop`` nats or more, and most steps going down.
    """
    out: list[str] = []
    chosen = [float(r["logps/chosen"]) for r in metrics if isinstance(r.get("logps/chosen"), (int, float))]
    if len(chosen) >= min_points:
        k = max(1, len(chosen) // 3)
        first, last = sum(chosen[:k]) / k, sum(chosen[-k:]) / k
        downs = sum(b < a for a, b in zip(chosen, chosen[1:]))
        if first - last >= min_drop and downs >= 0.6 * (len(chosen) - 1):
            rejected = [float(r["logps/rejected"]) for r in metrics if isinstance(r.get("logps/rejected"), (int, float))]
            both = " along with the rejected ones" if len(rejected) >= 2 and rejected[-1] < rejected[0] else ""
            out.append(
                f"Chosen log-probs are falling steadily ({first:.1f} → {last:.1f}){both}: the known DPO failure where "
                "the model lowers the likelihood of good outputs too. Try RPO (loss 'rpo', an SFT term on chosen) "
                "or a lower learning rate."
            )
    return out
