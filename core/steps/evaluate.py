"""Evaluation: held-out items, fixed decoding, degeneration and quality per model, family and stage.

An evaluation run *is* a sampling run (the same worker, the same detector, candidates in the same
table) with three differences: its runs row has kind ``eval``; each candidate carries its
``quality`` against the item's reference, computed by the worker; and the runs of one request
(one per model) form a chain — each worker starts the next when it ends — so evaluating six
models on two cores does not start six processes at once.

Aggregation is per (run → model → family, stage) and decoding mode (greedy / sampled): the
degeneration rate with a Wilson 95% interval, quality ((Levenshtein ratio + BLEU-4)/2), mean
length and finish reasons. The relative reduction of a DPO stage against the family's SFT stage
gets a bootstrap interval over items (paired: the same items under both models).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core.config import option
from core.store import evaluation as store_eval

# Display names of stages, in the order the charts draw them (dpoN = round N of DPO; sftN = SFT
# trained further, e.g. the compute-matched control of bench/reproduce.py).
STAGE_LABELS = {"vanilla": "Vanilla", "sft": "SFT", "dpo": "SFT+DPO"}


def stage_rank(stage: str | None) -> tuple:
    """Sort key: vanilla < sft < sft2 … < dpo < dpo2 …; unknown stages last, by name."""
    m = re.fullmatch(r"(vanilla|sft|dpo)(\d*)", stage or "")
    if not m:
        return (9, 0, stage or "")
    return ({"vanilla": 0, "sft": 1, "dpo": 2}[m.group(1)], int(m.group(2) or 1), "")


def stage_label(stage: str | None) -> str:
    if stage in STAGE_LABELS:
        return STAGE_LABELS[stage]
    m = re.fullmatch(r"(sft|dpo)(\d+)", stage or "")
    if m and m.group(1) == "dpo":
        return f"SFT+DPO round {m.group(2)}"
    if m:
        return f"SFT longer ({stage})"
    return stage or "?"


@dataclass
class EvalConfig:
    """An evaluation request: models × held-out items × one decoding setup."""

    models: list[str] = field(default_factory=list, metadata={"help": "registered model names (or paths) to evaluate"})
    dataset: str = option("", "dataset of the held-out items")
    split: str | None = option("test", "held-out split (never the one you trained or mined pairs on)")
    limit: int | None = option(None, "evaluate only the first N items (a quick look; the interval widens)")
    greedy: bool = option(True, "decode each item greedily: the deployment setting, and where loops show")
    n_sampled: int = option(0, "sampled candidates per item in addition (0 = greedy only)")
    temperature: float = option(0.8, "temperature of the sampled candidates")
    top_p: float = option(0.95, "nucleus mass of the sampled candidates")
    max_new_tokens: int | None = option(None, "token limit; empty = the models' saved generation_config limit, else 512")
    seed: int = option(0, "base seed of the sampled candidates")
    backend: str = option("transformers", "transformers (CPU/GPU), vllm (GPU), or openai (a server)")
    base_url: str | None = option(None, "server URL(s) for the openai backend, comma-separated")
    device: str = option("auto", "transformers device: auto, cpu, cuda")

    @classmethod
    def from_dict(cls, d: dict) -> "EvalConfig":
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in names})


def default_max_new_tokens(paths: list[str], fallback: int = 512) -> int:
    """The largest ``max_new_tokens`` saved in the models' generation_config.json: one limit for
    all, so their rates compare."""
    found = []
    for p in paths:
        try:
            found.append(int(json.loads((Path(p) / "generation_config.json").read_text())["max_new_tokens"]))
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return max(found) if found else fallback


def sample_config(cfg: EvalConfig, model: str, max_new_tokens: int):
    from core.samplers.base import DecodingConfig
    from core.steps.sample import SampleConfig

    return SampleConfig(
        model=model, dataset=cfg.dataset, split=cfg.split, limit=cfg.limit, backend=cfg.backend,
        base_url=cfg.base_url, device=cfg.device,
        decoding=DecodingConfig(n=cfg.n_sampled, temperature=cfg.temperature, top_p=cfg.top_p,
                                max_new_tokens=max_new_tokens, seed=cfg.seed, with_greedy=cfg.greedy),
    )


def start_eval(ws, cfg: EvalConfig, launch: bool = True) -> list[str]:
    """Create one eval run per model (queued), chain them, start the first (``launch=False``: none; each
    folder waits for its workers, ``job run DIR --shard k/K``). Returns the run ids."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from core import jobs
    from core.steps.sample import select_items
    from core.store import WorkspaceError
    from core.store.models import resolve_model

    if not cfg.models:
        raise WorkspaceError("choose at least one model to evaluate")
    if not cfg.greedy and cfg.n_sampled < 1:
        raise WorkspaceError("choose greedy decoding, sampled candidates, or both")
    cur = ws.cursor()
    infos = [resolve_model(cur, m, need_local=cfg.backend != "openai") for m in dict.fromkeys(cfg.models)]
    limit = cfg.max_new_tokens or default_max_new_tokens([i["path"] for i in infos])
    items = select_items(ws, cfg.dataset, cfg.split, cfg.limit)
    run_ids = [jobs.new_run_id("eval") for _ in infos]
    for i, (info, run_id) in enumerate(zip(infos, run_ids)):
        sc = sample_config(cfg, info["name"], limit)
        jobs.create_job(
            ws, "eval", {"config": asdict(sc), "model_path": info["path"], "model_info": info, "eval": asdict(cfg),
                         "then": run_ids[i + 1] if i + 1 < len(run_ids) else None},
            model=info["name"], dataset=cfg.dataset, split=cfg.split, run_id=run_id,
            instruction=sc.instruction, backend=sc.backend, model_path=info["path"],
        )
        pq.write_table(pa.Table.from_pylist(items), ws.jobs_dir / run_id / "items.parquet")
    if launch:
        jobs.launch(ws, run_ids[0])
    return run_ids


