"""What every view needs: the open workspace. UI glue only; the logic lives in core/."""

from __future__ import annotations

import argparse
import sys

import streamlit as st

from core.access import AccessConfig, check_base_url, check_model_ref, check_path, effective_roots, gate, is_shared, load_access
from core.config import helps  # noqa: F401  (re-exported for the pages)
from core.present.render import md_escape
from core.store import Workspace, WorkspaceError, open_workspace, resolve_workspace


def default_workspace() -> str:
    """`streamlit run app.py -- --workspace W`, else $LOOPBREAK_WORKSPACE, else ./workspace."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--workspace", "-w")
    known, _ = parser.parse_known_args(sys.argv[1:])
    return str(resolve_workspace(known.workspace))


@st.cache_resource(show_spinner=False)
def _open(path: str) -> Workspace:
    return open_workspace(path)


def workspace() -> Workspace:
    """The workspace chosen in the sidebar; stops the page with a clear error if it cannot be opened
    (or, on a shared app, lies outside the allowed roots)."""
    path = st.session_state.setdefault("workspace_path", default_workspace())
    try:
        if path != default_workspace():
            path = str(check_path(path, allowed_roots(), "workspace"))
        return _open(path)
    except WorkspaceError as e:
        st.error(md_escape(e, 1000), icon=":material/lock:")
        st.stop()


# ---------------------------------------------------------------- access (core/access.py): login and allowed roots


@st.cache_resource(show_spinner=False)
def _access(path: str) -> AccessConfig:
    return load_access(path)


def access() -> AccessConfig:
    """The [access] settings of the workspace the server started on, read once per server process;
    an unreadable file stops every page (a shared app never opens up because of a typo)."""
    try:
        return _access(default_workspace())
    except WorkspaceError as e:
        st.error(md_escape(e, 1000), icon=":material/lock:")
        st.stop()


def allowed_roots():
    """Folders typed paths must stay inside; None when the app is local and no roots are set."""
    cfg = access()
    return effective_roots(cfg, default_workspace(), is_shared(cfg, st.get_option("server.address")))


def checked_path(path: str, what: str = "path") -> str:
    """A typed path, resolved and checked against the allowed roots (AccessDenied, a WorkspaceError, if outside)."""
    return str(check_path(path, allowed_roots(), what))


def checked_model(ref: str, what: str = "model path") -> str:
    """A typed model reference: a path is checked like checked_path; a hub id or a server's model name passes."""
    return check_model_ref(ref, allowed_roots(), what)


def checked_base_url(url: str) -> str:
    """A typed server URL (or several): never a link-local or metadata address; on a shared app, only the
    hosts of allowed_hosts (it makes this server send requests there)."""
    cfg = access()
    return check_base_url(url, cfg.allowed_hosts if is_shared(cfg, st.get_option("server.address")) else None)


def dataframe(data, where=None, **kw):
    """st.dataframe of untrusted cells: zero-width and bidi-control characters shown as codes (as everywhere
    else); returns what st.dataframe returns (the selection event)."""
    from core.present.render import visible_cells

    return (where or st).dataframe(visible_cells(data), **kw)


def show_image(where, path: str, ws) -> None:
    """An item's image; on a shared app only from inside the allowed roots or the workspace (an imported
    file may point its image field anywhere on the server)."""
    from core.access import AccessDenied

    roots = allowed_roots()
    try:
        if roots is not None:
            check_path(path, [*roots, ws.root.resolve()], "image")
        where.image(path)
    except AccessDenied:
        where.caption("image outside the folders this app may read: not shown")
    except Exception:
        where.caption("image not readable")


def candidate_text(ws, cand: dict) -> None:
    """A candidate's text, loops highlighted and folded (escaped); beside it the page the model read,
    when it was sampled from one."""
    from core.images import image_hash
    from core.present.render import render_text_html

    html = render_text_html(cand["text"], cand["loops"])
    if not (cand.get("image_hash") and cand.get("image_path")):
        st.html(html)
        return
    left, right = st.columns([3, 2])
    left.html(html)
    show_image(right, cand["image_path"], ws)
    changed = image_hash(cand["image_path"]) != cand["image_hash"]
    right.caption("The page the model read" + (": **the file has changed since sampling**" if changed else ""))


def login_gate() -> str | None:
    """With require_login: the login email of an allowed visitor; anyone else sees a login button or a
    refusal and the run stops here. Without it: None (the app is open, as on a laptop)."""
    cfg = access()
    try:
        user = st.user.to_dict()
    except Exception:  # no [auth] configured: nobody can be logged in
        user = {}
    g = gate(cfg, user)
    if g.state == "open":
        return None
    if g.state == "in":
        return g.email
    st.title("Loopbreak")
    if g.state == "login":
        try:
            configured = "auth" in st.secrets
        except Exception:  # no secrets.toml at all
            configured = False
        if not configured:
            st.error("This app requires a login (require_login in loopbreak.toml), but .streamlit/secrets.toml has no "
                     "[auth] section: nobody can log in until its owner configures an OIDC provider.", icon=":material/lock:")
            st.stop()
        import importlib.util

        if importlib.util.find_spec("authlib") is None:
            st.error("This app requires a login, but st.login needs Authlib on the server: "
                     "`pip install 'Authlib>=1.3.2'` (or `pip install -e '.[auth]'`), then restart it.", icon=":material/lock:")
            st.stop()
        st.info(g.message, icon=":material/lock:")
        st.button("Log in", type="primary", icon=":material/login:", on_click=st.login, args=(cfg.provider,) if cfg.provider else ())
    else:
        st.error(md_escape(g.message, 500), icon=":material/block:")
        st.button("Log out", icon=":material/logout:", on_click=st.logout)
    st.stop()


