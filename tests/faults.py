"""Fault injection shared by tests/test_faults.py, tests/test_concurrency.py and bench/bench_faults.py.

* :class:`FakeCompletions` — an OpenAI-compatible ``/v1/completions`` server whose answers depend
  only on (prompt, seed, temperature, index), so a sampling job on the real openai backend is
  deterministic and its worker starts in well under a second (no torch).
* :func:`kill_resume_trial` — SIGKILL a running job at a random point (some time after launch, or
  once its progress reaches a random count), let the writer notice, resume, possibly kill again;
  then :func:`compare` it with an uninterrupted run: lost, extra, changed and duplicated rows.
* :func:`review_problems` — what a half-written decision or a lost update would leave in the
  store: a pair whose version does not match its decisions, a decision chain with a gap or a fork,
  an override without its audit row, an audit row without its decision.
* :func:`simulate_reviewers` — reviewers working one queue through ``core.review`` as the app's
  sessions do (each call on its own cursor), some of them stale or past their lease.
* ``python -m tests.faults review-writer WS SEED THREADS`` — a process deciding pairs until killed.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sys
import threading
import time
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from core import jobs
from core.review.decisions import LEASE_S, OVERRIDES, STATE, Conflict, decide, last_decided_pair
from core.review.queue import QueueFilter, next_pair, pair_view
from core.store import WorkspaceError

# ---------------------------------------------------------------- a deterministic OpenAI-compatible server

_ROW = "| Parafuso sextavado | {} | 12,50 |\n"


def fake_completion(prompt: str, seed: int, temperature: float, index: int, max_tokens: int) -> tuple[str, str, int]:
    """(text, finish_reason, tokens): a JSON answer, or (one in four) a templated loop cut at the limit."""
    rnd = random.Random(hashlib.sha256(f"{prompt}|{seed}|{temperature}|{index}".encode()).digest())
    if rnd.random() < 0.25:
        text = ' {"itens": [\n' + "".join(_ROW.format(rnd.randrange(10)) for _ in range(max(1, max_tokens // 6)))
        return text, "length", max_tokens
    items = [{"descricao": rnd.choice(["Parafuso", "Porca", "Arruela", "Chave"]), "qtd": rnd.randrange(1, 50)}
             for _ in range(rnd.randrange(1, 5))]
    text = " " + json.dumps({"numero": str(rnd.randrange(10**6)), "itens": items}, ensure_ascii=False)
    return text, "stop", min(max_tokens, len(text) // 3)


class _Handler(BaseHTTPRequestHandler):
    server: FakeCompletions

    def log_message(self, format, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        time.sleep(self.server.delay_s)
        if self.server.dead:  # killed while this request was in flight: the connection drops unanswered
            self.close_connection = True
            return
        self.server.answered += 1
        choices = []
        for i in range(int(body.get("n", 1))):
            text, reason, tokens = fake_completion(body["prompt"], int(body.get("seed") or 0), float(body.get("temperature", 1.0)),
                                                   i, int(body.get("max_tokens", 16)))
            choices.append({"index": i, "text": text, "finish_reason": reason, "usage": {"completion_tokens": tokens}})
        data = json.dumps({"object": "text_completion", "choices": choices}).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the worker was killed mid-request


class FakeCompletions(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, delay_s: float = 0.005):
        self.delay_s, self.dead, self.answered = delay_s, False, 0
        super().__init__(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    def kill(self) -> None:
        """Stop at once: requests in flight get no answer, new ones find no one listening."""
        self.dead = True
        self.shutdown()
        self.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if not self.dead:
            self.kill()


# ---------------------------------------------------------------- kill and resume


def _progress(job_dir: Path) -> int:
    return (jobs.read_json(job_dir / "progress.json") or {}).get("done", 0)


def kill_job(ws, run_id: str) -> None:
    """SIGKILL the job's process group and reap the worker, as a crash or the OOM killer would leave it."""
    job_dir = ws.jobs_dir / run_id
    pid = int((job_dir / "pid").read_text())
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for proc in list(jobs.control._children):  # the writer's own child: reap it, or it lingers as a zombie
        if proc.pid == pid:
            proc.wait(30)
    deadline = time.time() + 30
    while jobs.job_state(job_dir).status == "running" and time.time() < deadline:
        time.sleep(0.01)


