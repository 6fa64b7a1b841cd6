"""Loop-aware early stopping: candidates/s with it against running every loop to max tokens.

Same model, items, prompts, seeds and decoding in both arms; the only difference is the
`StoppingCriteria` that cuts a candidate once its tail is a confirmed loop (finish_reason
'repetition'). It prints the speed ratio and whether the degenerate flags agree candidate by
candidate (an early-stopped candidate must be one the full run calls degenerate, and vice versa).

Early stopping pays only where loops happen, so the figure is given twice: on the items where the
model loops (found by a first full run: the loop-prone set, what a mining run on long documents
meets) and on all items of the sample.

    .venv/bin/python bench/bench_early_stop.py [--model data/models/llama/sft] [--items 40] [--n 2] [--max-new-tokens 0]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / "data" / "models" / "llama" / "sft")
    ap.add_argument("--items", type=int, default=40, help="longest-table validation/test documents to use")
    ap.add_argument("--n", type=int, default=2, help="sampled candidates per item, besides the greedy one")
    ap.add_argument("--max-new-tokens", type=int, default=0, help="0 = the model's generation_config max_new_tokens")
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()

    from core.demo.docs import build_demo_records
    from core.demo.models import DEMO_MAX_ITEMS
    from core.policy.detect import analyze
    from core.policy.prompts import build_prompt
    from core.samplers.base import DecodingConfig
    from core.samplers.transformers import TransformersSampler
    from core.steps.sample import item_seed, requests_for

    sampler = TransformersSampler(str(args.model), device="cpu")
    max_new = args.max_new_tokens or sampler.model.generation_config.max_new_tokens or 768
    records = build_demo_records(seed=1, n_train=0, n_validation=200, n_test=0, max_items=DEMO_MAX_ITEMS)
    records = sorted(records, key=lambda r: -r["n_items"])[: args.items]
    print(f"model {args.model}; {len(records)} documents with {records[-1]['n_items']}–{records[0]['n_items']} items; "
          f"greedy + {args.n} samples; max_new_tokens {max_new}")

    def run(early: bool, recs) -> tuple[float, list]:
        dec = DecodingConfig(n=args.n, max_new_tokens=max_new, seed=3, with_greedy=True, early_stop=early)
        reqs = [r for rec in recs for r in requests_for(build_prompt(rec["text"]), dec, item_seed(3, rec["id"]))]
        t0 = time.perf_counter()
        out = sampler.generate(reqs, dec)
        dt = time.perf_counter() - t0
        flat = [(g.finish_reason == "repetition" or analyze(g.text, g.finish_reason).degenerate, g.finish_reason)
                for gens in out for g in gens]
        return dt, flat

    full_t, full = run(False, records)
    per_item = 1 + args.n
    prone = [rec for i, rec in enumerate(records) if any(d for d, _ in full[i * per_item:(i + 1) * per_item])]
    print(f"first full run: {full_t:.1f} s, {sum(d for d, _ in full)} degenerate candidates on {len(prone)} items")

    def compare(recs, label):
        ratios, agree, total = [], 0, 0
        for _ in range(args.reps):
            t_full, f = run(False, recs)
            t_early, e = run(True, recs)
            n = len(f)
            ratios.append((n / t_early) / (n / t_full))
            agree += sum(a[0] == b[0] for a, b in zip(f, e))
            total += n
            print(f"  {label}: full {n / t_full:6.2f} cand/s, early stop {n / t_early:6.2f} cand/s, x{ratios[-1]:.2f}; "
                  f"repetition stops {sum(r == 'repetition' for _, r in e)}")
        print(f"{label}: SPEEDUP early/full = x{statistics.median(ratios):.2f} (target >= x2); "
              f"degenerate flags agree on {agree}/{total} candidates ({agree / total:.1%})")
        return {"speedup": statistics.median(ratios), "agreement": agree / total}

    result = {}
    if prone:
        result["loop_prone"] = compare(prone, f"loop-prone items ({len(prone)})")
    result["all"] = compare(records, f"all items ({len(records)})")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
