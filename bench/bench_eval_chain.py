"""A chained evaluation (one eval job per model, each worker starting the next): the threads each link
got and its time, under the rule of core.jobs.cpu_threads (cores shared among the running workers of
the workspace) against the old load-average rule, in the same run.

The old rule is replayed by pinning every link to what the load average gave it at its start (the
workers log it: "the load average would have given N"); on an idle 2-core box it gave 1 to every
link after the first, because the 1-minute load still counted the link before. Then the same chain
runs twice more under the new rule: the tables must match (same seeds, same thread count).

    .venv/bin/python bench/bench_eval_chain.py [--models demo-qwen2-sft,demo-llama-sft] [--limit 12]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def chain(root: Path, models: list[str], limit: int, threads: int | None) -> dict:
    """Run one eval chain in a fresh demo workspace; per link: threads, the load rule's count, seconds."""
    from core import jobs
    from core.demo.docs import build_demo_records
    from core.demo.models import register_demo_models
    from core.steps.evaluate import EvalConfig, start_eval
    from core.steps.importer import ImportFields, import_records, validate
    from core.store import open_workspace

    ws = open_workspace(root)
    records = build_demo_records(seed=0, n_train=0, n_validation=0, n_test=limit)
    import_records(ws, validate(((i, r) for i, r in enumerate(records, 1)), Path("<demo>"), ImportFields(), None), "demo",
                   source="bench")
    register_demo_models(ws, None)
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    else:
        os.environ.pop("OMP_NUM_THREADS", None)
    t0 = time.time()
    run_ids = start_eval(ws, EvalConfig(models=models, dataset="demo", split="test", limit=limit))
    for run_id in run_ids:
        state = jobs.wait(ws, run_id, poll_s=0.2)
        assert state.status == "done", jobs.read_log(ws, run_id)
    links = []
    for run_id in run_ids:
        log = jobs.read_log(ws, run_id, 100_000)
        got = int(re.search(r"(\d+) CPU thread\(s\) for torch", log).group(1))
        by_load = re.search(r"load average would have given (\d+)", log)
        spec = jobs.read_json(ws.jobs_dir / run_id / "spec.json")
        finished = jobs.read_json(ws.jobs_dir / run_id / "status.json")["finished_at"]
        links.append({"run": run_id, "threads": got, "spec_threads": spec.get("threads"),
                      "by_load": int(by_load.group(1)) if by_load else None, "finished": finished})
    starts = [t0] + [x["finished"] for x in links[:-1]]
    for x, s in zip(links, starts):
        x["seconds"] = x["finished"] - s
    rows = ws.cursor().execute(
        "SELECT r.model, avg(CAST(c.degenerate AS INT)), avg(c.quality) FROM candidates c JOIN runs r USING (run_id) "
        "WHERE r.kind = 'eval' GROUP BY r.model ORDER BY r.model").fetchall()
    ws.close()
    return {"links": links, "table": [(m, round(d, 4), round(q, 4)) for m, d, q in rows], "total": time.time() - t0}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="demo-qwen2-sft,demo-llama-sft")
    p.add_argument("--limit", type=int, default=12, help="test items per link")
    args = p.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        new = chain(Path(tmp) / "new", models, args.limit, None)
        # the old rule's count for each link, as each worker measured the load at its start
        old_threads = [x["by_load"] or 1 for x in new["links"]]
        old = {"links": []}
        for i, m in enumerate(models):  # each link alone, pinned to what the load average gave it
            r = chain(Path(tmp) / f"old{i}", [m], args.limit, old_threads[i])
            old["links"].append(r["links"][0])
        again = chain(Path(tmp) / "again", models, args.limit, None)
    print(f"{cores} cores; {len(models)} links x {args.limit} items, greedy")
    print(f"{'link':<12} {'new threads':>11} {'new s':>7} {'load rule':>9} {'old s':>7} {'ratio old/new':>13}")
    for m, n, o in zip(models, new["links"], old["links"]):
        print(f"{m:<12} {n['threads']:>11} {n['seconds']:>7.1f} {o['threads']:>9} {o['seconds']:>7.1f} {o['seconds'] / n['seconds']:>12.2f}x")
    tot_new = sum(x["seconds"] for x in new["links"])
    tot_old = sum(x["seconds"] for x in old["links"])
    print(f"{'chain':<12} {'':>11} {tot_new:>7.1f} {'':>9} {tot_old:>7.1f} {tot_old / tot_new:>12.2f}x")
    print(f"threads recorded in each spec: {[x['spec_threads'] for x in new['links']]}")
    print(f"same table on a second run (same seeds, same threads): {new['table'] == again['table']}")
    for row in new["table"]:
        print(f"  {row[0]:<12} degeneration {row[1]:.3f} quality {row[2]:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
