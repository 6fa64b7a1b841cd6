"""Review latency in a real browser: approve key pressed → the next pair's id visible, and the
decision → stored in the database; and the page's first load.

Builds a demo workspace with 66 pending pairs (through the store, as mining leaves them: each pair
has a 1,300-character folded loop on the rejected side), starts `streamlit run` on it, opens the
Review page in headless Chromium with Playwright, decides 3 pairs to warm up, then presses the
approve key 50 times, ``--think-ms`` after each pair shows (a reviewer reads before deciding; 0
is a stress test that outruns the pairs the pane keeps ready), and times each keypress until the
next pair's id is on the page. "Stored" is the time from the keypress to the server's answer that
the decision is committed (the pane's acknowledgement, `window.__lbReview.times`). "First load"
is navigation start → the first pair drawn.

The time is taken inside the page: a capture-phase keydown listener stamps the keypress, and a
MutationObserver stamps the first animation frame after the next pair's id enters the DOM. Timing
from Python instead would add Playwright's polling back-off (its waits re-check after 100, then
500 ms), which turns a 300 ms update into an 800 ms reading.

    .venv/bin/python bench/bench_review.py [--decisions 50]
    .venv/bin/python bench/bench_review.py --workspace /tmp/ws-big   # a big one from bench/gen_workspace.py

With ``--workspace`` the queue is that workspace's (e.g. 100k items × 8 candidates, ~77k pending
pairs): the decisions are written there, by a reviewer named ``bench-<time>``, so each run takes the
next pending pairs; the small demo queue is measured first in the same run, as the baseline.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.review.decisions import LEASE_S  # noqa: E402
from core.store import now, open_workspace  # noqa: E402
from tests.conftest import CHROMIUM, CHROMIUM_FLAGS, StreamlitServer, fill_demo  # noqa: E402
from tests.review_data import add_review_run  # noqa: E402

WARMUP = 3
PROBE = """
window.__lb = {down: null, shown: {}};
document.addEventListener("keydown", () => { window.__lb.down = performance.now(); }, true);
new MutationObserver(() => {
  for (const el of document.querySelectorAll(".lb-pair-id")) {
    const m = el.textContent.match(/pair (\\S+) /);
    if (m && !(m[1] in window.__lb.shown)) {
      window.__lb.shown[m[1]] = -1;
      requestAnimationFrame(() => { window.__lb.shown[m[1]] = performance.now(); });
    }
  }
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


def small_queue() -> tuple[Path, list[str], str]:
    """The demo queue: 66 pending pairs (the baseline)."""
    tmp = Path(tempfile.mkdtemp(prefix="loopbreak-bench-review-"))
    w = open_workspace(tmp / "ws")
    fill_demo(w, n_train=40)
    pairs = add_review_run(w, 33)
    w.close()
    return w.root, pairs, "bench"


def big_queue(root: str, need: int) -> tuple[Path, list[str], str]:
    """A generated workspace's first run; the queue's order for a new reviewer: pending pairs by id."""
    w = open_workspace(root, create=False)
    reviewer = f"bench-{int(time.time())}"
    cur = w.cursor()
    run = cur.execute("SELECT min(run_id) FROM pairs").fetchall()[0][0]
    # Earlier bench reviewers' last claims are given back; free then means unclaimed, or a lease that ran out.
    cur.execute("UPDATE pairs SET claimed_by = NULL, claimed_at = NULL WHERE starts_with(claimed_by, 'bench-')")
    pairs = [r[0] for r in cur.execute(
        "SELECT pair_id FROM pairs WHERE run_id = ? AND status = 'pending' AND (claimed_by IS NULL OR claimed_at < ?) "
        "ORDER BY pair_id LIMIT ?", [run, now() - timedelta(seconds=LEASE_S), need]).fetchall()]
    n_pairs, n_cands = cur.execute("SELECT (SELECT count(*) FROM pairs), (SELECT count(*) FROM candidates)").fetchall()[0]
    w.close()
    print(f"workspace {w.root}: {n_cands:,} candidates, {n_pairs:,} pairs; reviewer {reviewer}")
    return w.root, pairs, reviewer


def measure(root: Path, pairs: list[str], reviewer: str, decisions: int, think_ms: int = 300) -> dict:
    """Milliseconds from each approve keypress to the next pair drawn and to the decision stored, and
    the first load, in a real browser on `streamlit run`."""
    from playwright.sync_api import sync_playwright

    assert len(pairs) >= WARMUP + decisions + 1, f"{len(pairs)} pairs, need {WARMUP + decisions + 1}"
    server = StreamlitServer(root)
    times: list[float] = []
    stored: list[float] = []
    first = 0.0
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            page.add_init_script(PROBE)
            page.goto(f"{server.url}/review?reviewer={reviewer}")

            def shown(pair_id: str):
                return page.locator(".lb-pair-id").filter(has_text=f"pair {pair_id} ")

            shown(pairs[0]).wait_for(timeout=60_000)
            page.wait_for_function("id => window.__lb.shown[id] > 0", arg=pairs[0], timeout=5_000)
            first = page.evaluate("id => window.__lb.shown[id]", pairs[0])  # since navigation start
            page.get_by_text("Agreement, bulk decisions", exact=False).wait_for()  # the first full run has finished
            page.wait_for_timeout(500)
            for i in range(WARMUP + decisions):
                page.keyboard.press("a")
                shown(pairs[i + 1]).wait_for(timeout=20_000)
                page.wait_for_function("id => window.__lb.shown[id] > 0", arg=pairs[i + 1], timeout=5_000)
                if i >= WARMUP:
                    times.append(page.evaluate("id => window.__lb.shown[id] - window.__lb.down", pairs[i + 1]))
                page.wait_for_timeout(think_ms)
            page.locator(".lb-sync").filter(has_text="all stored").wait_for(timeout=60_000)
            stored = page.evaluate("() => Object.values(window.__lbReview.times).map(t => t[1] - t[0])")[WARMUP:]
            browser.close()
    finally:
        server.stop()
    w = open_workspace(root)
    decided = w.cursor().execute("SELECT count(*) FROM decisions WHERE reviewer = ? AND action = 'approve'", [reviewer]).fetchall()[0][0]
    w.close()
    assert decided == WARMUP + decisions, decided
    return {"next": sorted(times), "stored": sorted(stored), "first_load": first}


def p95(times: list[float]) -> float:
    return times[max(0, int(round(0.95 * len(times))) - 1)]


def report(name: str, m: dict) -> None:
    times, stored = m["next"], m["stored"]
    print(f"{name}: {len(times)} timed decisions · key → next pair p50 {statistics.median(times):.0f} ms · p95 {p95(times):.0f} ms · "
          f"max {times[-1]:.0f} ms · decision → stored p95 {p95(stored):.0f} ms (max {stored[-1]:.0f}) · first load {m['first_load']:.0f} ms")
    print("  key → next pair, all (ms):", " ".join(f"{t:.0f}" for t in times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--decisions", type=int, default=50, help="timed decisions")
    ap.add_argument("--think-ms", type=int, default=300, help="pause after each pair shows, as a reviewer reads it (0: a stress test)")
    ap.add_argument("--workspace", help="also review this (big) workspace's first run, after the small demo queue")
    args = ap.parse_args()
    small = measure(*small_queue(), args.decisions, args.think_ms)
    report(f"small demo queue (66 pairs), think {args.think_ms} ms", small)
    stress = measure(*small_queue(), args.decisions, 0)
    report("small demo queue, no pause (outruns the 8 pairs kept ready)", stress)
    target = "targets: key → next pair p95 <= 50 ms, stored <= 1000 ms, first load <= 2000 ms"
    if args.workspace:
        big = measure(*big_queue(args.workspace, WARMUP + args.decisions + 1), args.decisions, args.think_ms)
        report(f"big workspace, think {args.think_ms} ms", big)
        print(f"ratio big / small: key → next p95 {p95(big['next']) / p95(small['next']):.2f}×, stored p95 "
              f"{p95(big['stored']) / p95(small['stored']):.2f}×")
        print(f"P95 key → next pair (big) = {p95(big['next']):.0f} ms; stored p95 {p95(big['stored']):.0f} ms; "
              f"first load {big['first_load']:.0f} ms ({target})")
    else:
        print(f"P95 key → next pair = {p95(small['next']):.0f} ms; stored p95 {p95(small['stored']):.0f} ms; "
              f"first load {small['first_load']:.0f} ms ({target})")


if __name__ == "__main__":
    main()
