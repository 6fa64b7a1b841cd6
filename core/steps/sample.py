"""Sampling: N candidates per item from a model, as a resumable background job.

The backends (core.samplers) generate; this step freezes the items into the job folder, builds each
prompt, runs the detector on every candidate and writes the shards the writer ingests.

Determinism, so a killed job resumes to exactly the candidates of an uninterrupted run: every
item gets its own seed, derived from (seed, item id); the transformers backend seeds a batch with
its first item's seed, and a resumed job re-forms the same shards, hence the same batches.
The greedy decode, when asked for, is candidate 0 of the item: loops often appear only there.

Page images: a backend that reads them (``sampler.vision``) gets each item's page, bounded to
``max_pixels`` (``core.images``), and a prompt of the image placeholder and the instruction; the
candidate records that prompt (by id: the text is stored once, in `prompts`) and the page's content
hash. An item whose page is missing or unreadable is skipped with the reason and the run goes on. What cannot work at all is refused
before the job starts (:func:`check_images`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields

from core.config import option
from core.images import DEFAULT_MAX_PIXELS, ImageProblem, image_hash, load_image
from core.loader import reads_images
from core.policy.detect import analyze
from core.policy.metrics import quality
from core.policy.prompts import DEFAULT_INSTRUCTION, build_prompt
from core.samplers import BACKENDS, sampler_for
from core.samplers.base import DecodingConfig, ItemSkipped, Request, SamplerError
from core.store import candidates as store_candidates
from core.store import items as store_items
from core.store import now

SHARD_ITEMS, VLLM_SHARD_ITEMS = 8, 64  # items per shard by default (SampleConfig.shard_items)


@dataclass
class SampleConfig:
    """A sampling run: which model, which items, which backend. The job's spec holds exactly this."""

    model: str = option("", "registered model name, local path, or hub id")
    dataset: str = option("", "dataset whose items are sampled")
    split: str | None = option(None, "split of the dataset (all splits when empty)")
    limit: int | None = option(None, "sample only the first N items: the way to try a setup before the full run")
    backend: str = option("transformers", "transformers (CPU/GPU), vllm (GPU), or openai (any OpenAI-compatible server)")
    base_url: str | None = option(None, "server URL for the openai backend, e.g. http://127.0.0.1:8000; several, comma-separated, share the load")
    api_key_env: str = option("OPENAI_API_KEY", "environment variable holding the server's API key, if it needs one")
    server_model: str | None = option(None, "model name the server expects (default: the model's name)")
    instruction: str = option(DEFAULT_INSTRUCTION, "instruction appended to each document")
    chat_template: str = option("auto", "auto: use the tokenizer's chat template when it has one; on; off")
    items_per_shard: int | None = option(None, "items per output shard, the unit of progress, of resume and of one generate call "
                                         f"(default: {VLLM_SHARD_ITEMS} for vllm, whose batches want hundreds of sequences; else {SHARD_ITEMS})")
    concurrency: int = option(8, "requests in flight (openai backend)")
    timeout_s: float = option(120.0, "per-request timeout in seconds (openai backend)")
    retries: int = option(3, "retries per request after a timeout or a 5xx (openai backend)")
    device: str = option("auto", "transformers device: auto, cpu, cuda")
    images: str = option("auto", "page images: auto (fed to a model that reads them; the openai backend sends them when items have them), on (required), off (text only)")
    max_pixels: int = option(DEFAULT_MAX_PIXELS, "largest page image in pixels; bigger ones are scaled down (aspect kept) before any model sees them")
    min_pixels: int | None = option(None, "vllm: smallest image size the model's processor scales pages up to (Qwen-VL's min_pixels)")
    endpoint: str = option("auto", "openai backend: completions, chat, or auto (chat for pages and for chat-only servers)")
    tensor_parallel_size: int = option(1, "vllm: GPUs one model is split over")
    data_parallel_size: int = option(1, "vllm: model replicas, one per GPU group")
    gpu_memory_utilization: float = option(0.9, "vllm: share of each GPU's memory the engine may take")
    max_model_len: int | None = option(None, "vllm: context length to allocate (None: the model's)")
    decoding: DecodingConfig = field(default_factory=DecodingConfig, metadata={"help": "decoding parameters"})

    def shard_items(self) -> int:
        """Items per shard. vllm decodes a shard's sequences as one batch, and a shard ends with its longest
        sequence (a loop runs to the token limit), so small shards leave the GPU idle; bigger shards are
        also fewer files for the writer (1M candidates: 15,625 shards of 8 items took 3x as long to ingest as
        ~1,960 of 64, bench/bench_ingest.py: DuckDB pays a fixed cost per Parquet file, whatever its size)."""
        if self.items_per_shard:
            return max(1, self.items_per_shard)
        return VLLM_SHARD_ITEMS if self.backend == "vllm" else SHARD_ITEMS

    @classmethod
    def from_dict(cls, d: dict) -> "SampleConfig":
        names = {f.name for f in fields(cls)}
        dec = DecodingConfig(**{k: v for k, v in (d.get("decoding") or {}).items() if k in {f.name for f in fields(DecodingConfig)}})
        return cls(**{k: v for k, v in d.items() if k in names and k != "decoding"}, decoding=dec)