def attractor_panel(ws, cand: dict, where: str) -> None:
    """For a candidate with loops: a button that scores its tokens teacher-forced with the model that
    sampled it and plots them with the loop span(s) marked (kept per candidate for later reruns)."""
    from core.present.charts import attractor_figure
    from core.steps.attractor import AttractorError, candidate_attractor, candidate_model, reading

    if not cand.get("loops"):
        return
    results = st.session_state.setdefault("attractor_results", {})
    cid = cand["candidate_id"]
    if cid not in results:
        if not st.button("Attractor: token probabilities", key=f"attractor-{where}-{cid}", icon=":material/trending_up:",
                         help="the probability the model gives each token of its own text: inside a loop it climbs towards 1"):
            return
        info = candidate_model(ws, cand)
        if not info["local"]:  # kept like a result, so a live page's next rerun still shows why
            results[cid] = {"unavailable": info["reason"]}
    if cid not in results:
        with st.spinner(f"Scoring {cand['n_tokens'] or 'the'} tokens with {md_escape(info['name'])}…"):
            try:
                results[cid] = candidate_attractor(ws, cand)
            except AttractorError as e:
                st.warning(md_escape(str(e), 600), icon=":material/warning:")
                return
        while len(results) > 8:  # a few figures kept per session
            results.pop(next(iter(results)))
    result = results[cid]
    if "unavailable" in result:
        st.info(md_escape(result["unavailable"], 600), icon=":material/cloud_off:")
        return
    st.markdown("**Attractor: token probabilities**")
    st.plotly_chart(attractor_figure(result), width="stretch", key=f"attractor-fig-{where}-{cid}")
    st.caption(reading(result) + " " + " ".join(f"Note: {md_escape(n, 400)}." for n in result["notes"]))




def run_progress(run: dict) -> None:
    """A run's progress bar with items/s and ETA, read from its job folder."""
    p = run.get("progress") or {}
    done, total = p.get("done", 0), p.get("total") or 0
    text = f"{done:,}/{total:,} {p.get('unit', 'items')}"
    if run["status"] == "running" and p.get("rate"):
        text += f" · {p['rate']:.2f}/s"
        if p.get("eta_s") is not None:
            text += f" · ETA {int(p['eta_s']) // 60}m{int(p['eta_s']) % 60:02d}s"
    if p.get("message"):
        text += f" · {md_escape(p['message'])}"
    st.progress(min(1.0, done / total) if total else 0.0, text=text)


def active_runs(ws, kind: str) -> bool:
    from core import jobs

    return any(r["status"] in ("queued", "running") for r in jobs.list_runs(ws, kind, limit=20))


def live_runs_panel(ws, kind: str, state_key: str) -> None:
    """The runs panel as a fragment that refreshes every 2 s while a run of this kind is queued or
    running, and reruns the whole page once the last one ends (so its results appear)."""
    active = active_runs(ws, kind)

    def panel():
        runs_panel(ws, kind, state_key)
        if active and not active_runs(ws, kind):
            st.rerun(scope="app")

    st.fragment(panel, run_every=2 if active else None)()


def runs_panel(ws, kind: str, state_key: str) -> None:
    """Runs of one kind with live progress; cancel and resume act on the job folder; Show selects one."""
    from core import jobs

    jobs.sync_runs(ws)
    runs = jobs.list_runs(ws, kind, limit=20)
    if not runs:
        st.info(f"No {kind} runs yet: start one above.")
        return
    st.subheader("Runs")
    for run in runs:
        with st.container(border=True):
            c1, c2 = st.columns([5, 1])
            c1.markdown(f"**{md_escape(run['run_id'])}** · {md_escape(run['model'])} on {md_escape(run['dataset'])}/"
                        f"{md_escape(run['split'] or 'all')} · *{md_escape(run['status'])}*")
            run_progress(run)
            if run["error"]:
                c1.error(md_escape(run["error"], 1000), icon=":material/error:")
            if run["status"] == "running":
                if c2.button("Cancel", key=f"cancel-{run['run_id']}", icon=":material/stop:"):
                    jobs.cancel(ws, run["run_id"])
            elif run["status"] in ("failed", "cancelled"):
                if c2.button("Resume", key=f"resume-{run['run_id']}", icon=":material/replay:"):
                    jobs.launch(ws, run["run_id"])
            if c2.button("Show", key=f"show-{run['run_id']}", icon=":material/visibility:"):
                st.session_state[state_key] = run["run_id"]
                st.rerun(scope="app")
