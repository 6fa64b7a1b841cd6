"""Shared fixtures: real workspaces (real DuckDB files) in temporary folders."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from core.demo.docs import build_demo_records
from core.steps.importer import ImportFields, import_records, validate
from core.store import open_workspace

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture
def ws(tmp_path):
    """An empty workspace; its database handle is released after the test."""
    w = open_workspace(tmp_path / "ws")
    yield w
    w.close()


def fill_demo(w, n_train=12, n_validation=4, n_test=6, seed=0):
    records = build_demo_records(seed=seed, n_train=n_train, n_validation=n_validation, n_test=n_test)
    items = validate(((i, r) for i, r in enumerate(records, 1)), Path("<demo>"), ImportFields(), None)
    return import_records(w, items, "demo", source="demo")


@pytest.fixture
def demo_ws(ws):
    fill_demo(ws)
    return ws


@pytest.fixture
def judged_ws(demo_ws):
    """A sampling run and a judging run over 3 demo items, written as the jobs' shards would be."""
    import json

    from core.store import now

    cur = demo_ws.cursor()
    items = [r[0] for r in cur.execute("SELECT item_id FROM items WHERE split = 'train' ORDER BY 1 LIMIT 3").fetchall()]
    cur.execute("INSERT INTO runs (run_id, kind, status, created_at) VALUES ('s1', 'sample', 'done', ?)", [now()])
    cur.execute("INSERT INTO runs (run_id, kind, status, config, source_run, created_at) VALUES ('j1', 'judge', 'done', ?, 's1', ?)",
                [json.dumps({"source_run": "s1"}), now()])
    table = {items[0]: [(0.9, False), (0.4, True)], items[1]: [(0.8, False), (0.8, False)], items[2]: [(0.2, True), (0.1, True)]}
    cur.execute("INSERT INTO prompts VALUES (sha256('P JSON:'), 'P JSON:')")
    for item, cands in table.items():
        for k, (overall, degenerate) in enumerate(cands):
            cid = f"s1:{item}:{k}"
            cur.execute(
                "INSERT INTO candidates (candidate_id, run_id, dataset, item_id, sample_index, prompt_id, text, finish_reason, degenerate, has_loop) "
                "VALUES (?, 's1', 'demo', ?, ?, sha256('P JSON:'), ?, ?, ?, ?)",
                [cid, item, k, f"out {k}", "length" if degenerate else "stop", degenerate, degenerate],
            )
            cur.execute("INSERT INTO judgments (judgment_id, run_id, candidate_id, judge, scores, overall) VALUES (?, 'j1', ?, 'reference', '{}', ?)",
                        [f"j1:{cid}", cid, overall])
    return demo_ws, items


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StreamlitServer:
    """`streamlit run app.py` as a real subprocess on a free port."""

    def __init__(self, workspace: Path, args: list[str] = (), port: int | None = None):
        """``args``: more `streamlit run` options, e.g. ["--secrets.files", "secrets.toml"]; ``port``: one chosen
        beforehand (an OIDC redirect URI must name it)."""
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workspace.parent / "streamlit.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(self.port), *args,
             "--", "--workspace", str(workspace)],
            cwd=ROOT, stdout=self.log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2).read() == b"ok":
                    return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"streamlit did not start:\n{self.log.read_text()}")

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            self.proc.wait(10)


@pytest.fixture
def browser():
    """A real headless Chromium through Playwright; skipped (with the reason) where it cannot run."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium); browser tests skipped")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed; browser tests skipped")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny random Llama-shaped model with the demo tokenizer, saved like a real one."""
    from tests.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture
def app_server(tmp_path):
    """A demo workspace served by a real `streamlit run` (the test process releases the file first)."""
    w = open_workspace(tmp_path / "ws")
    fill_demo(w)
    w.close()
    server = StreamlitServer(w.root)
    yield server
    server.stop()


def wait_idle(page, timeout: int = 30_000) -> None:
    """Wait until the app's script run has finished: a key or click sent mid-rerun may land on a stale widget."""
    page.locator("[data-testid=stApp][data-test-script-state=notRunning]").wait_for(timeout=timeout)


def click_first_row(page, grid, expect, tries: int = 5) -> None:
    """Select a dataframe's first row by clicking its canvas until ``expect`` (a locator) shows. The
    grid draws its rows after the script run ends, and a rerun (e.g. the runs panel's, when a run
    ends) drops a click sent in the middle of it, so wait for both before each try."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    grid.locator("canvas").first.wait_for(timeout=30_000)
    for _ in range(tries):
        wait_idle(page)
        page.wait_for_timeout(1_000)
        box = grid.bounding_box()
        page.mouse.click(box["x"] + 12, box["y"] + 54)
        try:
            expect.wait_for(timeout=4_000)
            return
        except PlaywrightTimeout:
            continue


def has_apt_chromium() -> bool:
    return shutil.which("chromium") is not None
