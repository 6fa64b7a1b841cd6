"""Fill a workspace with N items × K candidates through the real paths (default 100k × 8).

What goes in, and by which door:

* **items** — a Parquet file of invoices and forms (the demo's pt_BR documents: noisy OCR-like
  text, compact JSON reference, a few hundred to a few thousand characters), imported with
  ``core.importer.import_file``;
* **candidates** — a sampling run created with ``core.jobs.create_job``; its shards are written
  with ``JobContext.write_shard`` exactly as the sampling worker writes them (one shard per
  ``items_per_shard`` items, the worker's column set), then the run is finished and ingested by
  ``core.jobs.sync_runs`` → ``core.jobs.ingestion``;
* **judgments** — a judging run, shards of ``judge_batch`` candidates scored by the real
  ``ReferenceJudge``, ingested the same way;
* **pairs** — ``core.pairs.mine_run`` with the default policy, so the review queue is what mining
  leaves.

Speed (800k candidates in minutes on 2 cores): documents come from a pool of ``pool`` demo records
(Faker is ~2 ms a record); every item is unique all the same, because its id is written into its
document, its reference and all its candidates. Each pool record has a handful of candidate
*variants* (exact, a wrong value, a dropped field, OCR noise, a repeated row, a cut at the token
limit, and a **templated loop** — the same row with changing numbers until the limit, the loop the
design describes). The detector's verdict and the judge's scores are computed once per (record,
variant) on the real text — ids are fixed-width, so the offsets are the same for every item — and
the columns are then assembled with pyarrow, never row by row. ``loop_share`` of the candidates are
loops; the detector flags each of them (checked by the tests on the stored texts).

    .venv/bin/python bench/gen_workspace.py /tmp/ws-big [--items 100000] [--candidates 8]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core import jobs  # noqa: E402
from core.config import option  # noqa: E402
from core.demo.docs import make_record  # noqa: E402
from core.judges.base import JudgeConfig, rubric_of
from core.judges.reference import ReferenceJudge  # noqa: E402
from core.policy.detect import analyze  # noqa: E402
from core.policy.mining import PairPolicy
from core.policy.prompts import build_prompt  # noqa: E402
from core.samplers.base import DecodingConfig
from core.steps.importer import import_file  # noqa: E402
from core.steps.pairs import mine_run  # noqa: E402
from core.steps.sample import VLLM_SHARD_ITEMS, SampleConfig  # noqa: E402
from core.store import Workspace, now, open_workspace
from core.store.candidates import prompt_id  # noqa: E402
from core.store.models import register_model  # noqa: E402

ID_WIDTH = 7  # item ids are "inv-0000042": fixed width, so a variant's loop offsets hold for every item
VARIANTS = ("exact", "wrong_value", "dropped", "ocr_noise", "repeated_row", "loop")
LOOP = VARIANTS.index("loop")
# How often each non-loop variant is drawn (a realistic mix: most outputs good, some off).
CLEAN_WEIGHTS = np.array([0.45, 0.2, 0.12, 0.15, 0.08])


@dataclass
class GenConfig:
    """How big a workspace to generate and how it looks."""

    items: int = option(100_000, "documents (items) imported")
    candidates: int = option(8, "candidates per item (the greedy decode is candidate 0)")
    loop_share: float = option(0.05, "share of candidates that are templated loops run to the token limit")
    pool: int = option(500, "distinct demo records the documents are drawn from (each item gets its own id inside)")
    limit_chars: int = option(3000, "the token limit in characters: loops run to it, longer outputs are cut at it")
    items_per_shard: int = option(VLLM_SHARD_ITEMS, "items per sampling shard (SampleConfig's default for vllm)")
    judge_batch: int = option(16, "candidates per judging shard (JudgeConfig's default)")
    dataset: str = option("invoices", "dataset name")
    model: str = option("bench-sft", "registered model the run is attributed to")
    judge: bool = option(True, "write and ingest a judging run")
    pairs: bool = option(True, "mine pairs from the judging run")
    seed: int = option(0, "seed of everything")


def item_ids(start: int, stop: int) -> pa.Array:
    return pa.array([f"inv-{i:0{ID_WIDTH}d}" for i in range(start, stop)])


# ---------------------------------------------------------------- variants of one record


def _dump(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


_OCR = str.maketrans({"o": "0", "O": "0", "l": "1", "S": "5", "e": "c", "a": "o"})


def _loop_body(obj: dict, rng: random.Random, limit: int) -> str:
    """The record's JSON up to a row, then that row again and again with changing numbers, cut at the limit."""
    if obj.get("itens"):
        row = obj["itens"][rng.randrange(len(obj["itens"]))]
        head = _dump({k: v for k, v in obj.items() if k != "itens"})[:-1] + ',"itens":['
        unit = lambda n: _dump({**row, "quantidade": n, "total": f"{n * 3 + 7},{n % 90 + 10}"}) + ","  # noqa: E731
    else:
        addr = obj.get("endereco") or "Rua das Flores, 12 - Centro"
        head = _dump(obj)[:-1] + ',"observacoes":['
        unit = lambda n: _dump({"endereco": f"{addr.split(',')[0]}, {n}", "telefone": f"13 86{n:02d}-18{n % 97:02d}"}) + ","  # noqa: E731
    parts, size, n = [head], len(head), rng.randrange(2, 9)
    while size < limit:
        u = unit(n)
        parts.append(u)
        size += len(u)
        n = n + rng.choice((1, 2, 3, 5, 7))
    return "".join(parts)