def kill_at_random_point(ws, run_id: str, rnd: random.Random, total: int, span_s: float) -> dict:
    """Kill the running job at a random time after its launch, or once its progress reaches a random count."""
    job_dir = ws.jobs_dir / run_id
    if rnd.random() < 0.4:
        mode = "time"
        time.sleep(rnd.uniform(0, span_s))
    else:
        mode, target = "progress", rnd.randint(min(_progress(job_dir), total), total)  # a resumed job starts mid-way
        deadline = time.time() + 60
        while _progress(job_dir) < target and not (job_dir / "status.json").exists() and time.time() < deadline:
            time.sleep(0.002)
        time.sleep(rnd.uniform(0, 0.02))
    finished = (job_dir / "status.json").exists()
    kill_job(ws, run_id)
    return {"mode": mode, "done": _progress(job_dir), "total": total, "finished_before_kill": finished}


def kill_resume_trial(ws, run_id: str, rnd: random.Random, total: int, span_s: float) -> tuple[list[dict], jobs.JobState]:
    """The job was just launched: kill it 1–3 times at random points, resuming after each; then let it finish."""
    points = []
    for _ in range(rnd.choice([1, 1, 2, 3])):
        points.append(kill_at_random_point(ws, run_id, rnd, total, span_s))
        if rnd.random() < 0.7:  # the app (or `loopbreak status`) notices the death before the resume
            (state,) = jobs.sync_runs(ws, [run_id])
            assert state.status in ("died", "done"), state
        jobs.launch(ws, run_id)
    return points, jobs.wait(ws, run_id, poll_s=0.05)


CANDIDATE_KEY = ("item_id", "sample_index")
CANDIDATE_VALUES = ("text", "finish_reason", "n_tokens", "degenerate", "has_loop", "loops", "seed", "prompt_id", "dataset")
JUDGMENT_KEY = ("candidate_id",)
JUDGMENT_VALUES = ("judge", "scores", "overall", "rationale", "error")


def rows_of(ws, table: str, run_id: str, key: tuple, values: tuple) -> dict:
    cols = ", ".join(key + values)
    return {r[: len(key)]: r[len(key):] for r in ws.cursor().execute(f"SELECT {cols} FROM {table} WHERE run_id = ?", [run_id]).fetchall()}


def shard_duplicates(ws, run_id: str, table: str, id_column: str) -> int:
    """Rows the job's shards hold more than once (work done twice): 0 when resume skips what is done."""
    import pyarrow.parquet as pq

    ids = []
    for path in (ws.jobs_dir / run_id / "shards").glob(f"{table}-*.parquet"):
        ids += pq.read_table(path, columns=[id_column]).column(id_column).to_pylist()
    return len(ids) - len(set(ids))


def compare(ws, table: str, ref_run: str, run_id: str) -> dict:
    """A run against the uninterrupted reference: rows lost, extra, changed, duplicated (store and shards)."""
    key, values, id_col = ((CANDIDATE_KEY, CANDIDATE_VALUES, "candidate_id") if table == "candidates"
                           else (JUDGMENT_KEY, JUDGMENT_VALUES, "judgment_id"))
    ref, got = rows_of(ws, table, ref_run, key, values), rows_of(ws, table, run_id, key, values)
    stored = ws.cursor().execute(f"SELECT count(*), count(DISTINCT ({', '.join(key)})) FROM {table} WHERE run_id = ?", [run_id]).fetchall()[0]
    return {
        "reference": len(ref), "rows": len(got),
        "lost": len(ref.keys() - got.keys()), "extra": len(got.keys() - ref.keys()),
        "changed": sum(ref[k] != got[k] for k in ref.keys() & got.keys()),
        "duplicated": (stored[0] - stored[1]) + shard_duplicates(ws, run_id, table, id_col),
    }


# ---------------------------------------------------------------- review: what the store must never show


