"""Access: allowed roots for typed paths (.., symlinks, ~), the [access] settings, the login gate.

The login gate runs in AppTest with ``AppTest.user`` (Streamlit's own stand-in for ``st.user``): a real
OIDC round trip needs a provider, which is not reachable offline. Everything else is real: real files,
real symlinks, the real app script.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.access import AccessConfig, AccessDenied, check_model_ref, check_path, effective_roots, gate, is_allowed, is_shared, load_access
from core.store import WorkspaceError

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture
def tree(tmp_path):
    """root/ (allowed) with a model and links out of it; outside/ next to it, and root-evil/ (a prefix twin)."""
    root, outside, twin = tmp_path / "root", tmp_path / "outside", tmp_path / "root-evil"
    for d in (root / "models" / "m", outside, twin):
        d.mkdir(parents=True)
    (outside / "secret.jsonl").write_text("{}\n")
    (root / "models" / "m" / "config.json").write_text("{}")
    (root / "out").symlink_to(outside)  # a folder link that leaves the root
    (root / "secret.jsonl").symlink_to(outside / "secret.jsonl")  # a file link that leaves it
    (root / "inner").symlink_to(root / "models")  # a link that stays inside
    return root.resolve(), outside.resolve(), twin.resolve()


def test_paths_inside_the_roots_pass_and_come_back_resolved(tree):
    root, _, _ = tree
    assert check_path(root / "models" / "m", [root]) == root / "models" / "m"
    assert check_path(f"{root}/models/../models/m", [root]) == root / "models" / "m"
    assert check_path(root / "inner" / "m", [root]) == root / "models" / "m"  # followed, still inside
    assert check_path(root / "exports" / "new.jsonl", [root]) == root / "exports" / "new.jsonl"  # need not exist yet
    assert check_path(root, [root]) == root


@pytest.mark.parametrize("escape", [
    "{root}/../outside/secret.jsonl",         # .. out of the root
    "{root}/models/../../outside",            # .. deeper
    "{root}/out/secret.jsonl",                # through a folder symlink
    "{root}/secret.jsonl",                    # a file symlink
    "{root}/out/new-export.jsonl",            # a file to be written through a symlinked folder
    "{twin}/x.jsonl",                         # a sibling whose name starts with the root's
    "/etc/passwd",
    "{root}/models/m/../../../outside",
])
def test_escapes_are_refused(tree, escape):
    root, _, twin = tree
    with pytest.raises(AccessDenied, match="outside the folders this app may use"):
        check_path(escape.format(root=root, twin=twin), [root])


def test_relative_and_home_paths_resolve_before_the_check(tree, monkeypatch):
    root, outside, _ = tree
    monkeypatch.chdir(root / "models")
    assert check_path("m", [root]) == root / "models" / "m"
    with pytest.raises(AccessDenied):
        check_path("../../outside/secret.jsonl", [root])
    monkeypatch.setenv("HOME", str(outside))
    with pytest.raises(AccessDenied):
        check_path("~/secret.jsonl", [root])
    with pytest.raises(AccessDenied, match="NUL"):
        check_path(f"{root}/a\x00b", [root])


def test_no_roots_means_no_restriction(tree):
    _, outside, _ = tree
    assert check_path(outside / "secret.jsonl", None) == outside / "secret.jsonl"


def test_a_symlinked_root_is_compared_by_its_target(tree, tmp_path):
    root, _, _ = tree
    (tmp_path / "alias").symlink_to(root)
    roots = effective_roots(AccessConfig(allowed_roots=[str(tmp_path / "alias")]), tmp_path, shared=True)
    assert roots == [root]
    assert check_path(tmp_path / "alias" / "models" / "m", roots) == root / "models" / "m"


def test_model_refs_check_paths_only(tree, monkeypatch):
    root, outside, _ = tree
    monkeypatch.chdir(outside.parent)
    assert check_model_ref("Qwen/Qwen2.5-VL-3B", [root]) == "Qwen/Qwen2.5-VL-3B"  # a hub id: no file is read here
    assert check_model_ref("my-server-model", [root]) == "my-server-model"
    assert check_model_ref(str(root / "models" / "m"), [root]) == str(root / "models" / "m")
    for ref in (str(outside), "./outside", "outside", "~/x", "../etc"):
        with pytest.raises(AccessDenied):
            check_model_ref(ref, [root])


def test_shared_and_roots():
    local, login = AccessConfig(), AccessConfig(require_login=True)
    assert not is_shared(local, "127.0.0.1") and not is_shared(local, "localhost") and not is_shared(local, "::1")
    assert is_shared(local, "0.0.0.0") and is_shared(local, "") and is_shared(local, None)  # empty: every interface
    assert is_shared(login, "127.0.0.1")
    assert effective_roots(local, "/ws", shared=False) is None
    assert effective_roots(local, "/ws", shared=True) == [Path("/ws").resolve()]
    assert effective_roots(AccessConfig(allowed_roots=["/data", "/models"]), "/ws", shared=False) == [Path("/data"), Path("/models")]


def test_allowed_reviewers():
    allowed = ["Ana@Example.com", "*@team.example", " "]
    assert is_allowed("ana@example.com", allowed) and is_allowed("ANA@EXAMPLE.COM ", allowed)
    assert is_allowed("bo@team.example", allowed)
    assert not is_allowed("bo@team.example.evil", allowed) and not is_allowed("eve@example.com", allowed)
    assert not is_allowed("", allowed) and not is_allowed(None, allowed) and not is_allowed("ana", ["ana"])
    assert not is_allowed("ana@example.com", [])


def test_gate_decisions():
    cfg = AccessConfig(require_login=True, allowed_reviewers=["ana@example.com"])
    assert gate(AccessConfig(), {}).state == "open"
    assert gate(cfg, {}).state == "login" and gate(cfg, {"is_logged_in": False}).state == "login"
    assert gate(cfg, {"is_logged_in": True, "email": "ana@example.com"}).state == "in"
    refused = gate(cfg, {"is_logged_in": True, "email": "eve@example.com", "name": "Ana"})
    assert refused.state == "refused" and "eve@example.com is not on this app's list" in refused.message
    assert gate(cfg, {"is_logged_in": True, "name": "no email"}).state == "refused"


def test_load_access_from_the_workspace_or_the_env(tmp_path, monkeypatch):
    monkeypatch.delenv("LOOPBREAK_CONFIG", raising=False)
    assert load_access(tmp_path) == AccessConfig()
    (tmp_path / "loopbreak.toml").write_text(
        '[access]\nrequire_login = true\nallowed_reviewers = ["ana@example.com"]\nallowed_roots = ["/data"]\n')
    cfg = load_access(tmp_path)
    assert cfg.require_login and cfg.allowed_reviewers == ["ana@example.com"] and cfg.allowed_roots == ["/data"]
    other = tmp_path / "elsewhere.toml"
    other.write_text('[access]\nallowed_reviewers = "bo@example.com"\n')
    monkeypatch.setenv("LOOPBREAK_CONFIG", str(other))
    assert load_access(tmp_path).allowed_reviewers == ["bo@example.com"] and not load_access(tmp_path).require_login
    for bad, msg in (('[access]\nrequire_logn = true\n', "unknown"), ('[access]\nrequire_login = "yes"\n', "true or false"),
                     ('[access]\nallowed_roots = [1]\n', "list of strings"), ('[access\n', "cannot read")):
        other.write_text(bad)
        with pytest.raises(WorkspaceError, match=msg):
            load_access(tmp_path)
    monkeypatch.setenv("LOOPBREAK_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(WorkspaceError, match="does not exist"):
        load_access(tmp_path)


# ---------------------------------------------------------------- the app (AppTest; st.user seeded by AppTest.user)

AUTH = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "test-secret", "client_id": "x",
        "client_secret": "y", "server_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration"}


def shared_app(ws_root: Path, user: dict, page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.secrets["auth"] = AUTH
    at.user = user
    at.session_state["workspace_path"] = str(ws_root)
    at.run()
    if page:
        at.switch_page(page)
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.fixture
def shared_ws(demo_ws, monkeypatch):
    """The demo workspace, started as the app's own (LOOPBREAK_WORKSPACE), with login required for ana only."""
    (demo_ws.root / "loopbreak.toml").write_text('[access]\nrequire_login = true\nallowed_reviewers = ["ana@example.com"]\n')
    monkeypatch.setenv("LOOPBREAK_WORKSPACE", str(demo_ws.root))
    monkeypatch.delenv("LOOPBREAK_CONFIG", raising=False)
    return demo_ws


