"""Training as a background job: the writer freezes the inputs, the worker trains, the writer registers.

Writer side (the app or the CLI, which hold the database):

* :func:`start_training` checks the values, resolves the base model, freezes the training data
  into ``<job>/pairs.parquet`` (approved pairs of a sampling run, or an export file; for SFT
  optionally a dataset's references) and launches job kind ``train``;
* :func:`finish_training` (idempotent; also called by ``jobs.sync_runs`` when a train job ends
  done) registers the new model as stage ``dpo`` (``dpoN`` after a DPO base) or ``sft`` of the
  base's family, with its parent and config.

Worker side, :func:`run_job`: trains with ``core.train`` and streams every log event to
``<job>/metrics.jsonl`` (charted live) and as ``train_metrics`` shards (the store's copy); saves
the model into ``<workspace>/models/<run_id>/`` and leaves ``result.json``. On cancel, the last
checkpoint (when ``save_steps`` asked for them) is named in ``result.json``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.config import option
from core.store import items as store_items
from core.store import pairs as store_pairs
from core.store import runs
from core.store.models import get_model, register_model
from core.steps.train import DPORunConfig, SFTRunConfig, _validate_common, pathology_warnings, validate_dpo_config

METHODS = ("dpo", "sft")
SFT_SOURCES = ("chosen", "references")


@dataclass
class TrainJobConfig:
    """What to train from and on; ``params`` are the fields of DPORunConfig / SFTRunConfig."""

    method: str = option("dpo", "dpo (preference pairs) or sft (supervised on chosen texts or references)")
    base: str = option("", "base model: a registered name, or a local model folder")
    pairs: str | None = option(None, "approved pairs: a sampling run id, or an export file (trl/jsonl/parquet) or hf folder")
    sft_source: str = option("chosen", "sft only: chosen (the pairs' chosen texts) or references (a dataset's references)")
    dataset: str | None = option(None, "sft on references: the dataset")
    split: str | None = option("train", "sft on references: the split")
    name: str | None = option(None, "name to register the new model under (default: the run id)")
    stage: str | None = option(None, "stage to register it as (default: dpo, dpo2… after a DPO base, or sft); sft2 = SFT trained further")
    params: dict = field(default_factory=dict, metadata={"help": "training hyper-parameters (DPORunConfig / SFTRunConfig fields)"})

    def run_config(self) -> DPORunConfig | SFTRunConfig:
        cls = DPORunConfig if self.method == "dpo" else SFTRunConfig
        unknown = set(self.params) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown {self.method} setting(s): {', '.join(sorted(unknown))}")
        return cls(**self.params)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainJobConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def next_stage(method: str, base_stage: str | None) -> str:
    """sft -> sft; dpo after vanilla/sft/unknown -> dpo; after dpo -> dpo2; after dpoN -> dpo(N+1)."""
    if method == "sft":
        return "sft"
    if base_stage == "dpo":
        return "dpo2"
    m = re.fullmatch(r"dpo(\d+)", base_stage or "")
    return f"dpo{int(m.group(1)) + 1}" if m else "dpo"


# ---------------------------------------------------------------- writer side


def read_pairs_source(ws, source: str) -> list[dict]:
    """Approved pairs of a sampling run (by id), or the rows of an export (file or `datasets` folder)."""
    from core.steps.export import approved_rows
    from core.store import WorkspaceError

    path = Path(source).expanduser()
    if path.exists():
        try:
            if path.is_dir():
                from datasets import load_from_disk

                rows = load_from_disk(str(path)).to_list()
            elif path.suffix == ".parquet":
                import pyarrow.parquet as pq

                rows = pq.read_table(path).to_pylist()
            else:
                rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except Exception as e:  # a malformed export is the user's to fix: say which file and why
            raise WorkspaceError(f"cannot read the pairs export {path}: {type(e).__name__}: {e}") from None
        if rows and not {"prompt", "chosen", "rejected"} <= set(rows[0]):
            raise WorkspaceError(f"{path} has no prompt/chosen/rejected columns: export it with `loopbreak export`")
        changed = 0
    else:
        if runs.get_run(ws, source) is None:
            raise WorkspaceError(f"pairs {source!r} is neither a run in this workspace nor an existing export file")
        from core.steps.export import vision_rows

        rows, changed = vision_rows(approved_rows(ws, source))
    if not rows:
        why = f" ({changed} left out: their page image changed since sampling)" if changed else ""
        raise WorkspaceError(f"no approved pairs in {source!r}{why}: approve some on the Review page")
    return [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"],
             "rejected_cut_at_limit": bool(r.get("rejected_cut_at_limit") or False), **_page_columns(r)} for r in rows]


def _page_columns(row: dict) -> dict:
    """A pair's page as frozen in the job folder: ``image_path`` (a file), or ``image_bytes`` (an
    export that embeds its images), from TRL's ``images`` column."""
    images = row.get("images") or []
    img = images[0] if images else None
    if isinstance(img, dict):
        return {"image_path": img.get("path") if not img.get("bytes") else None, "image_bytes": img.get("bytes")}
    if hasattr(img, "save"):  # a decoded PIL image
        import io

        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return {"image_path": None, "image_bytes": buf.getvalue()}
    return {"image_path": img if isinstance(img, str) else None, "image_bytes": None}


