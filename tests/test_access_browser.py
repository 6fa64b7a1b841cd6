"""Access in a real `streamlit run` and a real browser: the server answers on 127.0.0.1 only, and with
require_login a visitor without a login cookie gets the login button (or, on a server without Authlib,
the line saying what to install) and nothing of the workspace, on the home page and on deep links.
(The OIDC round trip itself needs a provider: the gate's decisions are tested in test_access.py.)"""

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