def item_seed(seed: int, item_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{item_id}".encode()).digest()[:4], "big")


def requests_for(prompt: str, decoding: DecodingConfig, seed: int, image=None) -> list[Request]:
    reqs = [Request(prompt, 1, True, seed, image)] if decoding.with_greedy else []
    if decoding.n > 0:
        reqs.append(Request(prompt, decoding.n, False, seed, image))
    return reqs


def item_input(sampler, item: dict, cfg: SampleConfig):
    """(prompt, page image or None, its hash) of one item for this sampler, or the ImageProblem that skips it.

    A backend that reads images gets the page and a prompt of the image placeholder and the
    instruction; the openai backend falls back to the text prompt for an item without a page."""
    path = item.get("image_path")
    if getattr(sampler, "vision", False) and cfg.images != "off" and (path or sampler.name != "openai"):
        try:
            image = load_image(path, cfg.max_pixels)
        except ImageProblem as e:
            return e
        return sampler.format_image_prompt(cfg.instruction, cfg.chat_template), image, image_hash(path)
    return sampler.format_prompt(build_prompt(item["text"], cfg.instruction), cfg.chat_template), None, None


def check_images(cfg: SampleConfig, model_path: str, items: list[dict]) -> list[str]:
    """Refuse what cannot work before the job starts; return the warnings the run carries.

    A model that reads images needs every item's page; a text-only model given pages ignores them
    with a warning (``images=on`` makes that an error). For the openai backend, ``auto`` becomes
    ``on`` when the model has a local config with a vision part, else ``off`` (a server cannot be
    asked what it reads): ``cfg.images`` is set to the choice made, which the run records."""
    from core.store import WorkspaceError

    if cfg.images not in ("auto", "on", "off"):
        raise WorkspaceError(f"images is auto, on or off (got {cfg.images!r})")
    if cfg.max_pixels is not None and cfg.max_pixels < 1024:
        raise WorkspaceError(f"max pixels must be at least 1024 (got {cfg.max_pixels})")
    with_image = sum(1 for it in items if it.get("image_path"))
    name = cfg.model or model_path
    vision = reads_images(model_path)
    if cfg.backend == "openai":
        if cfg.images == "auto":
            cfg.images = "on" if vision else "off"
        if cfg.images == "on" and with_image < len(items):
            raise WorkspaceError(f"page images are sent, but {len(items) - with_image} of {len(items)} items have none")
        if cfg.images == "on" and cfg.endpoint == "completions":
            raise WorkspaceError("page images go through chat completions: set endpoint to chat or auto")
        return []
    if cfg.images == "off":
        if vision:
            raise WorkspaceError(f"{name} reads page images: it cannot sample with images off")
        return []
    if vision and with_image < len(items):
        raise WorkspaceError(
            f"{name} reads page images, but {len(items) - with_image} of {len(items)} items have none: "
            "import the documents with their images, or choose a text model")
    if vision is False and with_image:
        if cfg.images == "on":
            raise WorkspaceError(f"images=on but {name} is a text-only model: it cannot read page images")
        return [f"{name} is a text-only model: the page images of {with_image} items are ignored "
                "(it reads their text); choose a vision model to use them"]
    return []


def candidate_rows(run_id: str, item: dict, prompt: str, reqs: list[Request], results: list, cfg: SampleConfig, backend: str,
                   image_sha: str | None = None) -> tuple[list[dict], str | None]:
    """Candidates of one item (greedy first), each with the detector's verdict; or the skip reason.

    Every candidate names its prompt by ``prompt_id``; the first also carries the text, which the writer
    stores once in `prompts` (core/store/runs.py shard_select)."""
    rows, index, key = [], 0, store_candidates.prompt_id(prompt)
    for req, gens in zip(reqs, results):
        if isinstance(gens, ItemSkipped):
            return [], str(gens)
        for g in gens:
            det = analyze(g.text, g.finish_reason)
            decoding = {**asdict(cfg.decoding), "greedy": req.greedy}
            rows.append({
                "candidate_id": f"{run_id}:{item['item_id']}:{index}", "run_id": run_id,
                "dataset": item["dataset"], "item_id": item["item_id"], "sample_index": index,
                "prompt_id": key, "prompt": prompt if index == 0 else None, "image_hash": image_sha,
                "text": g.text, "n_tokens": g.n_tokens, "finish_reason": g.finish_reason,
                "backend": backend, "decoding": json.dumps(decoding), "seed": req.seed,
                "latency_s": g.latency_s, "degenerate": det.degenerate, "has_loop": det.has_loop,
                "loops": json.dumps([lp.to_dict() for lp in det.loops], ensure_ascii=False),
                "metrics": json.dumps(det.metrics), "created_at": now(),
                "quality": None if item.get("reference") is None else quality(g.text.strip(), item["reference"].strip()),
            })
            index += 1
    return rows, None


SHARDABLE = True  # `loopbreak job run DIR --shard k/K`: K workers share the item shards (each item's seed makes it exact)


def run_job(ctx) -> None:
    """The worker: sample every item not yet in a shard, a shard of items at a time (under --shard k/K,
    every K-th shard of items from the k-th: all workers cut the same shards from the same list)."""
    import pyarrow.parquet as pq

    cfg = SampleConfig.from_dict(ctx.spec["config"])
    items = pq.read_table(ctx.dir / "items.parquet").to_pylist()
    done_ids: set[str] = set()
    prev = ctx.read_shards("candidates", columns=["item_id"])
    if prev is not None:
        done_ids = set(prev.column("item_id").to_pylist())
    skipped_path = ctx.state_dir / "skipped.json"
    skipped: dict[str, str] = {}  # tried again on resume: a server that was down may be up now
    step = cfg.shard_items()
    units = [(u, items[start:start + step]) for u, start in enumerate(range(0, len(items), step)) if ctx.mine(u)]
    mine = [it for _, unit in units for it in unit]
    todo = [it for it in mine if it["item_id"] not in done_ids]
    total = len(mine)
    ctx.progress(total - len(todo), total, "loading the model")
    for w in ctx.spec.get("warnings") or []:
        ctx.log(f"warning: {w}")
    sampler = sampler_for(cfg, ctx.spec["model_path"])
    ctx.log(f"{len(todo)} of {total} items to sample with {sampler.name} ({total - len(todo)} already done)")
    done = total - len(todo)
    for _, unit in units:
        # Shards are cut from the whole item list, not from what is left: a resumed job decodes the same
        # batches as an uninterrupted one, even when an item skipped earlier (too long) is tried again.
        batch = [it for it in unit if it["item_id"] not in done_ids]
        if not batch:
            continue
        inputs = [item_input(sampler, it, cfg) for it in batch]
        per_item = [[] if isinstance(x, ImageProblem) else requests_for(x[0], cfg.decoding, item_seed(cfg.decoding.seed, it["item_id"]), x[1])
                    for it, x in zip(batch, inputs)]
        flat = [r for reqs in per_item for r in reqs]
        results = sampler.generate(flat, cfg.decoding) if flat else []
        rows, pos = [], 0
        for it, x, reqs in zip(batch, inputs, per_item):
            if isinstance(x, ImageProblem):
                item_rows, reason = [], str(x)
            else:
                item_rows, reason = candidate_rows(ctx.run_id, it, x[0], reqs, results[pos:pos + len(reqs)], cfg, sampler.name, x[2])
            pos += len(reqs)
            if reason:
                skipped[it["item_id"]] = reason
                ctx.log(f"skipped item {it['item_id']}: {reason}")
            rows += item_rows
        ctx.write_shard("candidates", rows)
        skipped_path.write_text(json.dumps(skipped, ensure_ascii=False))
        done += len(batch)
        ctx.progress(done, total, f"{len(skipped)} skipped" if skipped else "")
    if skipped and len(skipped) == total:
        raise SamplerError(f"every item was skipped; first reason: {next(iter(skipped.values()))}")


def start_sampling(ws, cfg: SampleConfig, run_id: str | None = None, launch: bool = True) -> str:
    """Resolve the model, freeze the item list into the job folder, create the run and launch it
    (``launch=False``: leave it queued for workers started elsewhere, e.g. ``job run DIR --shard k/K``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from core import jobs
    from core.store import WorkspaceError
    from core.store.models import resolve_model

    if cfg.backend not in BACKENDS:
        raise WorkspaceError(f"unknown backend {cfg.backend!r}: choose one of {', '.join(BACKENDS)}")
    if cfg.decoding.n < 0 or (cfg.decoding.n == 0 and not cfg.decoding.with_greedy):
        raise WorkspaceError("ask for at least one candidate per item (n ≥ 1, or the greedy decode)")
    if cfg.decoding.max_new_tokens < 1:
        raise WorkspaceError("max new tokens must be at least 1")
    model = resolve_model(ws.cursor(), cfg.model, need_local=cfg.backend != "openai")
    items = select_items(ws, cfg.dataset, cfg.split, cfg.limit)
    warnings = check_images(cfg, model["path"], items)
    run_id = jobs.create_job(
        ws, "sample", {"config": asdict(cfg), "model_path": model["path"], "model_info": model, "warnings": warnings},
        model=model["name"], dataset=cfg.dataset, split=cfg.split, run_id=run_id,
        instruction=cfg.instruction, backend=cfg.backend, model_path=model["path"],
    )
    pq.write_table(pa.Table.from_pylist(items), ws.jobs_dir / run_id / "items.parquet")
    if launch:
        jobs.launch(ws, run_id)
    return run_id


def select_items(ws, dataset: str, split: str | None, limit: int | None) -> list[dict]:
    """The items a run samples; none is an error the user can act on."""
    from core.store import WorkspaceError

    items = store_items.select_items(ws, dataset, split, limit)
    if not items:
        raise WorkspaceError(f"no items in dataset {dataset!r}" + (f" split {split!r}" if split else "") + ": import documents first")
    return items


def run_summary(ws, run_id: str) -> dict:
    """Candidates, items, degeneration and finish reasons of one sampling run."""
    counts = store_candidates.run_counts(ws, run_id)
    job_dir = ws.jobs_dir / run_id
    skipped = {}
    for path in [job_dir / "skipped.json", *sorted(job_dir.glob("workers/*/skipped.json"))]:  # K workers: one file each
        try:
            skipped.update(json.loads(path.read_text()))
        except (OSError, ValueError):
            pass
    spec_path = ws.jobs_dir / run_id / "spec.json"
    warnings = (json.loads(spec_path.read_text()).get("warnings") or []) if spec_path.exists() else []
    n = counts["candidates"]
    return {"run_id": run_id, **counts, "degeneration_rate": counts["degenerate"] / n if n else 0.0, "skipped": skipped,
            "warnings": warnings}