def _reference_records(ws, dataset: str | None, split: str | None) -> list[dict]:
    from core.store import WorkspaceError

    if not dataset:
        raise WorkspaceError("SFT on references needs a dataset")
    rows = store_items.reference_records(ws, dataset, split)
    if not rows:
        raise WorkspaceError(f"no items with a reference in {dataset!r}" + (f" split {split!r}" if split else ""))
    return rows


def start_training(ws, cfg: TrainJobConfig, run_id: str | None = None, launch: bool = True) -> str:
    """Validate, resolve the base, freeze the data into the job folder, create the run and launch it
    (``launch=False``: leave it queued for ``accelerate launch -m core job run DIR`` on a GPU node)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from core import jobs
    from core.store import WorkspaceError
    from core.store.models import resolve_model

    if cfg.method not in METHODS:
        raise WorkspaceError(f"method is dpo or sft (got {cfg.method!r})")
    try:
        run_cfg = cfg.run_config()
        validate_dpo_config(run_cfg) if cfg.method == "dpo" else _validate_common(run_cfg)
    except (TypeError, ValueError) as e:
        raise WorkspaceError(f"bad training setting: {e}") from None
    base = resolve_model(ws.cursor(), cfg.base, need_local=True)
    if not Path(base["path"]).exists():
        raise WorkspaceError(f"base model {cfg.base!r} is not a local model folder (training needs one)")
    if cfg.name and get_model(ws, cfg.name):
        raise WorkspaceError(f"a model named {cfg.name!r} is already registered: choose another name")
    if cfg.method == "sft" and cfg.sft_source not in SFT_SOURCES:
        raise WorkspaceError(f"sft source is chosen or references (got {cfg.sft_source!r})")
    if cfg.method == "sft" and cfg.sft_source == "references":
        rows, data_name = _reference_records(ws, cfg.dataset, cfg.split), cfg.dataset
    else:
        if not cfg.pairs:
            raise WorkspaceError("choose the approved pairs: a sampling run id or an export file")
        rows, data_name = read_pairs_source(ws, cfg.pairs), cfg.pairs
        if cfg.method == "sft":
            rows = [{"prompt": r["prompt"], "completion": r["chosen"], "image_path": r["image_path"], "image_bytes": r["image_bytes"]}
                    for r in rows]
    from core.loader import reads_images

    if reads_images(base["path"]):
        pageless = sum(1 for r in rows if not (r.get("image_path") or r.get("image_bytes")))
        if pageless:
            raise WorkspaceError(f"{base['name']} reads page images, but {pageless} of {len(rows)} training examples have "
                                 "none: train it on pairs sampled from pages (or items imported with their images)")
    else:  # a text model trains on the text alone
        rows = [{k: v for k, v in r.items() if k not in ("image_path", "image_bytes")} for r in rows]
    run_id = run_id or jobs.new_run_id("train")
    out_dir = ws.models_dir / run_id
    spec = {"config": dataclasses.asdict(cfg), "base": base, "out_dir": str(out_dir), "n_examples": len(rows),
            "stage": cfg.stage or next_stage(cfg.method, base["stage"])}
    jobs.create_job(ws, "train", spec, model=base["name"], dataset=str(data_name), split=cfg.split if cfg.sft_source == "references" and cfg.method == "sft" else None,
                    run_id=run_id)
    pq.write_table(pa.Table.from_pylist(rows), ws.jobs_dir / run_id / "pairs.parquet")
    if launch:
        jobs.launch(ws, run_id)
    return run_id


def finish_training(ws, run_id: str) -> dict | None:
    """Register the model a finished train job saved (idempotent). Returns the model's row, or None
    when the run is not a finished train job."""
    from core.jobs.worker import read_json

    job_dir = ws.jobs_dir / run_id
    spec, result, status = (read_json(job_dir / f) or {} for f in ("spec.json", "result.json", "status.json"))
    if spec.get("kind") != "train" or status.get("status") != "done" or not result.get("saved"):
        return None
    cfg = spec["config"]
    name = cfg.get("name") or run_id
    if get_model(ws, name) is None:
        base = spec["base"]
        register_model(ws, name=name, path=result["out_dir"], family=base.get("family"), stage=spec["stage"],
                       parent=base.get("name"), config={"run_id": run_id, "method": cfg["method"], "pairs": cfg.get("pairs"),
                                                        "params": result.get("config", cfg.get("params"))})
    return get_model(ws, name)


def read_metrics(ws, run_id: str) -> list[dict]:
    """The run's logged metrics, live from ``metrics.jsonl`` in its job folder (a torn last line is skipped)."""
    path = ws.jobs_dir / run_id / "metrics.jsonl"
    rows = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return rows


