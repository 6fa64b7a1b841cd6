"""Bad files: malformed imports and export targets that cannot or should not be written. Each gives a clear
error naming the file (and the line where there is one) and leaves nothing partial: no row imported, no
file or temporary left at or beside the target, an existing target untouched. The kinds already covered by
tests/test_import.py (malformed JSON, missing fields, bad CSV quoting, truncated Parquet…) are not repeated."""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.review.agreement import bulk
from core.review.queue import QueueFilter
from core.steps.export import ExportConfig, ExportFailed, export_pairs
from core.steps.importer import ImportFailed, import_file
from core.store import counts, open_workspace
from tests.conftest import ROOT, fill_demo
from tests.review_data import add_review_run


def _symlink_loop(p):
    os.symlink(p.with_name("b.jsonl"), p)
    os.symlink(p, p.with_name("b.jsonl"))


# (name, file name, how to make it, where the error must point, words of the message)
IMPORT_CASES = [
    ("symlink loop", "loop.jsonl", _symlink_loop, "loop.jsonl:", "loops back on itself"),
    ("broken symlink", "gone.jsonl", lambda p: os.symlink(p.with_name("nowhere.jsonl"), p), "gone.jsonl:", "broken symbolic link"),
    ("named pipe", "pipe.jsonl", os.mkfifo, "pipe.jsonl:", "not a regular file"),
    ("a device", "zero.jsonl", lambda p: os.symlink("/dev/zero", p), "zero.jsonl:", "not a regular file"),
    ("missing, no extension", "nofile", lambda p: None, "nofile:", "no such file"),
    ("folder named like a file", "d.csv", lambda p: p.mkdir(), "d.csv:", "not a readable `datasets` folder"),
    ("binary garbage", "g.jsonl", lambda p: p.write_bytes(random.Random(1).randbytes(4000)), "g.jsonl:1:", "not valid UTF-8"),
    ("garbage parquet", "g.parquet", lambda p: p.write_bytes(random.Random(2).randbytes(4000)), "g.parquet:", "not a readable Parquet"),
    ("NUL bytes in CSV", "n.csv", lambda p: p.write_bytes(b"id,text\na,ok\nb,x\x00y\n"), "n.csv:3:", "binary data"),
    ("NUL bytes in JSONL", "n.jsonl", lambda p: p.write_bytes(b'{"text":"a"}\n\x00\x00\x00\n'), "n.jsonl:2:", "binary data"),
    ("UTF-16", "u.jsonl", lambda p: p.write_bytes('{"text":"a"}\n'.encode("utf-16")), "u.jsonl:1:", "UTF-16"),
    ("UTF-16 CSV", "u.csv", lambda p: p.write_bytes("id,text\na,b\n".encode("utf-16")), "u.csv:1:", "UTF-16"),
    ("Latin-1", "l.jsonl", lambda p: p.write_bytes('{"text":"ok"}\n{"text":"café"}\n'.encode("latin-1")), "l.jsonl:2:", "not valid UTF-8"),
    ("BOM in the middle", "bm.jsonl", lambda p: p.write_bytes(b'{"text":"a"}\n\xef\xbb\xbf{"text":"b"}\n'), "bm.jsonl:2:", "BOM"),
    ("BOM only", "b.jsonl", lambda p: p.write_bytes(b"\xef\xbb\xbf"), "b.jsonl:", "empty file"),
    ("one JSON object", "o.json", lambda p: p.write_text(json.dumps({"data": [{"text": "a"}]}, indent=2)), "o.json:1:", "not records"),
    ("a JSON number", "n.json", lambda p: p.write_text("42"), "n.json:1:", "found int"),
    ("mixed types in an array", "m.json", lambda p: p.write_text(json.dumps([{"text": "a"}, "b", 3])), "row 2", "found str"),
    ("mixed id types", "mi.jsonl", lambda p: p.write_text('{"id":1,"text":"a"}\n{"id":"1","text":"b"}\n'), "mi.jsonl:2:", "duplicate id '1'"),
    ("wrong column type in Parquet", "t.parquet", lambda p: pq.write_table(pa.table({"text": [1, 2]}), p), "row 1", "found int"),
    ("zero-row Parquet", "z.parquet", lambda p: pq.write_table(pa.table({"text": pa.array([], pa.string())}), p), "z.parquet:", "empty file"),
    ("huge line cut short", "h.jsonl", lambda p: p.write_text('{"text":"ok"}\n{"text":"' + "x" * 3_000_000), "h.jsonl:2:", "malformed JSON"),
    ("TSV with commas", "c.tsv", lambda p: p.write_text("id,text\na,b\n"), "c.tsv:2:", "missing or empty required field 'text'"),
]


