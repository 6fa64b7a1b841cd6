"""Hostile input in a real browser: ≥ 30 XSS / injection payloads in documents, references, ids, names,
metadata and model outputs (sampled through the real openai backend from a server that returns them),
judged, mined into pairs, and shown on every page. None may execute: no dialog, no request to the
attacker's host, no element or attribute from a payload, no Markdown interpreted, no page error; and
the app still answers a navigation at the end.
"""

from __future__ import annotations

import os
import time

import pytest

from tests.conftest import StreamlitServer
from tests.hostile import (
    EVIL,
    HOSTILE_REVIEWER,
    PAYLOADS,
    RENDERED,
    build_workspace,
    markers,
)

pytestmark = pytest.mark.browser
T0 = [time.perf_counter()]  # LB_TIMES=1 prints the time of each step; LB_SHOTS=DIR saves a screenshot of each

# Everything in the page (and its same-origin frames) that a payload could have produced.
FIND_INJECTED = """(rendered) => {
  const hits = [];
  const urlAttrs = new Set(['href', 'src', 'action', 'data', 'formaction', 'xlink:href', 'srcdoc', 'background', 'poster']);
  const dangerous = new Set(['script', 'style', 'iframe', 'object', 'embed', 'base', 'meta', 'link', 'frame', 'marquee',
                             'form', 'math', 'video', 'audio', 'source', 'svg', 'img', 'noscript', 'template']);
  const quoted = (tag, attr) => (attr === 'value' && (tag === 'input' || tag === 'textarea'))
      || attr === 'title' || attr === 'aria-label' || attr === 'aria-valuetext' || attr === 'placeholder';
  for (const el of document.querySelectorAll('body *')) {
    const tag = el.tagName.toLowerCase();
    for (const a of el.attributes) {
      const n = a.name.toLowerCase(), v = a.value || '';
      if (n.startsWith('on')) hits.push(`<${tag} ${n}="${v.slice(0, 60)}">`);
      if (urlAttrs.has(n) && /^\\s*(javascript|vbscript|data:text\\/html)/i.test(v)) hits.push(`<${tag} ${n}="${v.slice(0, 60)}">`);
      if (v.includes('evil.example') && !quoted(tag, n)) hits.push(`<${tag} ${n}="${v.slice(0, 60)}">`);
      // Streamlit's own uses of a shown text: heading anchors (id, href="#…") and widget-key classes.
      // Plotly keeps the source of a label in data-unformatted (the drawn text is checked below).
      const own = n === 'id' || n === 'class' || (n === 'href' && v.startsWith('#')) || n === 'data-unformatted';
      if (v.includes('lbx') && !quoted(tag, n) && !own) hits.push(`<${tag} ${n}="${v.slice(0, 60)}">`);
    }
    const chart = tag === 'svg' && el.closest('.js-plotly-plot');  // a chart's own svg holds its (escaped) labels
    if (dangerous.has(tag) && !chart && (el.outerHTML.includes('lbx') || el.outerHTML.includes('alert('))) hits.push(`<${tag}> ${el.outerHTML.slice(0, 80)}`);
    if (el.classList.contains('katex') || el.classList.contains('katex-display')) hits.push(`katex: ${el.textContent.slice(0, 60)}`);
    const t = el.textContent.trim();
    if (rendered.includes(t)) hits.push(`markdown <${tag}>${t}`);
  }
  if (document.body.innerText.includes(String.fromCodePoint(0x1F480))) hits.push('markdown emoji shortcode :skull: (lbx22)');
  return hits;
}"""


def wait_idle(page, timeout: int = 30_000) -> None:
    """conftest.wait_idle, but for an app a payload may have hidden (a <style> that hides the body):
    the check goes on and reports it instead of timing out on visibility."""
    page.locator("[data-testid=stApp][data-test-script-state=notRunning]").wait_for(state="attached", timeout=timeout)


class Watch:
    """Dialogs, page errors and requests to the attacker's host, as they happen."""

    def __init__(self, page):
        self.dialogs, self.errors, self.requests = [], [], []
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.route(f"{EVIL}/**", lambda route: (self.requests.append(route.request.url), route.abort()))
        # (Streamlit itself fetches its Material icon font from fonts.gstatic.com: not a payload's doing)
        page.on("request", lambda r: self.requests.append(r.url) if "lbx" in r.url or "evil" in r.url else None)


def injected(page) -> list[str]:
    hits = []
    for frame in page.frames:
        try:
            hits += frame.evaluate(FIND_INJECTED, sorted(RENDERED))
        except Exception as e:  # a cross-origin frame: only a payload could have put one there
            hits.append(f"frame {frame.url}: {e}")
    return hits