HAS_AUTHLIB = importlib.util.find_spec("authlib") is not None


def test_a_visitor_who_is_not_logged_in_sees_only_the_login(shared_ws):
    at = shared_app(shared_ws.root, {"is_logged_in": False})
    if HAS_AUTHLIB:
        assert "log in to continue" in at.info[0].value
        assert [b.label for b in at.button] == ["Log in"]
    else:  # st.login cannot work without it: the page says what to install instead of offering a broken button
        assert "needs Authlib" in at.error[0].value and not at.button
    assert not at.metric and not at.dataframe and not at.text_input  # nothing of the workspace


def test_an_unlisted_user_is_refused_on_every_page(shared_ws):
    for page in (None, "views/review.py", "views/data.py"):
        at = shared_app(shared_ws.root, {"is_logged_in": True, "email": "eve@evil.example", "name": "Eve"}, page)
        assert "eve@evil.example is not on this app's list of reviewers" in at.error[0].value.replace("\\", "").replace("\u2060", "")
        assert [b.label for b in at.button] == ["Log out"]
        assert not at.metric and not at.dataframe and not at.text_input


def test_an_allowed_user_reviews_under_the_login_email(shared_ws):
    from tests.review_data import add_review_run

    add_review_run(shared_ws, 2)
    user = {"is_logged_in": True, "email": "ana@example.com", "name": "Ana"}
    at = AppTest.from_file(APP, default_timeout=60)
    at.secrets["auth"] = AUTH
    at.user = user
    at.session_state["workspace_path"] = str(shared_ws.root)
    at.query_params["reviewer"] = "mallory"  # the address cannot override the login
    at.run()
    at.switch_page("views/review.py").run()
    assert not at.exception, [e.value for e in at.exception]
    box = at.text_input(key="reviewer")
    assert box.value == "ana@example.com" and box.disabled
    import json

    data = json.loads(at.get("bidi_component")[0].proto.json)  # the pair pane (a browser component)
    first = data["order"][0]
    at.session_state["lb_review_pane"] = {"outbox": [{"id": "d1", "pair_id": first, "action": "approve", "version": 0}]}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    row = shared_ws.cursor().execute("SELECT reviewer FROM decisions").fetchall()
    assert row == [("ana@example.com",)]


