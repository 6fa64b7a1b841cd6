"""Sampling: N candidates per item from a model, as a resumable background job.

The backends (core.samplers) generate; this step freezes the items into the job folder, builds each
prompt, runs the detector on every candidate and writes the shards the writer ingests.

Determinism, so a killed job resumes to exactly the candidates of an uninterrupted run: every
item gets its own seed, derived from (seed, item id); the transformers backend seeds a batch with
its first item's seed, and a resumed job re-forms the same shards, hence the same batches.
The greedy decode, when asked for, is candidate 0 of the item: loops often appear only there.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields

from core.config import option
from core.policy.detect import analyze
from core.policy.metrics import quality
from core.policy.prompts import DEFAULT_INSTRUCTION, build_prompt
from core.samplers import BACKENDS, sampler_for
from core.samplers.base import DecodingConfig, ItemSkipped, Request, SamplerError
from core.store import candidates as store_candidates
from core.store import items as store_items
from core.store import now


@dataclass
class SampleConfig:
    """A sampling run: which model, which items, which backend. The job's spec holds exactly this."""

    model: str = option("", "registered model name, local path, or hub id")
    dataset: str = option("", "dataset whose items are sampled")
    split: str | None = option(None, "split of the dataset (all splits when empty)")
    limit: int | None = option(None, "sample only the first N items: the way to try a setup before the full run")
    backend: str = option("transformers", "transformers (CPU/GPU), vllm (GPU), or openai (any OpenAI-compatible server)")
    base_url: str | None = option(None, "server URL for the openai backend, e.g. http://127.0.0.1:8000")
    api_key_env: str = option("OPENAI_API_KEY", "environment variable holding the server's API key, if it needs one")
    server_model: str | None = option(None, "model name the server expects (default: the model's name)")
    instruction: str = option(DEFAULT_INSTRUCTION, "instruction appended to each document")
    chat_template: str = option("auto", "auto: use the tokenizer's chat template when it has one; on; off")
    items_per_shard: int = option(8, "items per output shard: the unit of progress and of resume")
    concurrency: int = option(8, "requests in flight (openai backend)")
    timeout_s: float = option(120.0, "per-request timeout in seconds (openai backend)")
    retries: int = option(3, "retries per request after a timeout or a 5xx (openai backend)")
    device: str = option("auto", "transformers device: auto, cpu, cuda")
    decoding: DecodingConfig = field(default_factory=DecodingConfig, metadata={"help": "decoding parameters"})

    @classmethod
    def from_dict(cls, d: dict) -> "SampleConfig":
        names = {f.name for f in fields(cls)}
        dec = DecodingConfig(**{k: v for k, v in (d.get("decoding") or {}).items() if k in {f.name for f in fields(DecodingConfig)}})
        return cls(**{k: v for k, v in d.items() if k in names and k != "decoding"}, decoding=dec)


def item_seed(seed: int, item_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{item_id}".encode()).digest()[:4], "big")


def requests_for(prompt: str, decoding: DecodingConfig, seed: int) -> list[Request]:
    reqs = [Request(prompt, 1, True, seed)] if decoding.with_greedy else []
    if decoding.n > 0:
        reqs.append(Request(prompt, decoding.n, False, seed))
    return reqs


def candidate_rows(run_id: str, item: dict, prompt: str, reqs: list[Request], results: list, cfg: SampleConfig, backend: str) -> tuple[list[dict], str | None]:
    """Candidates of one item (greedy first), each with the detector's verdict; or the skip reason."""
    rows, index = [], 0
    for req, gens in zip(reqs, results):
        if isinstance(gens, ItemSkipped):
            return [], str(gens)
        for g in gens:
            det = analyze(g.text, g.finish_reason)
            decoding = {**asdict(cfg.decoding), "greedy": req.greedy}
            rows.append({
                "candidate_id": f"{run_id}:{item['item_id']}:{index}", "run_id": run_id,
                "dataset": item["dataset"], "item_id": item["item_id"], "sample_index": index,
                "prompt": prompt, "text": g.text, "n_tokens": g.n_tokens, "finish_reason": g.finish_reason,
                "backend": backend, "decoding": json.dumps(decoding), "seed": req.seed,
                "latency_s": g.latency_s, "degenerate": det.degenerate, "has_loop": det.has_loop,
                "loops": json.dumps([lp.to_dict() for lp in det.loops], ensure_ascii=False),
                "metrics": json.dumps(det.metrics), "created_at": now(),
                "quality": None if item.get("reference") is None else quality(g.text.strip(), item["reference"].strip()),
            })
            index += 1
    return rows, None


def run_job(ctx) -> None:
    """The worker: sample every item not yet in a shard, a shard of items at a time."""
    import pyarrow.parquet as pq

    cfg = SampleConfig.from_dict(ctx.spec["config"])
    items = pq.read_table(ctx.dir / "items.parquet").to_pylist()
    done_ids: set[str] = set()
    prev = ctx.read_shards("candidates", columns=["item_id"])
    if prev is not None:
        done_ids = set(prev.column("item_id").to_pylist())
    skipped_path = ctx.dir / "skipped.json"
    skipped: dict[str, str] = {}  # tried again on resume: a server that was down may be up now
    todo = [it for it in items if it["item_id"] not in done_ids]
    total = len(items)
    ctx.progress(total - len(todo), total, "loading the model")
    sampler = sampler_for(cfg, ctx.spec["model_path"])
    ctx.log(f"{len(todo)} of {total} items to sample with {sampler.name} ({len(done_ids)} already done)")
    done = total - len(todo)
    step = max(1, cfg.items_per_shard)
    for start in range(0, total, step):
        # Shards are cut from the whole item list, not from what is left: a resumed job decodes the same
        # batches as an uninterrupted one, even when an item skipped earlier (too long) is tried again.
        batch = [it for it in items[start:start + step] if it["item_id"] not in done_ids]
        if not batch:
            continue
        prompts = [sampler.format_prompt(build_prompt(it["text"], cfg.instruction), cfg.chat_template) for it in batch]
        per_item = [requests_for(p, cfg.decoding, item_seed(cfg.decoding.seed, it["item_id"])) for it, p in zip(batch, prompts)]
        flat = [r for reqs in per_item for r in reqs]
        results = sampler.generate(flat, cfg.decoding)
        rows, pos = [], 0
        for it, prompt, reqs in zip(batch, prompts, per_item):
            item_rows, reason = candidate_rows(ctx.run_id, it, prompt, reqs, results[pos:pos + len(reqs)], cfg, sampler.name)
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


def start_sampling(ws, cfg: SampleConfig, run_id: str | None = None) -> str:
    """Resolve the model, freeze the item list into the job folder, create the run and launch it."""
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
    run_id = jobs.create_job(
        ws, "sample", {"config": asdict(cfg), "model_path": model["path"], "model_info": model},
        model=model["name"], dataset=cfg.dataset, split=cfg.split, run_id=run_id,
        instruction=cfg.instruction, backend=cfg.backend, model_path=model["path"],
    )
    pq.write_table(pa.Table.from_pylist(items), ws.jobs_dir / run_id / "items.parquet")
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
    skipped_path = ws.jobs_dir / run_id / "skipped.json"
    skipped = json.loads(skipped_path.read_text()) if skipped_path.exists() else {}
    n = counts["candidates"]
    return {"run_id": run_id, **counts, "degeneration_rate": counts["degenerate"] / n if n else 0.0, "skipped": skipped}
