"""Access in a real `streamlit run` and a real browser: the server answers on 127.0.0.1 only, and with
require_login a visitor without a login cookie gets the login button (or, on a server without Authlib,
the line saying what to install) and nothing of the workspace, on the home page and on deep links.
The OIDC round trip runs for real against oidc-provider-mock, a local provider made for tests."""

from __future__ import annotations

import importlib.util
import socket

import pytest

from core.access import _read_toml
from core.store import open_workspace
from tests.conftest import ROOT, StreamlitServer, fill_demo

pytestmark = pytest.mark.browser


def non_loopback_address() -> str | None:
    """This machine's address on its default route (no packet is sent), or None without a network."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            addr = s.getsockname()[0]
        except OSError:
            return None
    return None if addr.startswith("127.") else addr


def test_default_binding_is_loopback_only():
    cfg = _read_toml(ROOT / ".streamlit" / "config.toml")
    assert cfg["server"]["address"] == "127.0.0.1"


def test_login_required_shows_only_the_login_in_a_real_browser(browser, tmp_path):
    w = open_workspace(tmp_path / "ws")
    fill_demo(w)
    w.close()
    (w.root / "loopbreak.toml").write_text('[access]\nrequire_login = true\nallowed_reviewers = ["ana@example.com"]\n')
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('[auth]\nredirect_uri = "http://localhost:8501/oauth2callback"\ncookie_secret = "test-only"\n'
                       'client_id = "x"\nclient_secret = "y"\n'
                       'server_metadata_url = "http://127.0.0.1:9/.well-known/openid-configuration"\n')
    server = StreamlitServer(w.root, ["--secrets.files", str(secrets)])
    try:
        addr = non_loopback_address()
        if addr:  # the server listens on the loopback interface only
            with socket.socket() as s, pytest.raises(OSError):
                s.settimeout(2)
                s.connect((addr, server.port))
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        for path in ("/", "/review", "/data"):
            page.goto(server.url + path)
            if importlib.util.find_spec("authlib"):
                page.get_by_text("log in to continue", exact=False).wait_for(timeout=30_000)
                page.get_by_role("button", name="Log in").wait_for()
            else:  # no Authlib on this server: it says what to install, and still shows nothing else
                page.get_by_text("st.login needs Authlib", exact=False).wait_for(timeout=30_000)
            body = page.inner_text("body")
            assert "items" not in body and "Reviewer" not in body and "Workspace" not in body, body[:500]
            assert page.locator("[data-testid=stSidebarNav]").count() == 0
        assert not errors
    finally:
        server.stop()


HAS_OIDC_MOCK = importlib.util.find_spec("oidc_provider_mock") is not None and importlib.util.find_spec("authlib") is not None


@pytest.mark.skipif(not HAS_OIDC_MOCK, reason="needs Authlib and oidc-provider-mock (pip install -e '.[auth,dev]')")
def test_the_login_round_trip_against_a_real_oidc_provider(browser, tmp_path):
    """st.login with Authlib against a local OpenID Connect provider: ana (on the list) logs in and decides
    a pair, recorded under her email; eve (not on the list) logs in and sees only the refusal."""
    from oidc_provider_mock import User, run_server_in_thread

    from tests.conftest import free_port
    from tests.review_data import add_review_run

    w = open_workspace(tmp_path / "ws")
    fill_demo(w)
    add_review_run(w, 2)
    w.close()
    (w.root / "loopbreak.toml").write_text('[access]\nrequire_login = true\nallowed_reviewers = ["ana@example.com"]\n')
    users = [User(sub="ana", claims={"email": "ana@example.com", "name": "Ana"}),
             User(sub="eve", claims={"email": "eve@evil.example", "name": "Eve"})]
    with run_server_in_thread(user_claims=users) as oidc:
        port = free_port()
        secrets = tmp_path / "secrets.toml"
        secrets.write_text(f'[auth]\nredirect_uri = "http://127.0.0.1:{port}/oauth2callback"\ncookie_secret = "test-only-secret"\n'
                           'client_id = "loopbreak-test"\nclient_secret = "test-secret"\n'
                           f'server_metadata_url = "http://127.0.0.1:{oidc.server_port}/.well-known/openid-configuration"\n')
        server = StreamlitServer(w.root, ["--secrets.files", str(secrets)], port=port)
        try:
            def log_in(sub: str):
                context = browser.new_context(viewport={"width": 1400, "height": 1800})
                page = context.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(server.url)
                page.get_by_role("button", name="Log in").click()
                page.get_by_role("heading", name="Authorize Client").wait_for(timeout=30_000)  # the provider's page
                page.locator("input[name=sub]").fill(sub)
                page.get_by_role("button", name="Authorize").click()
                page.wait_for_url(f"{server.url}/**", timeout=30_000)
                return context, page, errors

            context, page, errors = log_in("ana")
            page.get_by_role("button", name="Log out").wait_for(timeout=30_000)
            page.goto(f"{server.url}/review")
            page.locator(".lb-pair-id").wait_for(timeout=30_000)
            assert page.get_by_role("textbox", name="Reviewer").input_value() == "ana@example.com"
            first = page.locator(".lb-pair-id").inner_text()
            page.locator("h1").first.click()
            page.keyboard.press("a")
            page.get_by_text("all stored", exact=False).wait_for(timeout=20_000)
            page.get_by_text("1 done", exact=False).wait_for(timeout=20_000)
            assert not errors, errors
            context.close()

            context, page, errors = log_in("eve")
            page.get_by_text("eve@evil.example is not on this app", exact=False).wait_for(timeout=30_000)
            page.goto(f"{server.url}/review")
            page.get_by_text("is not on this app", exact=False).wait_for(timeout=30_000)
            assert page.locator(".lb-pair-id").count() == 0 and page.locator("[data-testid=stSidebarNav]").count() == 0
            assert "Reviewer" not in page.inner_text("body")
            context.close()
        finally:
            server.stop()
    w = open_workspace(tmp_path / "ws")
    rows = w.cursor().execute("SELECT pair_id, reviewer FROM decisions").fetchall()
    w.close()
    assert len(rows) == 1 and rows[0][1] == "ana@example.com" and rows[0][0] in first, (rows, first)
