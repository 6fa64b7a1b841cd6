"""Five reviewers on one queue, through core.review as the app's sessions call it (one cursor per call, one
thread per session): no pair decided twice without a conflict shown, no lost update, decisions and the
audit log consistent. Some reviewers see stale leases, so several land on the same pair and must
collide visibly. bench/bench_faults.py runs the same simulation for 200 decisions."""

from core.review.agreement import progress
from tests.conftest import fill_demo
from tests.faults import review_problems, simulate_reviewers, unseen_overwrites
from tests.review_data import add_review_run


def test_five_reviewers_one_queue_no_lost_update_no_silent_overwrite(ws):
    fill_demo(ws, n_train=10, n_validation=0, n_test=0)
    pairs = add_review_run(ws, 10)  # 20 pending pairs
    log = simulate_reviewers(ws, "rs", reviewers=5, seed=1)

    assert log.unexpected == []
    assert review_problems(ws) == []
    assert unseen_overwrites(ws, log) == []
    assert log.double_handouts == 0, "the queue handed a pair someone was on to another reviewer"
    assert log.false_empty == 0, "the queue said 'nothing left' while pairs were free"
    assert log.conflicts > 0, "the simulation must make reviewers collide"
    # every decision a reviewer was told succeeded is stored once; every conflicted one is not stored
    stored = ws.cursor().execute("SELECT count(*) FROM decisions").fetchall()[0][0]
    assert stored == log.decided == sum(a["ok"] for a in log.attempts)
    p = progress(ws, "rs")
    assert p["left"] == 0 and p["total"] == len(pairs) == 20
