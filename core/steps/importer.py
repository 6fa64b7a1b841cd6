"""Import documents as items: JSONL, JSON arrays, CSV, Parquet and `datasets` folders.

Import is all or nothing. Every row of the file is read and validated before anything is
written; the first problem raises :class:`ImportFailed` naming the file and the line (or row), and
the store is untouched. Valid rows are then inserted in one transaction. Re-importing the same
file changes nothing: rows whose id already exists with the same content are counted as
unchanged, while an existing id with different content is an error (never a silent overwrite).
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import re
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa

from core.store import Workspace, WorkspaceError
from core.store import items as store_items

FORMATS = ("jsonl", "json", "csv", "parquet", "hf")


@dataclass
class ImportFields:
    """Which column of the file plays which role."""

    text: str = field(default="text", metadata={"help": "Column with the document (the model's input). Required."})
    reference: str = field(default="reference", metadata={"help": "Column with the reference transcription. Optional; objects are stored as JSON."})
    id: str = field(default="id", metadata={"help": "Column with a unique item id. When the file has none, ids are hashes of the text."})
    image: str = field(default="image", metadata={"help": "Column with an image path (relative to the file) or image bytes. Optional."})
    split: str = field(default="split", metadata={"help": "Column with the split name, used when no split is given."})


class ImportFailed(WorkspaceError):
    """A file that cannot be imported; `where` is 'file:line' or 'file: row n'."""

    def __init__(self, path: Path | str, line: int | None, message: str, unit: str = "line"):
        self.path, self.line, self.reason = str(path), line, message
        where = f"{path}:{line}" if unit == "line" and line else (f"{path}: {unit} {line}" if line else str(path))
        super().__init__(f"{where}: {message}. Nothing was imported.")


@dataclass
class ImportResult:
    dataset: str
    source: str
    rows: int
    new: int
    unchanged: int
    splits: dict[str, int]

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def detect_format(path: Path) -> str:
    if path.is_dir():
        return "hf"
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".json":
        return "json"
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise ImportFailed(path, None, f"unknown file type {suffix or '(none)'}: use .jsonl, .json, .csv, .parquet or a `datasets` folder")


def check_source(path: Path) -> None:
    """A file or folder that can be read, or ImportFailed saying why (never a read that blocks: a FIFO, a device)."""
    try:
        st = path.stat()
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ImportFailed(path, None, "a symbolic link that loops back on itself") from None
        if e.errno == errno.ENOENT:
            target = f" (a broken symbolic link to {path.readlink()})" if path.is_symlink() else ""
            raise ImportFailed(path, None, f"no such file{target}") from None
        raise ImportFailed(path, None, f"cannot be read ({e.strerror or e})") from None
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        raise ImportFailed(path, None, "not a regular file (a device, a pipe or a socket): import a file or a `datasets` folder")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ImportFailed(path, None, f"cannot be read ({e.strerror or e})") from None


def _not_utf8(path: Path, raw: bytes, line: int, detail: str = "") -> ImportFailed:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return ImportFailed(path, 1, "the file is UTF-16 (it starts with a UTF-16 byte-order mark): save it as UTF-8")
    return ImportFailed(path, line, f"not valid UTF-8{detail}")


def _binary(path: Path, line: int) -> ImportFailed:
    return ImportFailed(path, line, "binary data (a NUL byte): not a text file")


# Each reader yields (position, record); position is a 1-based line (text formats) or row number.


def _read_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    raw = _read_bytes(path)
    for n, line in enumerate(raw.split(b"\n"), start=1):
        if n == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise _not_utf8(path, raw, n, f" (byte {e.start + 1} of the line)") from None
        if "\x00" in text:
            raise _binary(path, n)
        if not text.strip():
            continue
        try:
            yield n, json.loads(text)
        except json.JSONDecodeError as e:
            raise ImportFailed(path, n, f"malformed JSON ({e.msg} at column {e.colno})") from None


def _decode(path: Path) -> str:
    raw = _read_bytes(path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise _not_utf8(path, raw, raw[: e.start].count(b"\n") + 1) from None
    if "\x00" in text:
        raise _binary(path, text[: text.index("\x00")].count("\n") + 1)
    return text


def _read_json_array(path: Path) -> Iterator[tuple[int, Any]]:
    text = _decode(path)
    if not text.lstrip().startswith("["):
        try:
            whole = json.loads(text)
        except json.JSONDecodeError:
            whole = None  # JSON Lines in a .json file, or malformed: the line-by-line reader says where
        if isinstance(whole, dict) and "\n" in text.strip():
            keys = ", ".join(map(repr, list(whole)[:5]))
            raise ImportFailed(path, 1, f"one JSON object (keys {keys}), not records: use a JSON array of objects, or one object per line")
        if whole is not None and not isinstance(whole, dict):
            raise ImportFailed(path, 1, f"expected a JSON array of objects, found {type(whole).__name__}")
        yield from _read_jsonl(path)
        return
    try:
        records = json.loads(text)
    except json.JSONDecodeError as e:
        raise ImportFailed(path, e.lineno, f"malformed JSON ({e.msg} at column {e.colno})") from None
    # A JSON array has no per-record lines: report records by position.
    yield from ((-i, r) for i, r in enumerate(records, start=1))


def _read_csv(path: Path) -> Iterator[tuple[int, Any]]:
    text = _decode(path)
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))  # a long document is one field; 128 KiB is the default cap
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    header, start = None, 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise ImportFailed(path, start, f"broken CSV quoting ({e})") from None
        line, start = start, reader.line_num + 1
        if header is None:
            header = row
            if len(set(header)) != len(header):
                raise ImportFailed(path, line, "duplicate column names in the header")
            continue
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise ImportFailed(path, line, f"expected {len(header)} fields, found {len(row)}")
        yield line, {k: (v if v != "" else None) for k, v in zip(header, row)}


def _read_parquet(path: Path) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise ImportFailed(path, None, f"not a readable Parquet file, truncated or corrupt ({e})") from None
    yield from ((-i, r) for i, r in enumerate(table.to_pylist(), start=1))


def _read_hf(path: Path, split: str | None) -> Iterator[tuple[int, Any]]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:  # datasets raises several types for a missing or broken folder
        raise ImportFailed(path, None, f"not a readable `datasets` folder ({e})") from None
    parts = ds.items() if isinstance(ds, datasets.DatasetDict) else [(None, ds)]
    row = 0
    for part_split, part in parts:
        for record in part:
            row += 1
            if part_split is not None and not split:
                record = {**record, "__split__": part_split}
            yield -row, record


def read_records(path: Path, fmt: str | None = None, split: str | None = None) -> Iterator[tuple[int, Any]]:
    check_source(path)
    fmt = fmt or detect_format(path)
    if fmt == "hf" and not path.is_dir():
        raise ImportFailed(path, None, "not a folder: a `datasets` folder (save_to_disk) is expected")
    if fmt != "hf" and path.is_dir():
        raise ImportFailed(path, None, f"a folder, not a {fmt} file")
    readers = {"jsonl": _read_jsonl, "json": _read_json_array, "csv": _read_csv, "parquet": _read_parquet}
    return _read_hf(path, split) if fmt == "hf" else readers[fmt](path)


def _as_text(value: Any, what: str, required: bool, fail) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            fail(f"missing or empty required field {what!r}")
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)) and what != "text":
        return json.dumps(value, ensure_ascii=False)
    fail(f"field {what!r} must be a string, found {type(value).__name__}")


def validate(
    rows: Iterator[tuple[int, Any]], path: Path, fields: ImportFields, split: str | None
) -> list[dict]:
    """Turn raw records into item rows, or raise ImportFailed at the first bad one."""
    items, seen = [], {}
    for pos, rec in rows:
        unit, where = ("line", pos) if pos > 0 else ("row", -pos)

        def fail(msg: str) -> None:
            raise ImportFailed(path, where, msg, unit)

        if not isinstance(rec, dict):
            fail(f"expected an object with a {fields.text!r} field, found {type(rec).__name__}")
        text = _as_text(rec.get(fields.text), fields.text, True, fail)
        reference = _as_text(rec.get(fields.reference), fields.reference, False, fail)
        raw_id = rec.get(fields.id)
        if raw_id is None:
            item_id = "h" + hashlib.sha1(text.encode()).hexdigest()[:12]
        elif isinstance(raw_id, (str, int)) and not isinstance(raw_id, bool) and str(raw_id).strip():
            item_id = str(raw_id).strip()
        else:
            fail(f"field {fields.id!r} must be a non-empty string or integer")
        if item_id in seen:
            fail(f"duplicate id {item_id!r} (first at {seen[item_id]})")
        seen[item_id] = f"{unit} {where}"
        item_split = split or rec.get("__split__") or rec.get(fields.split) or "train"
        if not isinstance(item_split, str):
            fail(f"field {fields.split!r} must be a string")
        image = rec.get(fields.image)
        if isinstance(image, str):
            image_path = (path.parent / image).resolve() if not Path(image).is_absolute() else Path(image)
            if not image_path.is_file():
                fail(f"image {image!r} not found")
            image = str(image_path)
        elif image is not None and not (isinstance(image, dict) and image.get("bytes")) and not hasattr(image, "save"):
            fail(f"field {fields.image!r} must be a path or image bytes")
        roles = {fields.text, fields.reference, fields.id, fields.image, fields.split, "__split__"}
        metadata = {k: v for k, v in rec.items() if k not in roles}
        items.append(
            {"item_id": item_id, "split": item_split, "text": text, "reference": reference, "image": image,
             "metadata": json.dumps(metadata, ensure_ascii=False, default=str), "where": (unit, where)}
        )
    if not items:
        raise ImportFailed(path, None, "empty file: no records")
    return items


def _folder_name(dataset: str) -> str:
    """A dataset name as one safe folder name: a name such as "../x" or "/etc" stays inside images/."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", dataset).strip("._")[:60] or "dataset"
    return slug if slug == dataset else f"{slug}-{hashlib.sha1(dataset.encode()).hexdigest()[:8]}"