def record_variants(ref: str, rng: random.Random, limit: int) -> list[str]:
    """The JSON bodies of a record's candidate variants, in VARIANTS order."""
    obj = json.loads(ref)
    keys = [k for k, v in obj.items() if isinstance(v, str) and k != "tipo"]
    wrong = dict(obj)
    k = rng.choice(keys)
    wrong[k] = wrong[k][::-1] if len(wrong[k]) > 3 else wrong[k] + "0"
    dropped = dict(obj)
    if obj.get("itens") and len(obj["itens"]) > 1:
        dropped["itens"] = obj["itens"][:-1]
    else:
        dropped.pop(keys[-1])
    noisy = {k: (v.translate(_OCR) if isinstance(v, str) and k != "tipo" and rng.random() < 0.5 else v) for k, v in obj.items()}
    repeated = dict(obj)
    if obj.get("itens"):
        repeated["itens"] = obj["itens"] + obj["itens"][-1:]
    else:
        repeated["observacao"] = obj.get("endereco", "")
    return [_dump(obj), _dump(wrong), _dump(dropped), _dump(noisy), _dump(repeated), _loop_body(obj, rng, limit)]


def _with_id(item_id: str, body: str) -> str:
    """The candidate text as stored: a leading space (prompts end in "JSON:"), the item's id first."""
    return f' {{"documento":"{item_id}",' + body[1:]


@dataclass
class Pool:
    """Per (record, variant): the suffix the text is assembled from, and everything computed on it once."""

    doc_tail: pa.Array  # per record: the document text after the item's id line
    prompt_tail: pa.Array  # per record: build_prompt(document) after the id line
    ref_tail: pa.Array  # per record: the reference after '{"documento":"<id>",'
    kinds: list[str]
    body: pa.Array  # per record × variant (flattened): the text after '{"documento":"<id>",' (cut at the limit)
    finish: pa.Array
    n_tokens: pa.Array
    degenerate: pa.Array
    has_loop: pa.Array
    loops: pa.Array
    metrics: pa.Array
    scores: pa.Array
    overall: pa.Array
    rationale: pa.Array
    quality: pa.Array
    seconds: float