def training_summary(ws, run_id: str) -> dict:
    """Steps, last metrics, warnings, result and registered model of one train run."""
    from core.jobs.worker import read_json

    metrics = read_metrics(ws, run_id)
    result = read_json(ws.jobs_dir / run_id / "result.json") or {}
    steps = [r for r in metrics if "loss" in r]
    last = steps[-1] if steps else {}
    model = finish_training(ws, run_id)
    return {"run_id": run_id, "steps_logged": len(steps), "last": last, "warnings": pathology_warnings(steps),
            "result": result, "model": model}


# ---------------------------------------------------------------- worker side


def _metric_rows(run_id: str, step: int, logs: dict) -> list[dict]:
    return [{"run_id": run_id, "step": int(step), "name": k, "value": float(v)}
            for k, v in logs.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]


def last_checkpoint(out_dir: Path) -> Path | None:
    """The newest complete checkpoint (``trainer_state.json`` is written last, so a save cut short by a
    cancel does not count)."""
    done = [p for p in (Path(out_dir) / "trainer").glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    return max(done, key=lambda p: int(p.name.rsplit("-", 1)[1]), default=None)


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return 1 << 30


def run_job(ctx) -> None:
    """The worker: load the frozen data, train, save, write result.json (also on cancel)."""
    import pyarrow.parquet as pq

    from core.jobs.worker import JobCancelled, world
    from core.steps import train

    spec = ctx.spec
    main_rank = world()[0] == 0  # under `accelerate launch`, rank 0 alone writes
    cfg = TrainJobConfig.from_dict(spec["config"])
    run_cfg = cfg.run_config()
    rows = pq.read_table(ctx.dir / "pairs.parquet").to_pylist()
    out_dir = Path(spec["out_dir"])
    last = last_checkpoint(out_dir)
    resume = str(last) if last and cfg.method == "dpo" else None
    metrics_path = ctx.dir / "metrics.jsonl"
    if main_rank and metrics_path.exists():  # a relaunch resumes from the last checkpoint, else starts over
        keep_until = int(resume.rsplit("-", 1)[-1]) if resume else 0
        kept = [line for line in metrics_path.read_text().splitlines() if _step_of(line) <= keep_until]
        metrics_path.write_text("".join(line + "\n" for line in kept))
    buffer: list[dict] = []
    last_flush = [time.time()]

    def flush() -> None:
        if buffer and main_rank:
            ctx.write_shard("train_metrics", list(buffer))
            buffer.clear()
        last_flush[0] = time.time()

    def on_log(step: int, logs: dict) -> None:
        buffer.extend(_metric_rows(ctx.run_id, step, logs))
        if time.time() - last_flush[0] > 2.0:
            flush()

    def progress(step: int, total: int) -> None:
        if main_rank:
            ctx.progress(step, total, "training", unit="steps")

    cbs = train._callback_classes()
    ctx.progress(0, 0, f"loading {spec['base']['name']}", unit="steps")
    ctx.log(f"{cfg.method} on {len(rows)} examples from {spec['base']['path']} -> {out_dir}")
    result: dict = {"out_dir": str(out_dir), "saved": False, "config": run_cfg.to_dict(), "method": cfg.method}
    try:
        try:
            kw = dict(model=spec["base"]["path"], run_dir=ctx.dir, progress=progress,
                      callbacks=[cbs["LogHookCallback"](on_log)])
            if cfg.method == "dpo":
                if resume:
                    ctx.log(f"resuming from {resume}")
                res = train.train_dpo(run_cfg, rows, out_dir, log=ctx.log, resume_from_checkpoint=resume, **kw)
                result["precomputed_ref"] = getattr(res, "precomputed_ref", None)
            else:
                res = train.train_sft(run_cfg, rows, out_dir, **kw)
        except Exception as e:
            if "out of memory" in str(e).lower() or type(e).__name__ == "OutOfMemoryError":
                raise RuntimeError(f"out of memory: lower the batch size or max length, or use LoRA ({str(e)[:200]})") from e
            raise
    except JobCancelled:
        flush()
        last = last_checkpoint(out_dir)
        result["last_checkpoint"] = str(last) if last else None
        if main_rank:
            (ctx.dir / "result.json").write_text(json.dumps(result, indent=2))
        ctx.log("cancelled" + (f"; last checkpoint {last}" if last else "; no checkpoint was saved"))
        raise
    flush()
    result.update(res.to_dict(), saved=True)
    if not main_rank:
        return
    (ctx.dir / "result.json").write_text(json.dumps(result, indent=2, default=str))
    ctx.progress(res.global_step, res.global_step, f"saved to {out_dir}", unit="steps")


def pair_sources(ws) -> list[dict]:
    """What the Train page offers as pairs: sampling runs with approved pairs (with the model that
    sampled them: the on-policy base), then export files."""
    rows = store_pairs.approved_per_run(ws)
    out = [{"source": r, "label": f"run {r} · {n} approved pairs", "model": (runs.get_run(ws, r) or {}).get("model")}
           for r, n in rows]
    for p in sorted(ws.exports_dir.glob("*")) if ws.exports_dir.is_dir() else []:
        if p.suffix in (".jsonl", ".parquet") or (p.is_dir() and (p / "dataset_info.json").exists()):
            out.append({"source": str(p), "label": f"export {p.name}"})
    return out


TINY_DPO_LEARNING_RATE = 2e-4  # measured on the ~1M-parameter demo models: at 5e-5 gpt2 looped more than its SFT
TINY_PARAMS = 20_000_000


def suggested_learning_rate(model_path: str | None, method: str) -> float | None:
    """A DPO learning rate known to work for this model, or None (then the config's default): models of
    under 20M parameters (the demo's, read from the safetensors header) want 2e-4."""
    if method != "dpo" or not model_path:
        return None
    files = sorted(Path(model_path).glob("*.safetensors")) if Path(model_path).is_dir() else []
    if not files:
        return None
    try:
        from safetensors import safe_open

        n = 0
        for f in files:
            with safe_open(str(f), "np") as st:
                for k in st.keys():
                    shape = st.get_slice(k).get_shape()
                    n += math.prod(shape)
    except Exception:  # not readable as safetensors: no suggestion
        return None
    return TINY_DPO_LEARNING_RATE if n < TINY_PARAMS else None


on_done = finish_training  # the job mechanism calls it once a train job ends done
