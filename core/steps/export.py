"""Export approved pairs for training: TRL's preference format, JSONL, Parquet, a `datasets` folder.

Each row carries ``rejected_cut_at_limit``: the rejected candidate stopped at the token limit (or
was stopped by loop-aware stopping) and never emitted EOS, so a trainer must not append one to it
(DESIGN.md). The standard format keeps the exact prompt string each candidate was sampled from;
the conversational format gives TRL messages instead, for models with a chat template, so TRL
applies the same template itself.

Pairs sampled from a page image (their candidates record its hash) carry TRL's vision column
``images``: a list with the page's path in JSONL, the embedded image in Parquet and ``datasets``
folders; the conversational prompt then has an image part before the instruction. A page whose file
changed since it was sampled is left out, counted in the summary: it is no longer what the model saw.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path

from core.config import option
from core.policy.prompts import DEFAULT_INSTRUCTION, build_prompt
from core.store import WorkspaceError
from core.store import pairs as store_pairs

FORMATS = ("trl", "jsonl", "parquet", "hf")
CUT_REASONS = ("length", "repetition")
TRL_COLUMNS = ("prompt", "chosen", "rejected", "rejected_cut_at_limit")
VISION_COLUMNS = ("images",)


@dataclass
class ExportConfig:
    """What to export and how."""

    format: str = option("trl", "trl (prompt/chosen/rejected JSONL), jsonl or parquet (every column), hf (a datasets folder)")
    run: str | None = option(None, "only the approved pairs of this sampling run, or of the judging run that scored it (None: all runs)")
    style: str = option("standard", "standard (the exact sampled prompt string) or conversational (messages; needs a chat template)")
    hub_repo: str | None = option(None, "hf format: also push_to_hub to this repo when a Hugging Face token is set")
    overwrite: bool = option(False, "replace a file or folder already at the output path (otherwise that is an error)")


def approved_rows(ws, run: str | None = None) -> list[dict]:
    """The approved pairs with what training needs, in pair order. Keys starting with ``_`` are for the
    conversational form only (the document, the instruction it was sampled with, the model's path)."""
    from core.images import image_hash

    out = []
    from core.store.runs import pairs_run

    for d in store_pairs.approved(ws, pairs_run(ws, run)):
        d["rejected_cut_at_limit"] = d["rejected_finish_reason"] in CUT_REASONS
        for k in ("document", "instruction", "model_path"):
            d[f"_{k}"] = d.pop(k)
        sampled_from_page = bool(d.get("image_hash"))
        d["images"] = [d["image_path"]] if sampled_from_page and d.get("image_path") else None
        d["_image_changed"] = sampled_from_page and image_hash(d.get("image_path")) != d["image_hash"]
        out.append(d)
    return out


def vision_rows(rows: list[dict]) -> tuple[list[dict], int]:
    """(rows whose page is still what was sampled, how many were left out because their page file changed)."""
    kept = [r for r in rows if not r.get("_image_changed")]
    return kept, len(rows) - len(kept)


def has_chat_template(model_path: str | None) -> bool | None:
    """Whether a local model folder's tokenizer has a chat template; None when it cannot be told (hub id)."""
    if not model_path or not Path(model_path).is_dir():
        return None
    p = Path(model_path)
    if (p / "chat_template.jinja").exists() or (p / "chat_template.json").exists():
        return True
    try:
        return bool(json.loads((p / "tokenizer_config.json").read_text()).get("chat_template"))
    except (OSError, ValueError):
        return False


def _conversational(row: dict) -> dict:
    # the instruction the run was sampled with (runs.instruction): a custom one must reach training unchanged
    instruction = row["_instruction"] or DEFAULT_INSTRUCTION
    if row.get("images"):  # TRL's vision conversational format: the page, then the instruction
        user = [{"type": "image"}, {"type": "text", "text": instruction.strip()}]
    else:
        user = build_prompt(row["_document"] or "", instruction)
    return {
        "prompt": [{"role": "user", "content": user}],
        "chosen": [{"role": "assistant", "content": row["chosen"].strip()}],
        "rejected": [{"role": "assistant", "content": row["rejected"].strip()}],
    }


class ExportFailed(WorkspaceError):
    """An export target that cannot be written; nothing was left at it."""

    def __init__(self, out: Path | str, message: str):
        self.path = str(out)
        super().__init__(f"{out}: {message}. Nothing was exported.")


def _stat(path: Path, follow: bool = True) -> os.stat_result | None:
    """stat, or None when nothing is there; a symlink loop or an unreadable path is an ExportFailed."""
    try:
        return path.stat() if follow else path.lstat()
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ExportFailed(path, "a symbolic link that loops back on itself") from None
        if e.errno == errno.ENOTDIR:
            raise ExportFailed(path, "a part of this path is a file, not a folder") from None
        raise ExportFailed(path, f"cannot be checked ({e.strerror or e})") from None


def check_target(out: Path, fmt: str, overwrite: bool = False) -> None:
    """Refuse a target that cannot or should not be written, before anything is: a missing folder, a file
    in the way of a folder (or the reverse), a device or a pipe, or anything already there without `overwrite`."""
    if not str(out).strip() or out.name in ("", ".", ".."):
        raise ExportFailed(out, "give a file name (or a folder name for the hf format)")
    parent = out.parent
    pst = _stat(parent)
    if pst is None:
        raise ExportFailed(out, f"the folder {parent} does not exist: create it first")
    if not stat.S_ISDIR(pst.st_mode):
        raise ExportFailed(out, f"{parent} is not a folder")
    st = _stat(out)
    if st is None:
        if out.is_symlink():
            raise ExportFailed(out, f"a broken symbolic link (to {os.readlink(out)})")
        return
    kind = "folder" if stat.S_ISDIR(st.st_mode) else "file" if stat.S_ISREG(st.st_mode) else None
    if kind is None:
        raise ExportFailed(out, "not a regular file (a device, a pipe or a socket): export to a file")
    if kind == "folder" and fmt != "hf":
        raise ExportFailed(out, f"is a folder: the {fmt} format writes a file; give a file name")
    if kind == "file" and fmt == "hf":
        raise ExportFailed(out, "is a file: the hf format writes a folder")
    if not overwrite:
        raise ExportFailed(out, f"a {kind} is already there: choose another name, or overwrite it (--overwrite)")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _write_atomically(out: Path, write) -> None:
    """`write(tmp)` into a temporary name beside `out`, then rename it into place: a failed or interrupted
    export (disk full, no permission, a kill) leaves no partial file, and an overwritten one stays whole until then."""
    tmp = out.with_name(f".{uuid.uuid4().hex[:12]}.loopbreak-export.tmp")
    old = None
    try:
        write(tmp)
        if tmp.is_dir() and out.is_dir():  # a folder cannot be renamed over a folder: move the old one aside first
            old = out.with_name(f".{uuid.uuid4().hex[:12]}.loopbreak-export.old")
            os.replace(out, old)
        os.replace(tmp, out)
    except BaseException as e:
        _remove(tmp)
        if old is not None and not out.exists():
            os.replace(old, out)
            old = None
        if isinstance(e, OSError):  # disk full, file too large, permission denied… (pyarrow's IO errors are OSErrors too)
            raise ExportFailed(out, f"cannot be written ({e.strerror or e})") from None
        raise
    if old is not None:
        _remove(old)


def export_pairs(ws, out: str | os.PathLike, cfg: ExportConfig) -> dict:
    """Write the approved pairs to `out` in the chosen format; returns a summary. All or nothing (see check_target)."""
    if cfg.format not in FORMATS:
        raise WorkspaceError(f"unknown export format {cfg.format!r}: use one of {', '.join(FORMATS)}")
    if cfg.style not in ("standard", "conversational"):
        raise WorkspaceError("style is standard or conversational")
    out = Path(out).expanduser()
    check_target(out, cfg.format, cfg.overwrite)
    rows, changed = vision_rows(approved_rows(ws, cfg.run))
    if not rows:
        why = f" ({changed} left out: their page image changed since sampling)" if changed else ""
        raise WorkspaceError("no approved pairs to export" + (f" in run {cfg.run}" if cfg.run else "") + why + ": approve some on the Review page")
    if cfg.style == "conversational":
        for model, path in {(r["model"], r["_model_path"] or r["model"]) for r in rows}:
            if has_chat_template(path) is False:
                raise WorkspaceError(f"model {model!r} has no chat template: export in the standard style")
        for r in rows:
            r.update(_conversational(r))
    vision = any(r.get("images") for r in rows)
    columns = TRL_COLUMNS + (VISION_COLUMNS if vision else ()) if cfg.format == "trl" else \
        tuple(k for k in rows[0] if not k.startswith("_") and (vision or k != "images"))
    records = [{k: r[k] for k in columns} for r in rows]
    pushed = None
    if cfg.format in ("trl", "jsonl"):
        def write(tmp: Path) -> None:
            with tmp.open("w", encoding="utf-8") as f:
                for rec in records:
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")

        _write_atomically(out, write)
    else:
        from datasets import Dataset

        ds = Dataset.from_list(records)
        if vision:  # the pages themselves go into the file, so it trains anywhere
            from datasets import Image, Sequence
            from datasets.table import embed_table_storage

            ds = ds.cast_column("images", Sequence(Image()))
            ds = ds.with_format("arrow").map(embed_table_storage, batched=True).with_format(None)
        if cfg.format == "parquet":
            _write_atomically(out, lambda tmp: ds.to_parquet(str(tmp)))
        else:
            _write_atomically(out, lambda tmp: ds.save_to_disk(str(tmp)))
            if cfg.hub_repo:
                from huggingface_hub import get_token

                if not get_token():
                    raise WorkspaceError("no Hugging Face token (HF_TOKEN or `hf auth login`): saved to disk, not pushed")
                ds.push_to_hub(cfg.hub_repo, private=True)
                pushed = cfg.hub_repo
    return {
        "out": str(out.resolve()), "format": cfg.format, "style": cfg.style, "run": cfg.run, "pairs": len(records),
        "rejected_cut_at_limit": sum(r["rejected_cut_at_limit"] for r in rows), "pushed_to": pushed,
        "images": vision, "left_out_changed_images": changed,
    }
