"""The openai backend over a fleet of servers, and the doors on the server URL it is given."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import jobs
from core.access import AccessConfig, AccessDenied, check_base_url, refuse_internal
from core.samplers.openai import OpenAISampler
from core.steps.sample import start_sampling
from tests.faults import FakeCompletions, compare
from tests.test_faults import fake_cfg

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def test_two_servers_one_killed_mid_run_lose_and_double_nothing(demo_ws):
    n_items = demo_ws.cursor().execute("SELECT count(*) FROM items").fetchall()[0][0]
    with FakeCompletions() as alone:
        ref = start_sampling(demo_ws, fake_cfg(alone.url))
        assert jobs.wait(demo_ws, ref, poll_s=0.05).status == "done"
    with FakeCompletions(delay_s=0.03) as a, FakeCompletions(delay_s=0.03) as b:
        run_id = start_sampling(demo_ws, fake_cfg(f"{a.url}, {b.url}"))

        def kill_b():  # once b has answered a few requests, mid-run
            deadline = time.time() + 60
            while b.answered < 4 and time.time() < deadline:
                time.sleep(0.005)
            b.kill()

        killer = threading.Thread(target=kill_b)
        killer.start()
        state = jobs.wait(demo_ws, run_id, poll_s=0.05)
        killer.join()
        assert state.status == "done", jobs.read_log(demo_ws, run_id)
        assert b.dead and b.answered >= 4 and a.answered > b.answered  # both served; a took over once b died
    c = compare(demo_ws, "candidates", ref, run_id)
    assert c["rows"] == c["reference"] == 3 * n_items
    assert (c["lost"], c["extra"], c["changed"], c["duplicated"]) == (0, 0, 0, 0), c


def test_requests_go_to_the_server_with_the_fewest_outstanding():
    with FakeCompletions(delay_s=0.05) as a, FakeCompletions(delay_s=0.05) as b:
        sampler = OpenAISampler("m", f"{a.url},{b.url}", concurrency=8, endpoint="completions")
        from core.samplers.base import DecodingConfig, Request

        out = sampler.generate([Request(f"p{i}", 1, True, i) for i in range(16)], DecodingConfig(max_new_tokens=8))
        assert all(isinstance(g, list) and len(g) == 1 for g in out)
        assert a.answered + b.answered == 16 and min(a.answered, b.answered) >= 6  # spread, not all on one


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/", "http://2852039166/", "http://0xa9.0xfe.0xa9.0xfe/", "http://[fe80::1]:8000",
    "http://[::ffff:169.254.169.254]/", "http://[fd00:ec2::254]/", "http://100.100.100.200/", "http://metadata.google.internal/",
    "file:///etc/passwd", "gopher://127.0.0.1:6379/", "http://:80/",
])
def test_link_local_and_metadata_addresses_are_refused_always(url):
    with pytest.raises(AccessDenied):
        refuse_internal(url)
    with pytest.raises(AccessDenied):
        OpenAISampler("m", f"http://127.0.0.1:8000, {url}")  # one bad URL of a fleet refuses the whole


def test_a_shared_app_allows_only_the_listed_hosts():
    assert check_base_url("http://127.0.0.1:8000", None) == "http://127.0.0.1:8000"  # local: anything but the above
    allowed = ["gpu1:8000", "*.lan", "127.0.0.1"]
    assert check_base_url("http://gpu1:8000/v1, http://node3.lan:9000, http://127.0.0.1:1", allowed)
    for url in ("http://gpu1:8001", "http://gpu2:8000", "http://evil.lan.example.com", "http://localhost:8000"):
        with pytest.raises(AccessDenied, match="allowed_hosts"):
            check_base_url(url, allowed)
    with pytest.raises(AccessDenied, match="allowed_hosts"):
        check_base_url("http://127.0.0.1:8000", [])  # shared with no list: no typed URL
    assert AccessConfig.from_dict({"allowed_hosts": "gpu1"}).allowed_hosts == ["gpu1"]


def _sample_with_url(at: AppTest, url: str) -> list[str]:
    next(s for s in at.selectbox if s.label == "Model").set_value("Other: a path or hub id")
    next(t for t in at.text_input if t.label == "Path or hub id").set_value("fake-model")
    next(s for s in at.selectbox if s.label == "Backend").set_value("openai")
    next(t for t in at.text_input if t.label == "Server URL (openai backend)").set_value(url)
    next(b for b in at.button if b.label == "Run").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return [e.value.replace("\\", "").replace("\u2060", "") for e in at.error]


def test_the_sample_and_judge_pages_check_the_typed_url(demo_ws, monkeypatch):
    from tests.test_access import AUTH

    (demo_ws.root / "loopbreak.toml").write_text(
        '[access]\nrequire_login = true\nallowed_reviewers = ["ana@example.com"]\nallowed_hosts = ["127.0.0.1"]\n')
    monkeypatch.setenv("LOOPBREAK_WORKSPACE", str(demo_ws.root))
    monkeypatch.delenv("LOOPBREAK_CONFIG", raising=False)
    at = AppTest.from_file(APP, default_timeout=60)
    at.secrets["auth"] = AUTH
    at.user = {"is_logged_in": True, "email": "ana@example.com", "name": "Ana"}
    at.session_state["workspace_path"] = str(demo_ws.root)
    at.run()
    at.switch_page("views/sample.py").run()
    assert any("not in allowed_hosts" in e for e in _sample_with_url(at, "http://10.0.0.7:8000"))
    assert any("metadata" in e for e in _sample_with_url(at, "http://169.254.169.254"))
    runs = demo_ws.cursor().execute("SELECT count(*) FROM runs WHERE kind = 'sample'").fetchone()[0]
    with FakeCompletions() as server:
        assert not _sample_with_url(at, server.url)  # on the list: the run starts
        (run_id,) = demo_ws.cursor().execute("SELECT run_id FROM runs WHERE kind = 'sample'").fetchone()
        assert jobs.wait(demo_ws, run_id, poll_s=0.05).status == "done"
    assert runs == 0

    at.switch_page("views/judge.py").run()
    next(s for s in at.selectbox if s.label == "Judge").set_value("llm")
    next(s for s in at.selectbox if s.label == "Backend (llm)").set_value("openai")
    next(t for t in at.text_input if t.label == "Server URL (llm, openai backend)").set_value("http://10.0.0.7:8000")
    next(b for b in at.button if b.label == "Judge").click()
    at.run()
    assert any("not in allowed_hosts" in e.value.replace("\\", "") for e in at.error), [e.value for e in at.error]