@pytest.mark.parametrize("name,fname,make,where,words", IMPORT_CASES, ids=[c[0] for c in IMPORT_CASES])
def test_bad_import_names_the_file_and_imports_nothing(demo_ws, tmp_path, name, fname, make, where, words):
    before = counts(demo_ws.cursor())
    path = tmp_path / fname
    make(path)
    with pytest.raises(ImportFailed) as e:
        import_file(demo_ws, path, "docs")
    msg = str(e.value)
    assert str(path) in msg and where in msg and words in msg and "Nothing was imported" in msg, msg
    assert counts(demo_ws.cursor()) == before


def test_a_long_document_in_one_csv_field_is_not_an_error(ws, tmp_path):
    path = tmp_path / "long.csv"
    path.write_text("id,text\na," + "palavra " * 40_000 + "\n")  # 320 kB: over csv's default 128 KiB field cap
    assert import_file(ws, path, "docs").new == 1


# ---------------------------------------------------------------- export targets


@pytest.fixture
def approved(demo_ws):
    add_review_run(demo_ws, 6)
    bulk(demo_ws, QueueFilter(run="rs"), "approve", "ana")
    return demo_ws


def _long_name(tmp):
    return tmp / ("x" * 300 + ".jsonl"), {}


def _existing_file(tmp):
    (tmp / "p.jsonl").write_text("precious\n")
    return tmp / "p.jsonl", {}


def _existing_folder(tmp):
    (tmp / "p_hf").mkdir()
    (tmp / "p_hf" / "keep.txt").write_text("precious")
    return tmp / "p_hf", {"format": "hf"}


def _folder_for_a_file(tmp):
    (tmp / "p.jsonl").mkdir()
    return tmp / "p.jsonl", {"overwrite": True}


def _file_for_a_folder(tmp):
    (tmp / "p_hf").write_text("precious")
    return tmp / "p_hf", {"format": "hf", "overwrite": True}


def _parent_is_a_file(tmp):
    (tmp / "f").write_text("precious")
    return tmp / "f" / "p.jsonl", {}


def _pipe(tmp):
    os.mkfifo(tmp / "p.jsonl")
    return tmp / "p.jsonl", {"overwrite": True}


def _loop(tmp):
    os.symlink(tmp / "b.jsonl", tmp / "a.jsonl")
    os.symlink(tmp / "a.jsonl", tmp / "b.jsonl")
    return tmp / "a.jsonl", {"overwrite": True}


def _broken_link(tmp):
    os.symlink(tmp / "nowhere" / "p.jsonl", tmp / "p.jsonl")
    return tmp / "p.jsonl", {}


# (name, make the target -> (path, ExportConfig overrides), words of the message)
EXPORT_CASES = [
    ("existing file", _existing_file, "already there"),
    ("existing hf folder", _existing_folder, "already there"),
    ("a folder where a file goes", _folder_for_a_file, "is a folder"),
    ("a file where the hf folder goes", _file_for_a_folder, "is a file"),
    ("missing folder", lambda tmp: (tmp / "no" / "such" / "p.jsonl", {}), "does not exist"),
    ("parent is a file", _parent_is_a_file, "is not a folder"),
    ("a named pipe, even with overwrite", _pipe, "not a regular file"),
    ("/dev/full, even with overwrite", lambda tmp: (Path("/dev/full"), {"overwrite": True}), "not a regular file"),
    ("symlink loop", _loop, "loops back on itself"),
    ("broken symlink", _broken_link, "broken symbolic link"),
    ("name too long", _long_name, "too long"),
    ("empty path", lambda tmp: (Path(""), {}), "give a file name"),
]


def _snapshot(folder: Path) -> dict:
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_symlink() or not p.exists():
            out[str(p)] = "link"
        elif p.is_file() and not p.is_fifo():
            out[str(p)] = p.read_bytes()
        else:
            out[str(p)] = "dir" if p.is_dir() else "special"
    return out


