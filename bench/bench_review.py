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
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.store import open_workspace  # noqa: E402
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--decisions", type=int, default=50, help="timed decisions")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="loopbreak-bench-review-"))
    w = open_workspace(tmp / "ws")
    fill_demo(w, n_train=40)
    pairs = add_review_run(w, 33)
    w.close()
    need = WARMUP + args.decisions + 1
    assert len(pairs) >= need, f"{len(pairs)} pairs, need {need}"
    server = StreamlitServer(w.root)
    times: list[float] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            page.add_init_script(PROBE)
            page.goto(f"{server.url}/review?reviewer=bench")

            def shown(pair_id: str):
                return page.locator(".lb-pair-id").filter(has_text=f"pair {pair_id} ")

            shown(pairs[0]).wait_for(timeout=60_000)
            page.get_by_text("Agreement, bulk decisions", exact=False).wait_for()  # the first full run has finished
            page.wait_for_timeout(500)
            for i in range(WARMUP + args.decisions):
                page.keyboard.press("a")
                shown(pairs[i + 1]).wait_for(timeout=20_000)
                page.wait_for_function("id => window.__lb.shown[id] > 0", arg=pairs[i + 1], timeout=5_000)
                if i >= WARMUP:
                    times.append(page.evaluate("id => window.__lb.shown[id] - window.__lb.down", pairs[i + 1]))
            browser.close()
    finally:
        server.stop()
    w = open_workspace(w.root)
    decided = w.cursor().execute("SELECT count(*) FROM decisions WHERE reviewer = 'bench' AND action = 'approve'").fetchone()[0]
    w.close()
    times.sort()
    p95 = times[max(0, int(round(0.95 * len(times))) - 1)]
    print(f"{len(times)} timed decisions ({decided} approvals stored), {len(pairs)} pairs in the queue")
    print(f"p50 {statistics.median(times):.0f} ms · p95 {p95:.0f} ms · max {times[-1]:.0f} ms · mean {statistics.fmean(times):.0f} ms")
    print("all (ms):", " ".join(f"{t:.0f}" for t in times))
    print(f"P95 next-pair latency = {p95:.0f} ms (target <= 300 ms)")


if __name__ == "__main__":
    main()