def _is_override(d: dict, by_id: dict) -> bool:
    action = d["action"].removeprefix("bulk_")
    if d["round"] != 1:
        return False
    if action == "undo":
        undone = by_id.get(d["undoes"])
        return undone is not None and undone["action"].removeprefix("bulk_") in OVERRIDES
    return action in OVERRIDES


def review_problems(ws) -> list[str]:
    """Every inconsistency between pairs, decisions and the audit log (empty when the history is whole).

    For each pair, its round-1 decisions (skips aside) must form one chain: versions 1..n, each made
    against the state the previous one left (a fork = two decisions against the same version = a
    lost update), the last one's state = the pair's state, and the pair's version = n (a decision
    without its pair update, or an update without its decision, is a half-written decision). Every
    override has exactly one audit row carrying the same before/after, and every audit row its decision.
    """
    cur = ws.cursor()
    pairs = {r[0]: dict(zip(STATE, r[1:])) for r in cur.execute(f"SELECT pair_id, {', '.join(STATE)} FROM pairs").fetchall()}
    dkeys = ("decision_id", "pair_id", "reviewer", "action", "before", "after", "created_at", "round", "undoes")
    decisions = [dict(zip(dkeys, r)) for r in cur.execute(f"SELECT {', '.join(dkeys)} FROM decisions").fetchall()]
    for d in decisions:
        d["before"], d["after"] = json.loads(d["before"]), json.loads(d["after"])
    akeys = ("audit_id", "pair_id", "reviewer", "kind", "before", "after", "decision_id")
    audits = [dict(zip(akeys, r)) for r in cur.execute(f"SELECT {', '.join(akeys)} FROM audit_log").fetchall()]
    by_id = {d["decision_id"]: d for d in decisions}
    problems = []
    chains = defaultdict(list)
    for d in decisions:
        if d["pair_id"] not in pairs:
            problems.append(f"decision {d['decision_id']} on a missing pair {d['pair_id']}")
        elif d["round"] == 1 and d["action"].removeprefix("bulk_") != "skip":
            chains[d["pair_id"]].append(d)
        elif d["action"] == "skip" and d["before"] != d["after"]:
            problems.append(f"skip {d['decision_id']} changed pair {d['pair_id']}")
    for pid, state in pairs.items():
        chain = sorted(chains[pid], key=lambda d: (d["after"]["version"], d["created_at"]))
        versions = [d["after"]["version"] for d in chain]
        if versions != list(range(1, len(chain) + 1)):
            problems.append(f"pair {pid}: decision versions {versions} (a fork is a lost update, a gap a change without its decision)")
        for prev, d in zip([None, *chain], chain):
            want = prev["after"] if prev else None
            if (want is None and d["before"]["version"] != 0) or (want is not None and d["before"] != want):
                problems.append(f"pair {pid}: decision {d['decision_id']} ({d['reviewer']} {d['action']}) was made against "
                                f"version {d['before']['version']}, not the state the previous decision left")
        if state["version"] != len(chain):
            problems.append(f"pair {pid}: version {state['version']} but {len(chain)} decisions (half-written)")
        if chain and {k: state[k] for k in STATE} != chain[-1]["after"]:
            problems.append(f"pair {pid}: state differs from its last decision's after")
        if not chain and state["status"] != "pending":
            problems.append(f"pair {pid}: {state['status']} without a decision")
    per_decision = Counter(a["decision_id"] for a in audits)
    for d in decisions:
        want = int(_is_override(d, by_id))
        if per_decision[d["decision_id"]] != want:
            problems.append(f"decision {d['decision_id']} ({d['action']}): {per_decision[d['decision_id']]} audit rows, expected {want}")
    for a in audits:
        d = by_id.get(a["decision_id"])
        if d is None:
            problems.append(f"audit row {a['audit_id']} without its decision")
        elif (a["pair_id"], a["reviewer"], a["kind"], json.loads(a["before"]), json.loads(a["after"])) != \
                (d["pair_id"], d["reviewer"], d["action"], d["before"], d["after"]):
            problems.append(f"audit row {a['audit_id']} differs from decision {d['decision_id']}")
    return problems


# ---------------------------------------------------------------- reviewers working one queue