def _save_images(items: list[dict], ws: Workspace, dataset: str) -> list[Path]:
    """Write in-file images (bytes or PIL) under images/<dataset>/ and point the rows at them."""
    written = []
    for it in items:
        img = it.pop("image")
        if img is None or isinstance(img, str):
            it["image_path"] = img
            continue
        target = ws.images_dir / _folder_name(dataset) / f"{hashlib.sha1(it['item_id'].encode()).hexdigest()[:16]}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        if hasattr(img, "save"):
            img.save(target)
        else:
            target.write_bytes(img["bytes"])
        written.append(target)
        it["image_path"] = str(target)
    return written


def import_records(
    ws: Workspace, items: list[dict], dataset: str, source: str, path_for_errors: Path | str = "<records>"
) -> ImportResult:
    """Insert validated item rows in one transaction; existing identical rows are left as they are."""
    if not dataset or not dataset.strip():
        raise ImportFailed(path_for_errors, None, "a dataset name is required")
    written = _save_images(items, ws, dataset)
    existing = store_items.existing_items(ws, dataset, [it["item_id"] for it in items])
    new = []
    for i, it in enumerate(items, start=1):
        unit, where = it.get("where", ("record", i))
        old = existing.get(it["item_id"])
        if old is None:
            new.append(it)
        elif old != (it["split"], it["text"], it["reference"]):
            for p in written:
                p.unlink(missing_ok=True)
            raise ImportFailed(
                path_for_errors, where,
                f"id {it['item_id']!r} already exists in dataset {dataset!r} with different content "
                "(use new ids or another dataset name)", unit,
            )
    if new:
        table = pa.Table.from_pylist(
            [{**{k: it[k] for k in ("item_id", "split", "text", "reference", "image_path", "metadata")},
              "dataset": dataset, "source": source} for it in new]
        )
        try:
            store_items.insert_items(ws, table)
        except Exception:
            for p in written:
                p.unlink(missing_ok=True)
            raise
    splits: dict[str, int] = {}
    for it in items:
        splits[it["split"]] = splits.get(it["split"], 0) + 1
    return ImportResult(dataset, source, len(items), len(new), len(items) - len(new), splits)


def import_file(
    ws: Workspace,
    path: str | Path,
    dataset: str,
    split: str | None = None,
    fields: ImportFields | None = None,
    fmt: str | None = None,
) -> ImportResult:
    """Validate the whole file, then import it atomically. Raises ImportFailed naming file and line."""
    path = Path(path)
    fields = fields or ImportFields()
    items = validate(read_records(path, fmt, split), path, fields, split)
    return import_records(ws, items, dataset, source=str(path.resolve()), path_for_errors=path)


def save_upload(ws: Workspace, name: str, data: bytes) -> Path:
    """Keep an uploaded file under exports/uploads/ so the import reads a real path (and can be redone)."""
    target = ws.exports_dir / "uploads" / Path(name).name
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_bytes(data)
    shutil.move(tmp, target)
    return target
