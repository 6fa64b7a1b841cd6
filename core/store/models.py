"""Queries of the model registry (`models`): register, resolve, list."""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb

from core.store import WorkspaceError, now, workspace_of, write

STAGES = ("vanilla", "sft", "dpo")


def register_model(
    db,
    *,
    name: str,
    path: str,
    family: str | None = None,
    stage: str | None = None,
    parent: str | None = None,
    config: dict | None = None,
) -> str:
    """Add or update a model in the registry (idempotent by name), through the write door. Returns the name.
    `db` is the workspace, or a cursor on it."""
    if stage is not None and stage not in STAGES and not re.fullmatch(r"(dpo|sft)\d+", stage):
        raise WorkspaceError(f"Unknown stage {stage!r}: use one of {', '.join(STAGES)} "
                             "(or dpo2, dpo3… for later DPO rounds, sft2… for SFT trained further).")
    with write(workspace_of(db)) as cur:
        cur.execute(
            """INSERT INTO models VALUES (?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (name) DO UPDATE SET path = excluded.path, family = excluded.family,
                 stage = excluded.stage, parent = excluded.parent, config = excluded.config""",
            [name, str(path), family, stage, parent, json.dumps(config or {}), now()],
        )
    return name


def get_model(ws, name: str) -> dict | None:
    """A registered model's name, path, family, stage and parent, or None."""
    rows = ws.cursor().execute("SELECT name, path, family, stage, parent FROM models WHERE name = ?", [name]).fetchall()
    return dict(zip(("name", "path", "family", "stage", "parent"), rows[0])) if rows else None


def resolve_model(cur: duckdb.DuckDBPyConnection, model: str, need_local: bool = True) -> dict:
    """A registered name, else a local path, else (when allowed) a hub id: name, path, family, stage."""
    if not model or not model.strip():
        raise WorkspaceError("choose a model: a registered name, a local path, or a hub id")
    row = cur.execute("SELECT name, path, family, stage FROM models WHERE name = ?", [model]).fetchone()
    if row:
        info = dict(zip(("name", "path", "family", "stage"), row))
        if need_local and not Path(info["path"]).exists() and Path(info["path"]).is_absolute():
            raise WorkspaceError(f"model {model!r} is registered at {info['path']}, which does not exist")
        return info
    path = Path(model).expanduser()
    if path.exists():
        if need_local and not (path / "config.json").exists():
            raise WorkspaceError(f"{path} is not a model folder (no config.json)")
        return {"name": model, "path": str(path.resolve()), "family": None, "stage": None}
    if model.startswith(("/", ".", "~")):
        raise WorkspaceError(f"model path {model!r} does not exist")
    return {"name": model, "path": model, "family": None, "stage": None}  # a hub id


def list_models(cur: duckdb.DuckDBPyConnection) -> list[dict]:
    rows = cur.execute(
        "SELECT name, path, family, stage, parent, created_at FROM models ORDER BY family, created_at, name"
    ).fetchall()
    keys = ("name", "path", "family", "stage", "parent", "created_at")
    return [dict(zip(keys, r)) for r in rows]
