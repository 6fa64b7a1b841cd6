"""What every view needs: the open workspace. UI glue only; the logic lives in core/."""

from __future__ import annotations

import argparse
import sys

import streamlit as st

from core.config import helps  # noqa: F401  (re-exported for the pages)
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
    """The workspace chosen in the sidebar; stops the page with a clear error if it cannot be opened."""
    path = st.session_state.setdefault("workspace_path", default_workspace())
    try:
        return _open(path)
    except WorkspaceError as e:
        st.error(str(e), icon=":material/lock:")
        st.stop()




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
        text += f" · {p['message']}"
    st.progress(min(1.0, done / total) if total else 0.0, text=text)


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
            c1.markdown(f"**{run['run_id']}** · `{run['model']}` on {run['dataset']}/{run['split'] or 'all'} · *{run['status']}*")
            run_progress(run)
            if run["error"]:
                c1.error(run["error"], icon=":material/error:")
            if run["status"] == "running":
                if c2.button("Cancel", key=f"cancel-{run['run_id']}", icon=":material/stop:"):
                    jobs.cancel(ws, run["run_id"])
            elif run["status"] in ("failed", "cancelled"):
                if c2.button("Resume", key=f"resume-{run['run_id']}", icon=":material/replay:"):
                    jobs.launch(ws, run["run_id"])
            if c2.button("Show", key=f"show-{run['run_id']}", icon=":material/visibility:"):
                st.session_state[state_key] = run["run_id"]
                st.rerun(scope="app")
