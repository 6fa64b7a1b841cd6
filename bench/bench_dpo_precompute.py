"""DPO on CPU: steps/s with the reference log-probs precomputed (Loopbreak's default) against TRL's
default (a live reference forward every step), same model, pairs, steps and CPU-safe config.

The arms alternate (A B A B …) so drift on a shared machine hits both. Two figures per arm:
the training loop alone (``train_runtime``: what steps/s means) and end to end (trainer
construction, i.e. the precompute pass, included). Pairs: the workspace's approved pairs when
``--workspace`` has some, else ~30 synthetic pairs built from demo references (chosen = the
reference, rejected = a templated loop of one item row cut at a token limit, flagged
``rejected_cut_at_limit``).

    .venv/bin/python bench/bench_dpo_precompute.py [--model data/models/llama/sft] [--pairs 30] [--steps 12] [--reps 2]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def synthetic_pairs(n: int, tokenizer, limit: int, seed: int = 0) -> list[dict]:
    from core.demo.docs import build_demo_records
    from core.policy.prompts import build_prompt, completion_for

    pairs = []
    for r in build_demo_records(seed=seed, n_train=n, n_validation=0, n_test=0)[:n]:
        chosen = completion_for(r["reference"])
        m = re.search(r'\{"descricao".*?\}', chosen)
        head = chosen[: m.start()] if m else chosen[: len(chosen) // 2]
        row = (m.group(0) + ",") if m else chosen[len(head): len(head) + 40]
        rejected = head
        while len(tokenizer(rejected, add_special_tokens=False)["input_ids"]) < limit:
            rejected += row
        ids = tokenizer(rejected, add_special_tokens=False)["input_ids"][:limit]
        pairs.append({"prompt": build_prompt(r["text"]), "chosen": chosen,
                      "rejected": tokenizer.decode(ids), "rejected_cut_at_limit": True})
    return pairs


def workspace_pairs(path: str) -> list[dict]:
    from core.steps.export import approved_rows
    from core.store import open_workspace

    ws = open_workspace(path, create=False)
    try:
        return [{k: r[k] for k in ("prompt", "chosen", "rejected", "rejected_cut_at_limit")} for r in approved_rows(ws)]
    finally:
        ws.close()


def run_arm(model_path: Path, pairs: list[dict], precompute: bool, steps: int, batch: int) -> dict:
    from core.steps.train import DPORunConfig, train_dpo

    out = Path(tempfile.mkdtemp(prefix="bench-dpo-"))
    try:
        cfg = DPORunConfig(max_steps=steps, per_device_train_batch_size=batch, logging_steps=steps,
                           precompute_ref_log_probs=precompute, device="cpu", seed=0)
        t0 = time.perf_counter()
        res = train_dpo(cfg, pairs, out, model=str(model_path), save=False)
        total = time.perf_counter() - t0
        logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        loop_s = next(r["train_runtime"] for r in logged if "train_runtime" in r)
        return {"loop_steps_s": res.global_step / loop_s, "e2e_steps_s": res.global_step / total, "precomputed": res.precomputed_ref}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / "data" / "models" / "llama" / "sft")
    ap.add_argument("--workspace", help="use this workspace's approved pairs when it has any")
    ap.add_argument("--pairs", type=int, default=30)
    ap.add_argument("--limit", type=int, default=256, help="token limit the synthetic rejected loops are cut at")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()

    import datasets
    import torch
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    pairs = workspace_pairs(args.workspace) if args.workspace else []
    source = f"{len(pairs)} approved pairs of {args.workspace}"
    if not pairs:
        pairs = synthetic_pairs(args.pairs, AutoTokenizer.from_pretrained(str(args.model)), args.limit)
        source = f"{len(pairs)} synthetic pairs (demo references vs row loops cut at {args.limit} tokens)"
    print(f"model {args.model} · {source} · {args.steps} steps at batch {args.batch} · {torch.get_num_threads()} threads")
    run_arm(args.model, pairs[: args.batch * 2], True, 1, args.batch)  # warm-up: imports, allocator, kernels
    res: dict[bool, list[dict]] = {True: [], False: []}
    for rep in range(args.reps):
        for pre in (False, True) if rep % 2 == 0 else (True, False):
            r = run_arm(args.model, pairs, pre, args.steps, args.batch)
            res[pre].append(r)
            print(f"  rep {rep} {'precompute' if pre else 'default   '}: loop {r['loop_steps_s']:.3f} steps/s, "
                  f"end to end {r['e2e_steps_s']:.3f} steps/s (precomputed={r['precomputed']})", flush=True)
    med = {pre: {k: statistics.median(x[k] for x in res[pre]) for k in ("loop_steps_s", "e2e_steps_s")} for pre in res}
    print(f"default    : {med[False]['loop_steps_s']:.3f} steps/s (loop), {med[False]['e2e_steps_s']:.3f} (end to end)")
    print(f"precompute : {med[True]['loop_steps_s']:.3f} steps/s (loop), {med[True]['e2e_steps_s']:.3f} (end to end)")
    print(f"end-to-end ratio (precompute pass included, {args.steps} steps): {med[True]['e2e_steps_s'] / med[False]['e2e_steps_s']:.2f}")
    print(f"RATIO precompute/default steps/s = {med[True]['loop_steps_s'] / med[False]['loop_steps_s']:.2f} (target >= 1.4)")


if __name__ == "__main__":
    main()