def check(page, watch: Watch, where: str, seen: dict, problems: list) -> None:
    """Record what a payload did on this page (by marker) and any other failure; the test asserts at the end."""
    wait_idle(page)
    if os.environ.get("LB_TIMES"):
        print(f"{time.perf_counter() - T0[0]:6.1f}s {where}")
    hits = injected(page)
    found = hits + [f"dialog {d}" for d in watch.dialogs] + [f"request {r}" for r in watch.requests]
    for h in found:
        for m in markers():
            if m in h:
                seen.setdefault(m, []).append(f"{where}: {h[:120]}")
    problems += [f"{where}: {h[:160]}" for h in found] + [f"{where}: page error {e}" for e in watch.errors]
    if page.locator("[data-testid=stException]").count():
        problems.append(f"{where}: exception\n{page.inner_text('body')[:1500]}")
    watch.dialogs.clear(), watch.requests.clear(), watch.errors.clear()
    if os.environ.get("LB_SHOTS"):  # debugging: a screenshot of every step
        page.screenshot(path=f"{os.environ['LB_SHOTS']}/{where.replace(' ', '_')}.png", full_page=True)


def goto(page, label: str) -> None:
    wait_idle(page)
    page.locator("[data-testid=stSidebarNav] a").filter(has_text=label).click()
    page.locator("h1").filter(has_text=label if label != "Home" else "Loopbreak").wait_for(timeout=90_000)
    wait_idle(page)


FIND = "([sel, has]) => { const e = [...document.querySelectorAll(sel)].find(e => e.innerText.includes(has)); return e ? e.innerText : null; }"


def text_of(page, selector: str, has: str = "") -> str | None:
    """The text of the first element matching a CSS selector whose text contains ``has``."""
    return page.evaluate(FIND, [selector, has])


def wait_changed(page, selector: str, before: str | None, has: str = "", also: str = "") -> None:
    """Wait until that element's text differs from ``before`` (or ``also`` shows): the rerun has redrawn it."""
    page.wait_for_function(
        f"""([sel, has, before, also]) => {{
             const text = ({FIND})([sel, has]);
             return (text !== null && text !== before) || (also !== "" && document.body.innerText.includes(also));
           }}""", arg=[selector, has, before, also], timeout=30_000)
    wait_idle(page)


def click_row(page, grid, row: int, selector: str, has: str = "") -> None:
    """Select a row of a (canvas) data grid and wait until the element that shows the selection changes."""
    grid.locator("canvas").first.wait_for()
    before = text_of(page, selector, has)
    for _ in range(6):
        wait_idle(page)
        box = grid.bounding_box()
        page.mouse.click(box["x"] + 12, box["y"] + 54 + 35 * row)
        try:
            wait_changed(page, selector, before, has)
            return
        except Exception:  # the grid may still be settling after its first paint: click again
            continue
    raise AssertionError(f"row {row} of the grid could not be selected")


def pick(page, label: str, option: str) -> None:
    """Choose an option of a selectbox or multiselect by its label."""
    wait_idle(page)
    page.get_by_role("combobox", name=label).click()
    page.get_by_role("option", name=option).first.click()
    page.keyboard.press("Escape")
    wait_idle(page)