@pytest.mark.parametrize("name,make,words", EXPORT_CASES, ids=[c[0] for c in EXPORT_CASES])
def test_bad_export_target_is_refused_and_nothing_is_written(approved, tmp_path, name, make, words):
    target_dir = tmp_path / "t"
    target_dir.mkdir()
    out, kw = make(target_dir)
    before = _snapshot(target_dir)
    with pytest.raises(ExportFailed) as e:
        export_pairs(approved, out, ExportConfig(**{"format": "trl", **kw}))
    msg = str(e.value)
    assert msg.startswith(f"{out}:") and words in msg and "Nothing was exported" in msg, msg
    assert _snapshot(target_dir) == before  # nothing partial, nothing replaced, no temporary left


def test_overwrite_replaces_a_file_and_an_hf_folder_whole(approved, tmp_path):
    from datasets import load_from_disk

    d = tmp_path / "out"
    d.mkdir()
    (d / "p.jsonl").write_text("old\n")
    s = export_pairs(approved, d / "p.jsonl", ExportConfig(format="trl", overwrite=True))
    rows = [json.loads(line) for line in (d / "p.jsonl").read_text().splitlines()]
    assert len(rows) == s["pairs"] == 12
    (d / "hf").mkdir()
    (d / "hf" / "stale.txt").write_text("old")
    export_pairs(approved, d / "hf", ExportConfig(format="hf", overwrite=True))
    assert len(load_from_disk(str(d / "hf"))) == 12 and not (d / "hf" / "stale.txt").exists()
    assert sorted(p.name for p in d.iterdir()) == ["hf", "p.jsonl"]  # no temporary, no old copy left


# ---------------------------------------------------------------- the real CLI: permissions and a full disk


def _no_dac_override() -> list[str]:
    """A prefix that makes permission bits bind even for root (CAP_DAC_OVERRIDE dropped); [] for other users."""
    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: permission bits cannot be made to bind")
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}"]


def _cli(args, prefix=(), preexec=None):
    return subprocess.run([*prefix, sys.executable, "-m", "core", *args, "--json"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, preexec_fn=preexec)


@pytest.fixture
def cli_ws(tmp_path):
    w = open_workspace(tmp_path / "ws")
    fill_demo(w)
    add_review_run(w, 6)
    bulk(w, QueueFilter(run="rs"), "approve", "ana")
    w.close()
    return w.root


def _failed(out, path, words):
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    assert f"{path}" in out.stderr and words in out.stderr, out.stderr
    assert words in json.loads(out.stdout.strip().splitlines()[-1])["error"]


def test_cli_export_refuses_an_existing_file_without_overwrite(cli_ws, tmp_path):
    out = tmp_path / "pairs.jsonl"
    out.write_text("precious\n")
    _failed(_cli(["export", "-w", str(cli_ws), "--out", str(out)]), out, "--overwrite")
    assert out.read_text() == "precious\n"
    done = _cli(["export", "-w", str(cli_ws), "--out", str(out), "--overwrite"])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["pairs"] == 12 and len(out.read_text().splitlines()) == 12


def test_cli_export_to_an_unwritable_folder(cli_ws, tmp_path):
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        out = folder / "pairs.jsonl"
        _failed(_cli(["export", "-w", str(cli_ws), "--out", str(out)], prefix=_no_dac_override()), out, "Permission denied")
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def test_cli_import_of_an_unreadable_file(cli_ws, tmp_path):
    path = tmp_path / "secret.jsonl"
    path.write_text('{"text": "a"}\n')
    path.chmod(0o000)
    _failed(_cli(["import", str(path), "-w", str(cli_ws), "-d", "docs"], prefix=_no_dac_override()), path, "Permission denied")


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "hf"])
def test_cli_export_on_a_full_disk_leaves_nothing(cli_ws, tmp_path, fmt):
    """RLIMIT_FSIZE makes every write past 4 KiB of a file fail with EFBIG, as a full disk fails with ENOSPC (Python
    ignores SIGXFSZ, so the write returns the error instead of killing the process). The export is 9–14 kB; the
    store is only read."""
    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))

    folder = tmp_path / "full"
    folder.mkdir()
    out = folder / ("pairs_hf" if fmt == "hf" else f"pairs.{fmt}")
    _failed(_cli(["export", "-w", str(cli_ws), "--format", fmt, "--out", str(out)], preexec=small_disk), out, "File too large")
    assert list(folder.iterdir()) == []