SHARDABLE = True  # a sampling job: `job run DIR --shard k/K` splits it (the chain is then the launcher's)


def run_job(ctx) -> None:
    """The worker: a sampling job (candidates get their quality from the item's reference), then the
    next run of the chain — also after a failure, but not after a cancel, which cancels the rest."""
    from core import jobs
    from core.steps import sample

    try:
        sample.run_job(ctx)
    except jobs.JobCancelled:
        jobs.cancel_queued(ctx.dir.parent, ctx.spec.get("then"), "an earlier run of this evaluation was cancelled")
        raise
    finally:
        nxt = ctx.spec.get("then")
        if nxt and not ctx.shard and jobs.job_state(ctx.dir.parent / nxt).status == "queued":
            jobs.spawn(ctx.dir.parent / nxt)


# ---------------------------------------------------------------- intervals


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (sound at k = 0 and for small n)."""
    if n <= 0:
        return (0.0, 1.0)
    p = k / n
    den = 1 + z * z / n
    c = (p + z * z / (2 * n)) / den
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, c - h), min(1.0, c + h))


def bootstrap_reduction(base: list[float], new: list[float], n_boot: int = 2000, seed: int = 0) -> dict:
    """Relative reduction 1 - rate(new)/rate(base) over paired items (per-item degeneration of the
    two models, same order), with a percentile bootstrap 95% interval resampling items."""
    import numpy as np

    a, b = np.asarray(base, dtype=float), np.asarray(new, dtype=float)
    if len(a) == 0 or a.mean() == 0:
        return {"reduction": None, "ci95": None, "n_items": int(len(a))}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(n_boot, len(a)))
    ra, rb = a[idx].mean(axis=1), b[idx].mean(axis=1)
    ok = ra > 0
    red = 1 - rb[ok] / ra[ok]
    lo, hi = np.percentile(red, [2.5, 97.5]) if ok.any() else (None, None)
    return {"reduction": float(1 - b.mean() / a.mean()), "ci95": [float(lo), float(hi)], "n_items": int(len(a))}


# ---------------------------------------------------------------- aggregation


def eval_results(ws, dataset: str | None = None, split: str | None = None) -> list[dict]:
    """One row per eval run and decoding mode: rate with its interval, quality, length, finish reasons."""
    out = []
    for r in store_eval.run_rows(ws, dataset, split):
        n, k = r["candidates"], r["degenerate"]
        lo, hi = wilson_interval(k, n)
        r.update(rate=k / n if n else None, ci_low=lo, ci_high=hi, stage_label=stage_label(r["stage"]))
        for key in ("quality", "quality_clean", "mean_tokens"):
            r[key] = None if r[key] is None else round(float(r[key]), 4)
        out.append(r)
    return out


def item_rates(ws, run_id: str, decoding: str = "greedy") -> dict[str, float]:
    """Per item: the share of its candidates (of that decoding mode) that degenerated."""
    return store_eval.item_rates(ws, run_id, decoding)


def report(ws, dataset: str | None = None, split: str | None = None, decoding: str = "greedy",
           n_boot: int = 2000) -> dict:
    """The paper's table: per family, each stage's latest finished eval run (rate ± CI, quality), and
    every DPO stage's reduction against the family's SFT stage with a bootstrap interval."""
    rows = [r for r in eval_results(ws, dataset, split) if r["decoding"] == decoding and r["status"] == "done"]
    latest: dict[tuple, dict] = {}
    for r in rows:  # ordered by creation: later runs replace earlier ones
        latest[(r["family"], r["stage"])] = r
    families: dict[str, dict] = {}
    for (family, stage), r in sorted(latest.items(), key=lambda kv: (kv[0][0], stage_rank(kv[0][1]))):
        families.setdefault(family, {"stages": [], "reductions": []})["stages"].append(r)
    for family, f in families.items():
        sft = next((r for r in f["stages"] if r["stage"] == "sft"), None)
        for r in f["stages"]:
            if sft is None or r is sft or not re.fullmatch(r"(dpo|sft)\d*", r["stage"] or "") or r["stage"] == "sft":
                continue
            a, b = item_rates(ws, sft["run_id"], decoding), item_rates(ws, r["run_id"], decoding)
            common = sorted(set(a) & set(b))
            red = bootstrap_reduction([a[i] for i in common], [b[i] for i in common], n_boot=n_boot)
            overlap = not (r["ci_high"] < sft["ci_low"] or r["ci_low"] > sft["ci_high"])
            f["reductions"].append({"stage": r["stage"], "label": r["stage_label"], "vs": "sft", "overlap": overlap,
                                    "sft_rate": sft["rate"], "rate": r["rate"], **red})
    dpo = [x for f in families.values() for x in f["reductions"] if x["stage"] == "dpo" and x["reduction"] is not None]
    return {"dataset": dataset, "split": split, "decoding": decoding, "families": families,
            "mean_dpo_reduction": sum(x["reduction"] for x in dpo) / len(dpo) if dpo else None,
            "weak_evidence": _weak_evidence(dpo)}


MIN_EVIDENCE_ITEMS = 30  # fewer held-out items than this and a relative reduction is an anecdote


def _weak_evidence(dpo: list[dict]) -> str | None:
    """Why the mean DPO reduction is not yet evidence (None when it is): too few items, or every
    family's SFT and DPO intervals overlap."""
    if not dpo:
        return None
    small = min(x["n_items"] for x in dpo)
    if small < MIN_EVIDENCE_ITEMS:
        return f"only {small} held-out items in common (at least {MIN_EVIDENCE_ITEMS} are needed)"
    if all(x["overlap"] for x in dpo):
        return "the SFT and SFT+DPO intervals overlap in every family"
    return None