def test_hostile_payloads_never_execute_on_any_page(browser, tmp_path):
    T0[0] = time.perf_counter()
    built = build_workspace(tmp_path / "ws`**lbx22**` :red[lbx22red]")
    assert built["states"][built["sample_run"]] == "done" and built["states"][built["refused_run"]] == "failed"
    assert built["candidates"] == 36 and built["pairs"] >= 6  # 6 items × 4 sampled and × 2 evaluated; 2 pairs per item
    if os.environ.get("LB_TIMES"):
        print(f"{time.perf_counter() - T0[0]:6.1f}s workspace built")
    server = StreamlitServer(tmp_path / "ws`**lbx22**` :red[lbx22red]")
    seen: dict[str, list[str]] = {}
    problems: list[str] = []
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        watch = Watch(page)
        page.goto(server.url)
        page.locator("h1").filter(has_text="Loopbreak").wait_for(timeout=30_000)
        check(page, watch, "home", seen, problems)

        goto(page, "Data")
        grid = page.locator("[data-testid=stDataFrame]").first
        for row in range(6):  # every item: its id as a heading, its document, reference and metadata
            click_row(page, grid, row, "h3", "Item ")
            check(page, watch, f"data row {row}", seen, problems)

        goto(page, "Sample")
        page.get_by_text("done", exact=True).first.wait_for(timeout=20_000)
        page.get_by_text("failed", exact=True).first.wait_for(timeout=20_000)
        check(page, watch, "sample", seen, problems)
        click_row(page, page.locator("[data-testid=stDataFrame]").last, 0, ".lb-text")
        check(page, watch, "sample candidate", seen, problems)
        attractor = page.get_by_role("button", name="Attractor: token probabilities")
        if attractor.count():  # its model is a server, not a local folder: the reason shown names the hostile model
            reason = page.get_by_text("is not on this machine", exact=False)
            for _ in range(4):  # the page's live fragment reruns every 2 s: a click on a button it just replaced is lost
                wait_idle(page)
                attractor.first.click()
                try:
                    reason.wait_for(timeout=10_000)
                    break
                except Exception:
                    continue
            reason.wait_for(timeout=5_000)
            check(page, watch, "sample attractor", seen, problems)

        goto(page, "Judge")
        page.get_by_text("Mine pairs", exact=True).wait_for(timeout=90_000)
        check(page, watch, "judge", seen, problems)

        goto(page, "Review")
        reviewer = page.get_by_role("textbox", name="Reviewer")
        reviewer.fill(HOSTILE_REVIEWER)
        reviewer.press("Enter")
        page.locator(".lb-pair-id").wait_for(timeout=20_000)
        check(page, watch, "review", seen, problems)
        page.get_by_text("Diff against the reference").click()
        check(page, watch, "review diff", seen, problems)
        page.get_by_text("Pick another candidate, or correct the chosen").click()
        page.get_by_text("Corrected chosen", exact=True).wait_for()
        check(page, watch, "review pick", seen, problems)
        for i in range(built["pairs"]):  # every pair, each with its document and both sides
            before = text_of(page, ".lb-pair-id")
            page.locator("h1").first.click()  # keys go to the page, not to the toggle that has the focus
            page.keyboard.press("a")
            wait_changed(page, ".lb-pair-id", before, also="Nothing left in this queue.")
            check(page, watch, f"review after {i + 1} decisions", seen, problems)
        page.get_by_text("Nothing left in this queue.").wait_for()
        page.get_by_text("Agreement, bulk decisions", exact=False).click()
        page.get_by_text("I checked the filter above", exact=False).click()
        wait_idle(page)
        page.get_by_role("button", name="Approve all matching").click()
        page.get_by_text("pairs decided (approve)", exact=False).wait_for()
        check(page, watch, "review bulk", seen, problems)

        goto(page, "Candidates")
        pick(page, "Run", built["sample_run"])
        pick(page, "Finish reason", "length")  # each item's degenerate loop, and the 1 MB single line (row 4)
        page.get_by_text("7 candidates").wait_for()
        grid = page.locator("[data-testid=stDataFrame]").first
        shown = []
        for row in range(7):
            click_row(page, grid, row, "h3", " · candidate ")
            check(page, watch, f"candidates row {row}", seen, problems)
            shown.append(page.inner_text("[data-testid=stMain]"))
        assert any("1,000,000 chars" in t for t in shown)  # the 1 MB single line was opened (and cut for the browser)

        goto(page, "Evaluate")
        page.get_by_text("Degeneration by family and stage").wait_for(timeout=20_000)
        page.locator(".lb-text").first.wait_for(timeout=20_000)
        check(page, watch, "evaluate", seen, problems)

        goto(page, "Train")
        check(page, watch, "train", seen, problems)

        goto(page, "Inspect")
        page.get_by_role("textbox", name="Model output").fill("\n".join(p for _, p in PAYLOADS))
        page.get_by_role("textbox", name="Model output").press("Control+Enter")
        page.get_by_text("compression_ratio", exact=True).first.wait_for()
        check(page, watch, "inspect", seen, problems)

        goto(page, "Home")  # still responsive after all of it
        page.locator("[data-testid=stMetricValue]").first.wait_for()
        assert page.locator("[data-testid=stMetricValue]").first.inner_text() == "6"
        check(page, watch, "home again", seen, problems)
    except Exception as e:  # a payload that broke the page stops the walk: report it with what was seen so far
        problems.append(f"stopped: {type(e).__name__}: {str(e)[:400]}")
        page.screenshot(path=str(tmp_path.parent / "hostile-stopped.png"), full_page=True, timeout=60_000)
    finally:
        server.stop()
    tried = len(PAYLOADS) + 1
    print(f"\nhostile payloads tried: {tried} (+ hostile ids, names, file and workspace paths); executed: {len(seen)}")
    assert not problems, "\n".join(problems)
    assert not seen