ACTIONS = ["approve"] * 10 + ["swap"] * 2 + ["reject"] * 2 + ["skip"] * 2 + ["edit_chosen", "pick_chosen", "undo"]


class ReviewLog:
    """What the simulated reviewers did, shared across their threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.decided = 0
        self.undos = 0
        self.attempts: list[dict] = []
        self.conflicts = 0
        self.refused = Counter()
        self.unexpected: list[str] = []
        self.holder: dict[str, str] = {}  # pair -> the reviewer looking at it (handed out by the queue, or pinned)
        self.double_handouts = 0
        self.false_empty = 0

    def let_go(self, pid: str, name: str) -> None:
        with self.lock:
            if self.holder.get(pid) == name:
                del self.holder[pid]


PINNED = ("pick_chosen", "edit_chosen", "undo")  # the page keeps showing the pair after these


def _one_decision(ws, log: ReviewLog, name: str, rnd: random.Random, pid: str, v: dict) -> str | None:
    """One key press on the pair `v` shows (retrying after a conflict, as a reviewer who looks again); returns the pair to pin."""
    action = rnd.choice(ACTIONS)
    kw, version, target, seen = {}, v["version"], pid, "view"
    if action == "undo":
        target = last_decided_pair(ws, name)
        if target is None:
            action, target = "approve", pid
        else:
            log.let_go(pid, name)
            version = pair_view(ws, target)["version"]
    elif action == "edit_chosen":
        kw["chosen_text"] = f" corrected by {name} {rnd.randrange(10**6)}"
    elif action == "pick_chosen":
        others = [c["candidate_id"] for c in v["candidates"] if c["candidate_id"] not in (v["chosen_candidate_id"], v["rejected_candidate_id"])]
        if others:
            kw["chosen_candidate_id"] = rnd.choice(others)
        else:
            action = "approve"
    time.sleep(rnd.uniform(0, 0.01))  # reading the pair
    if action in PINNED:
        with log.lock:
            log.holder[target] = name
    else:
        log.let_go(target, name)  # once committed, the queue may hand the pair out again (skip)
    for _ in range(3):
        try:
            after = decide(ws, target, action, name, version, **kw)
        except Conflict as e:
            with log.lock:
                log.conflicts += 1
                log.attempts.append({"reviewer": name, "pair": target, "action": action, "expected": version, "ok": False})
            if e.current is None or rnd.random() < 0.4 or (e.current["status"] != "pending" and action in PINNED):
                log.let_go(target, name)
                return None  # "keep theirs and go on"
            version, seen = e.current["version"], "conflict"  # looked at the pair again and chose
            continue
        except WorkspaceError as e:
            log.let_go(target, name)
            with log.lock:
                log.refused[str(e).split(":")[0][:60]] += 1
            return None
        except Exception as e:  # noqa: BLE001 - anything else is a product bug the test reports
            log.let_go(target, name)
            with log.lock:
                log.unexpected.append(f"{name} {action} {target}: {type(e).__name__}: {e}")
            return None
        with log.lock:
            log.decided += 1
            log.undos += action == "undo"
            log.attempts.append({"reviewer": name, "pair": target, "action": action, "expected": version, "ok": True,
                                 "after_version": after["version"], "seen": seen})
        if action in PINNED and after["status"] == "pending":
            return target
        log.let_go(target, name)
        return None
    log.let_go(target, name)
    return None


def _reviewer(ws, flt: QueueFilter, log: ReviewLog, name: str, seed: int, target: int | None, steal_share: float, deadline: float) -> None:
    rnd = random.Random(seed)
    pinned = None
    while time.time() < deadline:
        with log.lock:
            if target is not None and log.decided >= target:
                return
            undos = log.undos
        if pinned:
            pid, steal = pinned, False
        else:
            steal = rnd.random() < steal_share  # this reviewer's view of the leases is stale: others' claims look expired
            try:
                pid = next_pair(ws, flt, name, lease_s=-1 if steal else LEASE_S)
            except Exception as e:  # noqa: BLE001
                with log.lock:
                    log.unexpected.append(f"{name} next_pair: {type(e).__name__}: {e}")
                continue
            if pid is None:
                left = ws.cursor().execute(
                    "SELECT count(*) FROM pairs WHERE status = 'pending' AND (claimed_by IS NULL OR claimed_by = ?)", [name]
                ).fetchall()[0][0]
                if left == 0:
                    return
                with log.lock:
                    log.false_empty += log.undos == undos  # "nothing left" shown while pairs were free
                continue
            with log.lock:
                if not steal and log.holder.get(pid) not in (None, name):
                    log.double_handouts += 1
                log.holder[pid] = name
        v = pair_view(ws, pid)
        if v["status"] != "pending":
            pinned = None
            log.let_go(pid, name)
            continue  # decided between the queue and the page: shown as decided, nothing to do
        pinned = _one_decision(ws, log, name, rnd, pid, v)


def simulate_reviewers(ws, run: str, reviewers: int = 5, decisions: int | None = None, seed: int = 0, steal_share: float = 0.25,
                       timeout_s: float = 600) -> ReviewLog:
    """`reviewers` threads work run's pending queue until `decisions` decisions are made, or until it is empty."""
    log = ReviewLog()
    flt = QueueFilter(run=run)
    deadline = time.time() + timeout_s
    threads = [threading.Thread(target=_reviewer, args=(ws, flt, log, f"rev{i}", seed * 100 + i, decisions, steal_share, deadline))
               for i in range(reviewers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return log


def unseen_overwrites(ws, log: ReviewLog) -> list[str]:
    """Decisions that closed a pair someone else had already closed, by a reviewer who had not been shown that."""
    out = []
    rows = ws.cursor().execute("SELECT pair_id, reviewer, action, before, after FROM decisions WHERE action <> 'skip'").fetchall()
    seen = {(a["pair"], a["reviewer"], a["after_version"]): a["seen"] for a in log.attempts if a["ok"]}
    for pid, reviewer, action, before, after in rows:
        b, a = json.loads(before), json.loads(after)
        if b["status"] != "pending" and action != "undo" and seen.get((pid, reviewer, a["version"])) != "conflict":
            out.append(f"{reviewer} {action} on {pid} over a decided version {b['version']} without a conflict shown")
    return out


# ---------------------------------------------------------------- a process writing decisions until killed


def review_writer(workspace: str, seed: int, threads: int) -> None:
    """Decide pairs from `threads` sessions, printing a line per decision, until the queue is empty or the process is killed."""
    from core.store import open_workspace

    ws = open_workspace(workspace, create=False)
    log = ReviewLog()
    flt = QueueFilter()
    print("ready", flush=True)

    def session(i: int) -> None:
        rnd = random.Random(seed * 100 + i)
        name = f"app{i}"
        pinned = None
        while True:
            pid = pinned or next_pair(ws, flt, name, lease_s=-1 if rnd.random() < 0.2 else LEASE_S)
            if pid is None:
                return
            v = pair_view(ws, pid)
            before = log.decided
            pinned = _one_decision(ws, log, name, rnd, pid, v) if v["status"] == "pending" else None
            if log.decided != before:
                print(f"decided {log.decided}", flush=True)

    ts = [threading.Thread(target=session, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print(f"done {log.decided} unexpected {len(log.unexpected)}", flush=True)


def kill_review_writer(root: Path, rnd: random.Random, seed: int, threads: int = 3) -> int:
    """Start a process deciding pairs from `threads` sessions and SIGKILL it after a random number of decisions,
    somewhere inside the next ones. Returns the decisions it had reported as committed."""
    import subprocess

    proc = subprocess.Popen([sys.executable, "-m", "tests.faults", "review-writer", str(root), str(seed), str(threads)],
                            cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE, text=True, start_new_session=True)
    want, reported = rnd.randint(1, 4), 0
    for line in proc.stdout:
        if line.startswith("decided"):
            reported = int(line.split()[1])
        if reported >= want or line.startswith("done"):
            break
    time.sleep(rnd.uniform(0, 0.1))
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    proc.stdout.close()
    return reported


if __name__ == "__main__":
    if sys.argv[1:2] == ["review-writer"]:
        review_writer(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
