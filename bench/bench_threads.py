"""Torch threads for a job worker: 1 thread against every core, the same greedy decode, in fresh processes.

core.jobs.cpu_threads gives a worker the idle cores only. On an idle box the two settings should be
close; on a busy one the all-cores run slows sharply (OpenMP threads spin on shared cores): that
ratio is the case for the rule. Run it idle and with the box busy (e.g. a test suite alongside).

    .venv/bin/python bench/bench_threads.py [--model data/models/llama/sft] [--tokens 200] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import sys, time, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from core.demo.docs import build_demo_records
from core.policy.prompts import build_prompt
path, tokens = sys.argv[1], int(sys.argv[2])
tok = AutoTokenizer.from_pretrained(path); tok.padding_side = "left"
model = AutoModelForCausalLM.from_pretrained(path).eval()
docs = build_demo_records(seed=0, n_train=8, n_validation=0, n_test=0)
enc = tok([build_prompt(d["text"]) for d in docs], return_tensors="pt", padding=True, add_special_tokens=False)
t = time.perf_counter()
with torch.inference_mode():
    model.generate(**enc, do_sample=False, max_new_tokens=tokens, min_new_tokens=tokens, pad_token_id=tok.pad_token_id)
print(time.perf_counter() - t)
"""


def run(threads: int, model: str, tokens: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", CHILD, model, str(tokens)], env=env, cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(ROOT / "data/models/llama/sft"))
    p.add_argument("--tokens", type=int, default=200)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    cores = len(os.sched_getaffinity(0))
    one, all_ = [], []
    for _ in range(args.repeats):  # interleaved, so both see the same load
        one.append(run(1, args.model, args.tokens))
        all_.append(run(cores, args.model, args.tokens))
    print(f"load {os.getloadavg()[0]:.1f} on {cores} cores; 8 documents x {args.tokens} tokens greedy")
    print(f"1 thread      {min(one):6.2f} s (best of {args.repeats})")
    print(f"{cores} threads     {min(all_):6.2f} s")
    print(f"ratio all-cores / 1 thread: {min(all_) / min(one):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
