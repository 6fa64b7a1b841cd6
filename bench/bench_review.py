"""Review latency in a real browser: approve key pressed → the next pair's id visible.

Builds a demo workspace with 66 pending pairs (through the store, as mining leaves them: each pair
has a 1,300-character folded loop on the rejected side), starts `streamlit run` on it, opens the
Review page in headless Chromium with Playwright, decides 3 pairs to warm up, then presses the
approve key 50 times and times each keypress until the next pair's id is on the page.

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


def measure(root: Path, pairs: list[str], reviewer: str, decisions: int) -> list[float]:
    """Milliseconds from each approve keypress to the next pair drawn, in a real browser on `streamlit run`."""
    from playwright.sync_api import sync_playwright

    assert len(pairs) >= WARMUP + decisions + 1, f"{len(pairs)} pairs, need {WARMUP + decisions + 1}"
    server = StreamlitServer(root)
    times: list[float] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            page.add_init_script(PROBE)
            page.goto(f"{server.url}/review?reviewer={reviewer}")

            def shown(pair_id: str):
                return page.locator(".lb-pair-id").filter(has_text=f"pair {pair_id} ")

            shown(pairs[0]).wait_for(timeout=60_000)
            page.get_by_text("Agreement, bulk decisions", exact=False).wait_for()  # the first full run has finished
            page.wait_for_timeout(500)
            for i in range(WARMUP + decisions):
                page.keyboard.press("a")
                shown(pairs[i + 1]).wait_for(timeout=20_000)
                page.wait_for_function("id => window.__lb.shown[id] > 0", arg=pairs[i + 1], timeout=5_000)
                if i >= WARMUP:
                    times.append(page.evaluate("id => window.__lb.shown[id] - window.__lb.down", pairs[i + 1]))
            browser.close()
    finally:
        server.stop()
    w = open_workspace(root)
    decided = w.cursor().execute("SELECT count(*) FROM decisions WHERE reviewer = ? AND action = 'approve'", [reviewer]).fetchall()[0][0]
    w.close()
    assert decided == WARMUP + decisions, decided
    return sorted(times)


def p95(times: list[float]) -> float:
    return times[max(0, int(round(0.95 * len(times))) - 1)]


def report(name: str, times: list[float]) -> None:
    print(f"{name}: {len(times)} timed decisions · p50 {statistics.median(times):.0f} ms · p95 {p95(times):.0f} ms · "
          f"max {times[-1]:.0f} ms · mean {statistics.fmean(times):.0f} ms")
    print("  all (ms):", " ".join(f"{t:.0f}" for t in times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--decisions", type=int, default=50, help="timed decisions")
    ap.add_argument("--workspace", help="also review this (big) workspace's first run, after the small demo queue")
    args = ap.parse_args()
    small = measure(*small_queue(), args.decisions)
    report("small demo queue (66 pairs)", small)
    if args.workspace:
        big = measure(*big_queue(args.workspace, WARMUP + args.decisions + 1), args.decisions)
        report("big workspace", big)
        print(f"ratio big / small: p50 {statistics.median(big) / statistics.median(small):.2f}×, p95 {p95(big) / p95(small):.2f}×")
        print(f"P95 next-pair latency (big) = {p95(big):.0f} ms (target <= 300 ms); small in the same run {p95(small):.0f} ms")
    else:
        print(f"P95 next-pair latency = {p95(small):.0f} ms (target <= 300 ms)")


if __name__ == "__main__":
    main()
