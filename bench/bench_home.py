"""Home page load on a big workspace, against the same page on a small demo workspace (same run).

Two figures per workspace:

* **core** — the functions Home and the sidebar call on every run (`counts`, `next_step`,
  `list_datasets`, `list_models`), timed `--repeats` times: p50 / p95;
* **browser** — a real `streamlit run` on the workspace and headless Chromium: a fresh page
  (a new session, so the whole app runs) is loaded `--loads` times after one warm-up; the time is
  taken inside the page, from navigation start to the first moment the seven metrics and the
  "Next:" box are drawn and the app's script run has finished.

    .venv/bin/python bench/bench_home.py --workspace /tmp/ws-big   # from bench/gen_workspace.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.store import counts, next_step, open_workspace
from core.store.items import list_datasets
from core.store.models import list_models  # noqa: E402
from tests.conftest import CHROMIUM, CHROMIUM_FLAGS, StreamlitServer, fill_demo  # noqa: E402
from tests.review_data import add_review_run  # noqa: E402

PROBE = """
window.__lb_home = null;
new MutationObserver(() => {
  if (window.__lb_home !== null) return;
  const app = document.querySelector("[data-testid=stApp]");
  if (!app || app.getAttribute("data-test-script-state") !== "notRunning") return;
  if (document.querySelectorAll("[data-testid=stMetric]").length < 7) return;
  if (!document.querySelector("[data-testid=stAlert]")) return;
  window.__lb_home = performance.now();
}).observe(document, {subtree: true, childList: true, attributes: true, characterData: true});
"""


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[max(0, int(round(q * len(xs))) - 1)]


def old_counts(cur) -> dict:
    """Home's counts before they were cached (kept here as the baseline): a DISTINCT over every judgment per call."""
    out = {t: cur.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in ("items", "candidates", "judgments", "pairs", "decisions", "models", "runs")}
    out["judged_candidates"] = cur.execute("SELECT count(DISTINCT candidate_id) FROM judgments").fetchall()[0][0]
    for status in ("pending", "approved", "rejected"):
        out[f"pairs_{status}"] = cur.execute("SELECT count(*) FROM pairs WHERE status = ?", [status]).fetchall()[0][0]
    return out


def core_times(root: Path, repeats: int, counter=counts) -> list[float]:
    ws = open_workspace(root)
    times = []
    for i in range(repeats + 1):
        t = time.perf_counter()
        cur = ws.cursor()
        c = counter(cur)  # the sidebar's
        c = counter(cur)  # Home's own
        next_step(c)
        list_datasets(cur)
        list_models(cur)
        if i:
            times.append((time.perf_counter() - t) * 1000)
    ws.close()
    return times


def browser_times(root: Path, loads: int) -> list[float]:
    from playwright.sync_api import sync_playwright

    server = StreamlitServer(root)
    out = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            for i in range(loads + 1):
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.add_init_script(PROBE)
                page.goto(server.url)
                page.wait_for_function("() => window.__lb_home !== null", timeout=120_000)
                if i:
                    out.append(page.evaluate("() => window.__lb_home"))
                page.close()
            browser.close()
    finally:
        server.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", required=True, help="the big workspace (bench/gen_workspace.py)")
    ap.add_argument("--repeats", type=int, default=20, help="timed runs of the core functions")
    ap.add_argument("--loads", type=int, default=5, help="timed page loads in the browser")
    args = ap.parse_args()

    small = Path(tempfile.mkdtemp(prefix="loopbreak-bench-home-")) / "ws"
    w = open_workspace(small)
    fill_demo(w, n_train=40)
    add_review_run(w, 33)
    w.close()
    big = Path(args.workspace)
    w = open_workspace(big, create=False)
    n = counts(w.cursor())
    w.close()
    print(f"big: {n['items']:,} items, {n['candidates']:,} candidates, {n['judgments']:,} judgments, {n['pairs']:,} pairs")

    res = {}
    for name, root in (("small", small), ("big", big)):
        c = core_times(root, args.repeats)
        b = browser_times(root, args.loads)
        res[name] = (c, b)
        print(f"{name:5s} core: p50 {statistics.median(c):.1f} ms · p95 {pct(c, 0.95):.1f} ms   "
              f"browser load: p50 {statistics.median(b) / 1000:.2f} s · max {max(b) / 1000:.2f} s  ({', '.join(f'{x / 1000:.2f}' for x in b)})")
    (cs, bs), (cb, bb) = res["small"], res["big"]
    old = core_times(big, max(3, args.repeats // 4), old_counts)
    print(f"baseline (the old counts, big): core p50 {statistics.median(old):.0f} ms · p95 {pct(old, 0.95):.0f} ms "
          f"→ {pct(old, 0.95) / pct(cb, 0.95):.0f}× the p95 now")
    print(f"ratio big / small: core p95 {pct(cb, 0.95) / pct(cs, 0.95):.1f}×, browser p50 {statistics.median(bb) / statistics.median(bs):.2f}×")
    print(f"HOME load on the big workspace = {statistics.median(bb) / 1000:.2f} s (p50 of {len(bb)}), core {pct(cb, 0.95):.0f} ms p95")


if __name__ == "__main__":
    main()