def build_pool(cfg: GenConfig, log=print) -> Pool:
    t0 = time.time()
    rng = random.Random(cfg.seed)
    placeholder = "inv-" + "0" * ID_WIDTH
    judge = ReferenceJudge(rubric_of(JudgeConfig()))
    doc_tail, prompt_tail, ref_tail, kinds = [], [], [], []
    cols: dict[str, list] = {k: [] for k in ("body", "finish", "n_tokens", "degenerate", "has_loop", "loops", "metrics",
                                             "scores", "overall", "rationale", "quality")}
    for p in range(cfg.pool):
        rec = make_record(cfg.seed, "train", p, max_items=30)
        kinds.append(rec["kind"])
        doc_tail.append(rec["text"])
        prompt_tail.append(build_prompt(rec["text"]))
        ref_tail.append(rec["reference"][1:])
        reference = _with_id(placeholder, rec["reference"]).strip()
        for v, body in enumerate(record_variants(rec["reference"], rng, cfg.limit_chars)):
            text = _with_id(placeholder, body)
            finish = "stop"
            if len(text) >= cfg.limit_chars:
                text, finish = text[: cfg.limit_chars], "length"
            det = analyze(text, finish)
            if v == LOOP and not det.degenerate:
                raise AssertionError(f"record {p}: the loop variant is not flagged by the detector")
            j = judge.judge_one({"candidate_id": "x", "text": text, "reference": reference,
                                 "degenerate": det.degenerate, "has_loop": det.has_loop})
            cols["body"].append(text[len(_with_id(placeholder, "{")):])
            cols["finish"].append(finish)
            cols["n_tokens"].append(len(text) // 3)
            cols["degenerate"].append(det.degenerate)
            cols["has_loop"].append(det.has_loop)
            cols["loops"].append(json.dumps([lp.to_dict() for lp in det.loops], ensure_ascii=False))
            cols["metrics"].append(json.dumps(det.metrics))
            cols["scores"].append(json.dumps(j.scores))
            cols["overall"].append(j.overall)
            cols["rationale"].append(j.rationale)
            cols["quality"].append(j.scores.get("quality"))
    seconds = time.time() - t0
    log(f"pool: {cfg.pool} records × {len(VARIANTS)} variants analysed and judged in {seconds:.1f} s")
    return Pool(pa.array(doc_tail), pa.array(prompt_tail), pa.array(ref_tail), kinds,
                **{k: pa.array(v) for k, v in cols.items()}, seconds=seconds)


def _assign(cfg: GenConfig, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Each item's record, and each candidate's variant (flattened item-major)."""
    rng = np.random.default_rng(cfg.seed)
    record = rng.integers(0, cfg.pool, size=n_items)
    n = n_items * cfg.candidates
    variant = rng.choice(len(CLEAN_WEIGHTS), size=n, p=CLEAN_WEIGHTS / CLEAN_WEIGHTS.sum())
    variant[rng.random(n) < cfg.loop_share] = LOOP
    return record, variant


def _cat(*parts) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def items_table(pool: Pool, record: np.ndarray, start: int, stop: int) -> pa.Table:
    ids = item_ids(start, stop)
    rec = pa.array(record[start:stop])
    text = _cat(pa.scalar("Documento "), ids, pa.scalar("\n"), pool.doc_tail.take(rec))
    reference = _cat(pa.scalar('{"documento":"'), ids, pa.scalar('",'), pool.ref_tail.take(rec))
    return pa.table({"id": ids, "split": pa.repeat("train", stop - start), "text": text, "reference": reference,
                     "kind": pa.array(pool.kinds).take(rec)})


def prompt_columns(prompts: pa.Array, k: int, legacy: bool = False) -> dict:
    """What a shard holds of each candidate's prompt: its id on every row and the text on each item's first
    (core.steps.sample.candidate_rows); ``legacy``: the text on every row and no id (before schema 9)."""
    if legacy:
        return {"prompt": prompts}
    ids = pa.array([prompt_id(p) for p in prompts.to_pylist()[::k]])
    first = pa.array(np.arange(len(prompts)) % k == 0)
    return {"prompt_id": ids.take(pa.array(np.arange(len(prompts)) // k)), "prompt": pc.if_else(first, prompts, pa.scalar(None, pa.string()))}


def candidates_table(cfg: GenConfig, pool: Pool, record: np.ndarray, variant: np.ndarray, run_id: str,
                     start: int, stop: int, decoding: str, with_quality: bool = False, legacy: bool = False) -> pa.Table:
    """The sampling worker's columns (core.steps.sample.candidate_rows) for items [start, stop)."""
    k = cfg.candidates
    n = (stop - start) * k
    ids = pa.array(np.repeat(np.array(item_ids(start, stop).to_pylist(), dtype=object), k))
    sample_index = pa.array(np.tile(np.arange(k, dtype=np.int32), stop - start))
    pv = pa.array(record[start:stop].repeat(k) * len(VARIANTS) + variant[start * k:stop * k])
    rec = pa.array(record[start:stop].repeat(k))
    cid = _cat(pa.scalar(run_id + ":"), ids, pa.scalar(":"), pc.cast(sample_index, pa.string()))
    rng = np.random.default_rng(cfg.seed + start)
    greedy = np.tile(np.arange(k) == 0, stop - start)
    dec = np.where(greedy, decoding.replace('"greedy": false', '"greedy": true'), decoding)
    extra = {"quality": pool.quality.take(pv)} if with_quality else {}
    return pa.table({
        "candidate_id": cid,
        "run_id": pa.repeat(run_id, n),
        "dataset": pa.repeat(cfg.dataset, n),
        "item_id": ids,
        "sample_index": sample_index,
        **prompt_columns(_cat(pa.scalar("Documento "), ids, pa.scalar("\n"), pool.prompt_tail.take(rec)), k, legacy),
        "text": _cat(pa.scalar(' {"documento":"'), ids, pa.scalar('",'), pool.body.take(pv)),
        "n_tokens": pool.n_tokens.take(pv),
        "finish_reason": pool.finish.take(pv),
        "backend": pa.repeat("vllm", n),
        "decoding": pa.array(dec, pa.string()),
        "seed": pa.array(rng.integers(0, 2**32, size=n), pa.int64()),
        "latency_s": pa.array(rng.gamma(2.0, 1.5, size=n)),
        "degenerate": pool.degenerate.take(pv),
        "has_loop": pool.has_loop.take(pv),
        "loops": pool.loops.take(pv),
        "metrics": pool.metrics.take(pv),
        "created_at": pa.array(np.full(n, np.datetime64(now(), "us"))),
        **extra,
    })


def judgments_table(pool: Pool, cands: pa.Table, record: np.ndarray, variant: np.ndarray, judge_run: str,
                    start: int, stop: int, k: int) -> pa.Table:
    pv = pa.array(record[start:stop].repeat(k) * len(VARIANTS) + variant[start * k:stop * k])
    n = len(pv)
    return pa.table({
        "judgment_id": _cat(pa.scalar(judge_run + ":"), cands.column("candidate_id")),
        "run_id": pa.repeat(judge_run, n),
        "candidate_id": cands.column("candidate_id"),
        "judge": pa.repeat("reference", n),
        "scores": pool.scores.take(pv),
        "overall": pool.overall.take(pv),
        "rationale": pool.rationale.take(pv),
        "error": pa.nulls(n, pa.string()),
        "created_at": pa.array(np.full(n, np.datetime64(now(), "us"))),
    })


def write_shards(ctx: jobs.JobContext, table_name: str, table: pa.Table, rows_per_shard: int) -> int:
    """The worker's way: one write_shard per unit of progress."""
    written = 0
    for off in range(0, table.num_rows, rows_per_shard):
        ctx.write_shard(table_name, table.slice(off, rows_per_shard))
        written += 1
    return written


def _finish(job_dir: Path, done: int, total: int, unit: str) -> None:
    """What run_job leaves when a worker ends: progress and the final status."""
    (job_dir / "progress.json").write_text(json.dumps({"done": done, "total": total, "unit": unit, "rate": 0, "eta_s": 0,
                                                       "message": "", "updated_at": time.time()}))
    (job_dir / "status.json").write_text(json.dumps({"status": "done", "error": None, "finished_at": time.time()}))


def sample_config(cfg: GenConfig) -> SampleConfig:
    return SampleConfig(model=cfg.model, dataset=cfg.dataset, split="train", backend="vllm", items_per_shard=cfg.items_per_shard,
                        decoding=DecodingConfig(n=cfg.candidates - 1, with_greedy=True, max_new_tokens=cfg.limit_chars // 3))


def write_candidate_job(cfg: GenConfig, pool: Pool, job_dir: Path, run_id: str, chunk_items: int = 10_000,
                        record_variant=None, judge_dir: Path | None = None, judge_run: str | None = None,
                        with_quality: bool = False, legacy: bool = False) -> dict:
    """The sampling job's shards (and, with judge_dir, the judging job's) for all items; no database needed."""
    record, variant = record_variant or _assign(cfg, cfg.items)
    decoding = json.dumps({**asdict(sample_config(cfg).decoding), "greedy": False})
    ctx = jobs.JobContext(job_dir)
    jctx = jobs.JobContext(judge_dir) if judge_dir else None
    out = {"candidate_shards": 0, "judgment_shards": 0, "candidates": 0}
    for start in range(0, cfg.items, chunk_items):
        stop = min(cfg.items, start + chunk_items)
        cands = candidates_table(cfg, pool, record, variant, run_id, start, stop, decoding, with_quality, legacy)
        out["candidate_shards"] += write_shards(ctx, "candidates", cands, cfg.items_per_shard * cfg.candidates)
        out["candidates"] += cands.num_rows
        if jctx is not None:
            judg = judgments_table(pool, cands, record, variant, judge_run, start, stop, cfg.candidates)
            out["judgment_shards"] += write_shards(jctx, "judgments", judg, cfg.judge_batch)
    return out


def has_quality(ws: Workspace) -> bool:
    """Whether this store's candidates carry the worker-computed quality column (schema 5 and later)."""
    return bool(ws.cursor().execute("SELECT 1 FROM information_schema.columns WHERE table_name = 'candidates' "
                                    "AND column_name = 'quality'").fetchall())


def generate(root: str | Path, cfg: GenConfig | None = None, log=print) -> dict:
    """Build the workspace at `root` (created; must not hold loopbreak data yet). Returns counts and timings."""
    cfg = cfg or GenConfig()
    t_all = time.time()
    ws: Workspace = open_workspace(root)
    stats: dict = {"config": asdict(cfg), "timings_s": {}}
    tm = stats["timings_s"]
    pool = build_pool(cfg, log)
    tm["pool"] = round(pool.seconds, 2)

    t = time.time()
    record, variant = _assign(cfg, cfg.items)
    items_path = ws.exports_dir / "bench-items.parquet"
    pq.write_table(items_table(pool, record, 0, cfg.items), items_path)
    res = import_file(ws, items_path, cfg.dataset)
    tm["import_items"] = round(time.time() - t, 2)
    log(f"items: {res.new:,} imported in {tm['import_items']:.1f} s")

    register_model(ws.cursor(), name=cfg.model, path=f"/models/{cfg.model}", family="qwen2.5-3b", stage="sft")
    scfg = sample_config(cfg)
    run_id = jobs.create_job(ws, "sample", {"config": asdict(scfg), "model_path": f"/models/{cfg.model}",
                                            "model_info": {"name": cfg.model}},
                             model=cfg.model, dataset=cfg.dataset, split="train", run_id="sample-bench",
                             instruction=scfg.instruction, backend=scfg.backend, model_path=f"/models/{cfg.model}")
    judge_run = None
    if cfg.judge:
        judge_run = jobs.create_job(ws, "judge", {"config": asdict(JudgeConfig()), "source_run": run_id},
                                    model="reference", dataset=cfg.dataset, run_id="judge-bench", source_run=run_id)
    job_dir, judge_dir = ws.jobs_dir / run_id, (ws.jobs_dir / judge_run if judge_run else None)
    ws.cursor().execute("UPDATE runs SET status = 'running' WHERE run_id IN (?, ?)", [run_id, judge_run or run_id])
    pq.write_table(ws.cursor().sql("SELECT dataset, item_id, text FROM items WHERE dataset = $1 ORDER BY item_id",
                                   params=[cfg.dataset]).to_arrow_table(), job_dir / "items.parquet")
    t = time.time()
    written = write_candidate_job(cfg, pool, job_dir, run_id, record_variant=(record, variant),
                                  judge_dir=judge_dir, judge_run=judge_run, with_quality=has_quality(ws))
    tm["write_shards"] = round(time.time() - t, 2)
    stats.update(written)
    log(f"shards: {written['candidate_shards']:,} candidate + {written['judgment_shards']:,} judgment shards "
        f"({written['candidates']:,} candidates) written in {tm['write_shards']:.1f} s")
    _finish(job_dir, cfg.items, cfg.items, "items")
    t = time.time()
    jobs.sync_runs(ws, [run_id])
    tm["ingest_candidates"] = round(time.time() - t, 2)
    log(f"ingest: candidates in {tm['ingest_candidates']:.1f} s")
    if judge_dir is not None:
        _finish(judge_dir, written["candidates"], written["candidates"], "candidates")
        t = time.time()
        jobs.sync_runs(ws, [judge_run])
        tm["ingest_judgments"] = round(time.time() - t, 2)
        log(f"ingest: judgments in {tm['ingest_judgments']:.1f} s")
        if cfg.pairs:
            t = time.time()
            stats["mining"] = mine_run(ws, judge_run, PairPolicy())
            tm["mine_pairs"] = round(time.time() - t, 2)
            log(f"pairs: {stats['mining']['pairs']:,} mined in {tm['mine_pairs']:.1f} s")
    stats["run_id"], stats["judge_run"] = run_id, judge_run
    stats["loop_candidates"] = int((variant == LOOP).sum())
    tm["total"] = round(time.time() - t_all, 2)
    log(f"total {tm['total']:.1f} s")
    stats["workspace"] = str(ws.root)
    return stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workspace")
    ap.add_argument("--items", type=int, default=GenConfig.items)
    ap.add_argument("--candidates", type=int, default=GenConfig.candidates)
    ap.add_argument("--pool", type=int, default=GenConfig.pool)
    ap.add_argument("--loop-share", type=float, default=GenConfig.loop_share)
    ap.add_argument("--items-per-shard", type=int, default=GenConfig.items_per_shard)
    ap.add_argument("--judge-batch", type=int, default=GenConfig.judge_batch)
    ap.add_argument("--no-pairs", action="store_true")
    a = ap.parse_args()
    cfg = GenConfig(items=a.items, candidates=a.candidates, pool=a.pool, loop_share=a.loop_share,
                    items_per_shard=a.items_per_shard, judge_batch=a.judge_batch, pairs=not a.no_pairs)
    stats = generate(a.workspace, cfg)
    print(json.dumps({k: v for k, v in stats.items() if k != "mining"} | {"pairs": stats.get("mining", {}).get("pairs")}, default=str))


if __name__ == "__main__":
    main()