def format_report(rep: dict) -> str:
    """The per-family table as text (the CLI's `loopbreak report`)."""
    if not rep["families"]:
        return "No finished evaluation runs yet: `loopbreak eval --model M --dataset D --split test` first."
    lines = [f"{'family':<14}{'stage':<22}{'degenerate':>12}{'rate':>8}  {'95% CI':<15}{'quality':>8}{'tokens':>8}  model"]
    for family, f in rep["families"].items():
        for r in f["stages"]:
            ci = f"{100 * r['ci_low']:.1f}–{100 * r['ci_high']:.1f}%"
            q = "–" if r["quality"] is None else f"{r['quality']:.3f}"
            lines.append(f"{family:<14}{r['stage_label']:<22}{r['degenerate']:>6}/{r['candidates']:<5}{100 * r['rate']:>7.1f}%  "
                         f"{ci:<15}{q:>8}{r['mean_tokens'] or 0:>8.0f}  {r['model']}")
        for x in f["reductions"]:
            ci = f" (95% CI {100 * x['ci95'][0]:.0f}% to {100 * x['ci95'][1]:.0f}%)" if x.get("ci95") else ""
            val = "n/a (SFT has no loops)" if x["reduction"] is None else f"{100 * x['reduction']:.1f}%{ci}"
            lines.append(f"{'':<14}{x['label']} vs SFT: reduction {val}" + ("; intervals overlap" if x["overlap"] else ""))
    if rep["mean_dpo_reduction"] is not None:
        lines.append(f"mean relative reduction SFT → SFT+DPO: {100 * rep['mean_dpo_reduction']:.1f}%")
    return "\n".join(lines)


def loop_shapes(ws, run_ids: list[str]) -> list[dict]:
    """Every loop of the runs' degenerate candidates: model, stage, span length (chars), period, repeats."""
    if not run_ids:
        return []
    out = []
    for model, stage, loops in store_eval.degenerate_loops(ws, run_ids):
        for lp in json.loads(loops or "[]"):
            out.append({"model": model, "stage": stage_label(stage), "length": lp["end"] - lp["start"],
                        "period": lp.get("period"), "repeats": lp.get("repeats")})
    return out
