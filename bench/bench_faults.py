"""Faults at full size: kill/resume trials for sampling and judging, app kills during decisions, damaged
shards, and 5 reviewers on one queue for 200 decisions. Prints what the issue's "Done when" asks for:
trials run, losses, duplicates, conflicts surfaced — and what resuming cost, as a ratio against an
uninterrupted run measured in the same process.

Sampling uses the real openai backend against an in-process OpenAI-compatible server whose answers depend
only on (prompt, seed, temperature, index) (tests/faults.py), so every trial can be compared row by row with
the uninterrupted reference; judging uses the reference judge. Each trial kills the job with SIGKILL to its
process group 1–3 times, at a random time after launch or once its progress reaches a random count,
resumes it each time (`core.jobs.launch`, what `loopbreak resume` does), and compares at the end.

    .venv/bin/python bench/bench_faults.py [--trials 20] [--app-kills 10] [--decisions 200] [--seed 0]

Exit status 1 when anything was lost, duplicated, changed, or left inconsistent.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core import jobs  # noqa: E402
from core.judges.base import JudgeConfig
from core.samplers.base import DecodingConfig
from core.steps.judge import start_judging  # noqa: E402
from core.steps.sample import SampleConfig, start_sampling  # noqa: E402
from core.store import open_workspace  # noqa: E402
from tests.conftest import fill_demo  # noqa: E402
from tests.faults import (  # noqa: E402
    FakeCompletions,
    compare,
    kill_resume_trial,
    kill_review_writer,
    review_problems,
    simulate_reviewers,
    unseen_overwrites,
)
from tests.review_data import add_review_run  # noqa: E402


def sample_cfg(url: str) -> SampleConfig:
    return SampleConfig(model="fake-model", dataset="demo", backend="openai", base_url=url, items_per_shard=2, concurrency=2,
                        decoding=DecodingConfig(n=3, max_new_tokens=64, seed=11, with_greedy=True))


def finish(ws, run_id: str) -> None:
    state = jobs.wait(ws, run_id, poll_s=0.05)
    if state.status != "done":
        raise SystemExit(f"reference run {run_id} {state.status}: {jobs.read_log(ws, run_id)}")


def trials(ws, name: str, table: str, start, total: int, n: int, seed: int) -> dict:
    t0 = time.time()
    ref = start()
    finish(ws, ref)
    ref_s = time.time() - t0  # launch to done, like each trial's wall time
    sums = {"lost": 0, "extra": 0, "changed": 0, "duplicated": 0}
    kills, fractions, modes, after_end, failed, walls = 0, [], {"time": 0, "progress": 0}, 0, 0, []
    for trial in range(n):
        t0 = time.time()
        run_id = start()
        points, state = kill_resume_trial(ws, run_id, random.Random(seed + trial), total, ref_s)
        walls.append(time.time() - t0)
        failed += state.status != "done"
        c = compare(ws, table, ref, run_id)
        for k in sums:
            sums[k] += c[k]
        kills += len(points)
        for p in points:
            fractions.append(p["done"] / p["total"])
            modes[p["mode"]] += 1
            after_end += p["finished_before_kill"]
        status = ws.cursor().execute("SELECT status, error FROM runs WHERE run_id = ?", [run_id]).fetchall()[0]
        if status != ("done", None):
            failed += 1
        bad = {k: v for k, v in c.items() if k in sums and v}
        print(f"  {name} trial {trial:2d}: {len(points)} kill(s) at "
              + ", ".join(f"{p['done']}/{p['total']}" + ("*" if p["finished_before_kill"] else "") for p in points)
              + f" -> {c['rows']}/{c['reference']} rows" + (f"  PROBLEM {bad}" if bad else ""), flush=True)
    q = statistics.quantiles(fractions, n=4) if len(fractions) > 1 else fractions * 3
    print(f"{name}: {n} trials, {kills} kills ({modes['time']} at a random time, {modes['progress']} at a random progress; "
          f"{after_end} after the job had finished), progress at kill: quartiles {q[0]:.2f} / {q[1]:.2f} / {q[2]:.2f}")
    print(f"{name}: lost {sums['lost']}, duplicated {sums['duplicated']}, extra {sums['extra']}, changed {sums['changed']}, "
          f"runs not done {failed}")
    print(f"{name}: killed-and-resumed wall time / uninterrupted = {statistics.mean(walls) / ref_s:.2f} "
          f"(uninterrupted {ref_s:.1f} s, {kills / n:.2f} kills per trial)")
    return {**sums, "failed": failed, "trials": n, "kills": kills}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20, help="kill/resume trials for sampling and for judging (each)")
    ap.add_argument("--app-kills", type=int, default=10, help="app processes killed while writing decisions")
    ap.add_argument("--decisions", type=int, default=200, help="decisions by the simulated reviewers")
    ap.add_argument("--reviewers", type=int, default=5, help="simulated reviewers on one queue")
    ap.add_argument("--seed", type=int, default=0, help="first trial's seed")
    ap.add_argument("--parts", default="jobs,app,reviewers", help="which parts to run (comma-separated: jobs, app, reviewers)")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="loopbreak-bench-faults-"))
    print(f"workspaces under {tmp}")
    bad = 0

    if "jobs" in parts:
        bad += jobs_part(tmp, args)
    if "app" in parts:
        bad += app_part(tmp, args)
    if "reviewers" in parts:
        bad += reviewers_part(tmp, args)
    print("OK: nothing lost, duplicated or half-written" if not bad else f"FAILED: {bad} problems")
    return 1 if bad else 0


def jobs_part(tmp: Path, args) -> int:
    ws = open_workspace(tmp / "jobs-ws")
    fill_demo(ws, n_train=24, n_validation=8, n_test=8)
    n_items = ws.cursor().execute("SELECT count(*) FROM items").fetchall()[0][0]
    with FakeCompletions() as server:
        s = trials(ws, "sampling", "candidates", lambda: start_sampling(ws, sample_cfg(server.url)), n_items, args.trials, args.seed)
        sample_ref = ws.cursor().execute("SELECT run_id FROM runs WHERE kind = 'sample' ORDER BY created_at LIMIT 1").fetchall()[0][0]
    n_cands = ws.cursor().execute("SELECT count(*) FROM candidates WHERE run_id = ?", [sample_ref]).fetchall()[0][0]
    j = trials(ws, "judging", "judgments", lambda: start_judging(ws, sample_ref, JudgeConfig(batch_size=4)), n_cands, args.trials,
               args.seed + 1000)
    ws.close()
    return sum(v for r in (s, j) for k, v in r.items() if k in ("lost", "duplicated", "extra", "changed", "failed"))


def app_part(tmp: Path, args) -> int:
    ws = open_workspace(tmp / "app-ws")
    fill_demo(ws, n_train=2 * args.app_kills + 8, n_validation=0, n_test=0)
    add_review_run(ws, 2 * args.app_kills + 8)
    ws.close()
    problems, reported, stored = [], 0, 0
    for trial in range(args.app_kills):
        reported += kill_review_writer(ws.root, random.Random(args.seed + trial), args.seed + trial)
        ws = open_workspace(ws.root)
        problems += review_problems(ws)
        stored_now = ws.cursor().execute("SELECT count(*) FROM decisions").fetchall()[0][0]
        ws.close()
        if stored_now < stored:
            problems.append("decisions disappeared")
        stored = stored_now
    print(f"app killed while deciding: {args.app_kills} kills, {reported} decisions reported committed, {stored} stored, "
          f"half-written or inconsistent: {len(problems)}" + (f"  {problems[:3]}" if problems else ""))
    return len(problems) + (stored < reported)


def reviewers_part(tmp: Path, args) -> int:
    ws = open_workspace(tmp / "review-ws")
    items = (args.decisions + 1) // 2
    fill_demo(ws, n_train=items, n_validation=0, n_test=0)
    add_review_run(ws, items)
    t0 = time.time()
    log = simulate_reviewers(ws, "rs", reviewers=args.reviewers, decisions=args.decisions, seed=args.seed)
    wall = time.time() - t0
    problems, silent = review_problems(ws), unseen_overwrites(ws, log)
    stored = ws.cursor().execute("SELECT count(*) FROM decisions").fetchall()[0][0]
    print(f"reviewers: {args.reviewers} on one queue of {2 * items} pairs, {log.decided} decisions in {wall:.0f} s "
          f"({stored} stored), conflicts surfaced {log.conflicts}, decided twice without a conflict shown {len(silent)}, "
          f"lost updates / half-written {len(problems)}, pair handed to two reviewers at once {log.double_handouts}, "
          f"'nothing left' while pairs were free {log.false_empty}, unexpected errors {len(log.unexpected)}")
    ws.close()
    return len(problems) + len(silent) + log.double_handouts + log.false_empty + len(log.unexpected) + (stored != log.decided)


if __name__ == "__main__":
    sys.exit(main())
