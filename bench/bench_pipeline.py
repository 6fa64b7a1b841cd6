"""Pipeline overhead of a sampling job against bare `model.generate` on the same prompts.

The job is the real one — `core.jobs.run_job` on a spec (prompt building, sampling through the
transformers backend, the detector on every candidate, Parquet shards written atomically, progress
files) followed by the writer's ingest into DuckDB. The baseline is the bare decode: the same
`model.generate` calls (the same shard batches, prompts, seeds and decoding) and nothing else. Both
run in this process, alternated, after a warm-up; the figure is the median of (job / bare) - 1.
Also printed: one `model.generate` call per item, as a naive loop would do it (what batching a
shard's items saves), and the worker's process start, paid once per job.

    .venv/bin/python bench/bench_pipeline.py [--model PATH] [--items 16] [--n 2] [--max-new-tokens 256] [--reps 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def default_model() -> Path:
    demo = ROOT / "data" / "models" / "llama" / "sft"
    if (demo / "config.json").exists():
        return demo
    from tests.models import build_tiny_model

    return build_tiny_model(Path(tempfile.gettempdir()) / "loopbreak-bench-tiny")


def per_item(model, tokenizer, prompts, seeds, n, max_new):
    import torch

    for prompt, seed in zip(prompts, seeds):
        enc = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        torch.manual_seed(seed)
        with torch.inference_mode():
            model.generate(**enc, max_new_tokens=max_new, do_sample=False, pad_token_id=tokenizer.pad_token_id)
            model.generate(**enc, max_new_tokens=max_new, do_sample=True, temperature=0.8, top_p=0.95,
                           num_return_sequences=n, pad_token_id=tokenizer.pad_token_id)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path)
    ap.add_argument("--items", type=int, default=16)
    ap.add_argument("--n", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core import jobs
    from core.policy.prompts import build_prompt
    from core.samplers.base import DecodingConfig
    from core.steps.sample import SampleConfig, item_seed, select_items
    from core.store import open_workspace
    from tests.conftest import fill_demo

    torch.set_num_threads(max(1, torch.get_num_threads()))
    model_path = args.model or default_model()
    tmp = Path(tempfile.mkdtemp(prefix="lb-bench-pipeline-"))
    ws = open_workspace(tmp / "ws")
    fill_demo(ws, n_train=args.items, n_validation=0, n_test=0)
    items = select_items(ws, "demo", "train", args.items)
    prompts = [build_prompt(it["text"]) for it in items]
    dec = DecodingConfig(n=args.n, max_new_tokens=args.max_new_tokens, seed=1, with_greedy=True)
    seeds = [item_seed(dec.seed, it["item_id"]) for it in items]

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    print(f"model {model_path}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params; "
          f"{len(items)} items x (greedy + {args.n} samples), max_new_tokens {args.max_new_tokens}")

    def job_once() -> float:
        cfg = SampleConfig(model=str(model_path), dataset="demo", split="train", limit=args.items, decoding=dec)
        t0 = time.perf_counter()
        run_id = jobs.create_job(ws, "sample", {"config": __import__("dataclasses").asdict(cfg), "model_path": str(model_path)})
        import pyarrow as pa
        import pyarrow.parquet as pq
        pq.write_table(pa.Table.from_pylist(items), ws.jobs_dir / run_id / "items.parquet")
        assert jobs.run_job(ws.jobs_dir / run_id) == "done"
        jobs.ingest(ws, run_id)
        return time.perf_counter() - t0

    from core.samplers.transformers import TransformersSampler
    from core.steps.sample import requests_for

    sampler = TransformersSampler(str(model_path), device="cpu")
    shard = SampleConfig().shard_items()

    def bare_once() -> float:
        t0 = time.perf_counter()
        for s in range(0, len(prompts), shard):
            reqs = [r for p, sd in zip(prompts[s:s + shard], seeds[s:s + shard]) for r in requests_for(p, dec, sd)]
            sampler.generate(reqs, dec)
        return time.perf_counter() - t0

    bare_once(), job_once()  # warm-up
    ratios, jt, bt = [], [], []
    for _ in range(args.reps):
        b, j = bare_once(), job_once()
        bt.append(b), jt.append(j), ratios.append(j / b)
        print(f"  bare {b:7.2f} s   job {j:7.2f} s   ratio {j / b:.3f}")

    t0 = time.perf_counter()
    per_item(model, tokenizer, prompts, seeds, args.n, args.max_new_tokens)
    naive = time.perf_counter() - t0
    print(f"one generate call per item (naive loop): {naive:.2f} s = x{naive / statistics.median(bt):.1f} the batched bare decode")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import core.sampling, torch, transformers"], check=True, cwd=ROOT)
    startup = time.perf_counter() - t0
    print(f"bare generate median {statistics.median(bt):.2f} s; job median {statistics.median(jt):.2f} s")
    print(f"worker process start (imports, paid once per job): {startup:.1f} s")
    print(f"OVERHEAD job/bare - 1 = {statistics.median(ratios) - 1:+.1%} (target <= +5%)")
    ws.close()


if __name__ == "__main__":
    main()