def test_login_required_without_an_auth_section_says_so(shared_ws):
    at = AppTest.from_file(APP, default_timeout=60)
    at.user = {"is_logged_in": False}
    at.run()
    assert not at.exception
    assert "no [auth] section" in at.error[0].value and not at.button


def test_shared_app_refuses_typed_paths_outside_the_roots(demo_ws, tmp_path, monkeypatch):
    """Local by default: no limit. With allowed_roots: the Data page's import path, the Train page's model
    folder and the sidebar's workspace are checked (here without login, roots set explicitly)."""
    import json

    inside, outside = demo_ws.root / "imports", tmp_path / "outside"
    inside.mkdir()
    outside.mkdir()
    for d in (inside, outside):
        (d / "docs.jsonl").write_text(json.dumps({"id": f"{d.name}-1", "text": "FICHA nome:Ana"}) + "\n")
    (inside / "link.jsonl").symlink_to(outside / "docs.jsonl")
    (demo_ws.root / "loopbreak.toml").write_text(f'[access]\nallowed_roots = ["{demo_ws.root}"]\n')
    monkeypatch.setenv("LOOPBREAK_WORKSPACE", str(demo_ws.root))
    monkeypatch.delenv("LOOPBREAK_CONFIG", raising=False)

    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["workspace_path"] = str(demo_ws.root)
    at.run()
    at.switch_page("views/data.py").run()
    label = "…or a path on this machine (a file or a `datasets` folder)"
    for path, ok in ((outside / "docs.jsonl", False), (inside / "../../outside/docs.jsonl", False),
                     (inside / "link.jsonl", False), (inside / "docs.jsonl", True)):
        next(t for t in at.text_input if t.label == label).set_value(str(path))
        next(b for b in at.button if b.label == "Import").click()
        at.run()
        assert not at.exception
        if ok:
            assert any("Imported 1 new items" in s.value for s in at.success)
        else:
            assert any("outside the folders this app may use" in e.value for e in at.error), [e.value for e in at.error]
    items = {r[0] for r in demo_ws.cursor().execute("SELECT item_id FROM items WHERE dataset = 'docs'").fetchall()}
    assert items == {"imports-1"}

    at.switch_page("views/train.py").run()
    next(s for s in at.selectbox if s.label == "Base model").set_value("Other: a local model folder")
    next(t for t in at.text_input if t.label == "Model folder").set_value(str(outside))
    next(b for b in at.button if b.label == "Train").click()
    at.run()
    assert any("outside the folders this app may use" in e.value for e in at.error), [e.value for e in at.error]

    at.session_state["workspace_path"] = str(outside)
    at.switch_page("views/home.py").run()
    assert any("outside the folders this app may use" in e.value for e in at.error)
    assert not (outside / "loopbreak.duckdb").exists()


def test_a_dataset_name_cannot_steer_where_images_are_written(ws, tmp_path):
    """Image bytes land in images/<dataset>/: a typed name like "../../x" or "/abs" must stay inside."""
    from core.steps.importer import ImportFields, import_records, validate

    png = (Path(__file__).resolve().parents[1] / "data").glob("**/*.png")
    data = next(png, None)
    blob = data.read_bytes() if data else b"\x89PNG\r\n\x1a\n"
    for k, name in enumerate(["../../escaped", str(tmp_path / "abs"), "ok-name"]):
        items = validate(iter([(1, {"id": f"i{k}", "text": "t", "image": {"bytes": blob}})]), Path("<t>"), ImportFields(), None)
        import_records(ws, items, name, source="test")
    images = ws.root.resolve() / "images"
    paths = [Path(p) for (p,) in ws.cursor().execute("SELECT image_path FROM items ORDER BY item_id").fetchall()]
    assert all(p.resolve().is_relative_to(images) and p.exists() for p in paths), paths
    assert paths[2].parent.name == "ok-name"
    assert not (tmp_path / "abs").exists() and not (ws.root.parent.parent / "escaped").exists()
