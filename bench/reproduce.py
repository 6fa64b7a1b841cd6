"""The paper's table on the demo: the whole Loopbreak loop per family, on CPU, in under an hour.

Per demo family (the shipped data/models): sample the SFT model on train documents (greedy + a few
sampled candidates), detect loops, judge with the reference judge, mine pairs (auto-approved, as an
audited bulk decision), train DPO on them, train the compute-matched control (the SFT model
trained further on the train references for as many steps, at the same batch size, as DPO used),
then evaluate vanilla, SFT, SFT+DPO and the control on the held-out test split with greedy
decoding. Prints the per-family table (rates with Wilson 95% intervals, quality), DPO's
relative reduction against SFT with a bootstrap interval, the mean, and whether DPO beat the
control. Everything goes through the product's own functions and jobs — this is what a user's
run of the app does, headless.

    .venv/bin/python bench/reproduce.py                       # all families, defaults below
    .venv/bin/python bench/reproduce.py --families llama --test-limit 100 --workspace /tmp/repro

The workspace keeps every run: open it in the app (`streamlit run app.py -- --workspace DIR`)
and the Evaluate page shows the same numbers (`loopbreak report -w DIR`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import jobs  # noqa: E402
from core.store import open_workspace  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def wait(ws, run_id: str, what: str) -> None:
    t = time.time()
    state = jobs.wait(ws, run_id, poll_s=1.0)
    if state.status != "done":
        raise SystemExit(f"{what} ({run_id}) {state.status}: {state.error}; log: {ws.jobs_dir / run_id / 'log.txt'}")
    log(f"{what} done in {time.time() - t:.0f}s ({run_id})")


def demo_workspace(path: Path, n_test: int, models_dir: str | None):
    from core.demo.docs import build_demo_records
    from core.demo.models import DEMO_MAX_ITEMS, register_demo_models
    from core.steps.importer import ImportFields, import_records, validate

    ws = open_workspace(path)
    records = build_demo_records(seed=0, n_train=600, n_validation=100, n_test=n_test, max_items=DEMO_MAX_ITEMS,
                                 images_dir=ws.images_dir / "demo")  # the gemma3 family reads the pages
    items = validate(((i, r) for i, r in enumerate(records, 1)), Path("<demo>"), ImportFields(), None)
    import_records(ws, items, "demo", source="demo seed=0")
    register_demo_models(ws, models_dir)
    return ws


def dpo_round(ws, family: str, base: str, name: str, args) -> dict:
    """One round for one family: sample the base on train documents → judge → pairs (approved) → DPO."""
    from core.judges.base import JudgeConfig
    from core.policy.mining import PairPolicy
    from core.review.agreement import bulk
    from core.review.queue import QueueFilter
    from core.samplers.base import DecodingConfig
    from core.steps.judge import start_judging
    from core.steps.pairs import mine_run
    from core.steps.sample import SampleConfig, run_summary, start_sampling
    from core.steps.train_job import TrainJobConfig, start_training, training_summary

    out = {}
    dec = DecodingConfig(n=args.n_sampled, temperature=args.temperature, max_new_tokens=args.max_new_tokens, with_greedy=True)
    run = start_sampling(ws, SampleConfig(model=base, dataset="demo", split="train", limit=args.train_limit, decoding=dec))
    wait(ws, run, f"{family}: sampling {base} on {args.train_limit} train documents")
    out["sampling"] = {k: v for k, v in run_summary(ws, run).items() if k != "skipped"}
    judge = start_judging(ws, run, JudgeConfig(judge="reference"))
    wait(ws, judge, f"{family}: reference judge")
    policy = PairPolicy(min_chosen=args.min_chosen, max_pairs_per_item=args.pairs_per_item, degenerate_only=args.degenerate_only,
                        chosen_must_finish=args.chosen_must_finish)
    out["mining"] = mine_run(ws, judge, policy)
    if policy.chosen_must_finish:  # what the rule cost: the same run mined as before it (a preview, nothing written)
        loose = mine_run(ws, judge, PairPolicy(**{**policy.__dict__, "chosen_must_finish": False}), write=False)
        out["mining_unfinished_allowed"] = {k: loose[k] for k in ("pairs", "items_with_pairs", "rejected_degenerate")}
        log(f"{family}: chosen must finish: {out['mining']['pairs']} pairs ({loose['pairs']} if a chosen may be cut at the limit); "
            f"items without a pair: {out['mining']['no_pair']}")
    out["review"] = bulk(ws, QueueFilter(run=run), "approve", "reproduce.py")
    log(f"{family}: {out['mining']['pairs']} pairs from {out['mining']['items_with_pairs']} items "
        f"({out['mining']['rejected_degenerate']} with a degenerate rejected), approved")
    if not out["mining"]["pairs"]:
        raise SystemExit(f"{family}: no pairs mined; sample more documents (--train-limit) or lower --min-chosen")
    params = {"loss": args.loss, "beta": args.beta, "learning_rate": args.lr, "num_train_epochs": args.epochs,
              "per_device_train_batch_size": args.batch_size}
    train = start_training(ws, TrainJobConfig(method="dpo", base=base, pairs=run, name=name, params=params))
    wait(ws, train, f"{family}: DPO → {name}")
    jobs.sync_runs(ws, [train])
    res = training_summary(ws, train)["result"]
    out["dpo"] = {"run_id": train, "model": name, "steps": res.get("global_step"), "train_loss": res.get("train_loss"), "params": params}
    return out


def control(ws, family: str, steps: int, args) -> dict:
    """The compute-matched control: the SFT model trained further on the train references, as many
    steps at the same batch size as DPO took."""
    from core.steps.train_job import TrainJobConfig, start_training

    params = {"max_steps": max(1, steps), "per_device_train_batch_size": args.batch_size, "learning_rate": args.control_lr,
              "lr_scheduler_type": "constant_with_warmup", "warmup_steps": max(1, steps // 5)}
    run = start_training(ws, TrainJobConfig(method="sft", base=f"demo-{family}-sft", sft_source="references", dataset="demo",
                                            split="train", name=f"{family}-sft-control", stage="sft2", params=params))
    wait(ws, run, f"{family}: SFT control ({steps} steps)")
    jobs.sync_runs(ws, [run])
    return {"run_id": run, "params": params}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workspace", default="/tmp/loopbreak-reproduce", help="workspace folder (recreated unless --keep)")
    p.add_argument("--keep", action="store_true", help="reuse the workspace: skip families already trained")
    p.add_argument("--families", default="llama,qwen2,gpt2,gemma3")
    p.add_argument("--models-dir", default=None, help="demo models folder (default: the shipped data/models)")
    p.add_argument("--train-limit", type=int, default=80, help="train documents sampled for pairs")
    p.add_argument("--n-sampled", type=int, default=2, help="sampled candidates per train document besides the greedy one")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: the models' saved limit")
    p.add_argument("--min-chosen", type=float, default=0.4, help="quality floor of a chosen candidate")
    p.add_argument("--pairs-per-item", type=int, default=2)
    p.add_argument("--degenerate-only", action="store_true", help="only degenerate rejected candidates")
    p.add_argument("--chosen-must-finish", action=argparse.BooleanOptionalAction, default=True,
                   help="a chosen candidate must have stopped by itself (default on)")
    p.add_argument("--loss", default="sigmoid")
    p.add_argument("--beta", type=float, default=0.5)
    p.add_argument("--lr", type=float, default=2e-4,
                   help="DPO learning rate (5e-5 raised gpt2's loops; 5e-4 removed them but cost qwen2 quality)")
    p.add_argument("--epochs", type=float, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--control-lr", type=float, default=5e-4, help="learning rate of the control's further SFT")
    p.add_argument("--rounds", type=int, default=1, help="DPO rounds: round r samples the round r-1 model and trains dpo{r}")
    p.add_argument("--test-limit", type=int, default=100, help="held-out test documents evaluated per model")
    args = p.parse_args(argv)

    from core.demo.models import load_manifest
    from core.steps.evaluate import EvalConfig, format_report, report, start_eval

    if args.max_new_tokens is None:
        args.max_new_tokens = int((load_manifest(args.models_dir) or {}).get("max_new_tokens") or 736)
    root = Path(args.workspace)
    if root.exists() and not args.keep:
        shutil.rmtree(root)
    t0 = time.time()
    ws = demo_workspace(root, n_test=max(300, args.test_limit), models_dir=args.models_dir)
    families = [f for f in args.families.split(",") if f]
    rounds = {}
    for family in families:
        if args.keep and ws.cursor().execute("SELECT 1 FROM models WHERE name = ?", [f"{family}-sft-control"]).fetchall():
            continue
        t, base, done = time.time(), f"demo-{family}-sft", []
        for r in range(1, args.rounds + 1):
            done.append(dpo_round(ws, family, base, f"{family}-dpo" + (str(r) if r > 1 else ""), args))
            base = done[-1]["dpo"]["model"]
        rounds[family] = {"rounds": done, "control": control(ws, family, sum(x["dpo"]["steps"] or 0 for x in done), args),
                          "seconds": round(time.time() - t)}
    models = [m for f in families for m in (f"demo-{f}-vanilla", f"demo-{f}-sft", f"{f}-sft-control", f"{f}-dpo")
              + tuple(f"{f}-dpo{r}" for r in range(2, args.rounds + 1))]
    t = time.time()
    ids = start_eval(ws, EvalConfig(models=models, dataset="demo", split="test", limit=args.test_limit,
                                    max_new_tokens=args.max_new_tokens))
    for run_id, model in zip(ids, models):
        wait(ws, run_id, f"eval {model}")
    log(f"evaluation of {len(models)} models done in {time.time() - t:.0f}s")
    rep = report(ws, "demo", "test")
    print(format_report(rep))
    print()
    for fam, f in rep["families"].items():
        by = {r["stage"]: r for r in f["stages"]}
        if "dpo" in by and "sft2" in by:
            d, c = by["dpo"], by["sft2"]
            verdict = ("DPO below the control" if d["ci_high"] < c["ci_low"] else
                       "control below DPO" if c["ci_high"] < d["ci_low"] else "DPO and control intervals overlap")
            print(f"{fam}: SFT+DPO {100 * d['rate']:.1f}% (quality {d['quality']:.3f}) vs SFT longer {100 * c['rate']:.1f}% "
                  f"(quality {c['quality']:.3f}): {verdict}")
    minutes = (time.time() - t0) / 60
    print(f"\ntotal {minutes:.1f} min on this machine; workspace {root}")
    (root / "reproduce.json").write_text(json.dumps({"args": vars(args), "rounds": rounds, "report": rep, "minutes": minutes},
                                                    default=str, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
