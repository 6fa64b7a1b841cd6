"""Import: every format, and every malformed file rejected with file:line and nothing written."""

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.steps.importer import ImportFailed, ImportFields, import_file
from core.store import counts, open_workspace
from core.store.items import get_item

ROWS = [
    {"id": "a", "text": "NOTA FISCAL numero:1", "reference": '{"numero":"1"}', "split": "train", "pages": 1},
    {"id": "b", "text": "FICHA CADASTRAL nome:Ana", "reference": '{"nome":"Ana"}', "split": "test", "pages": 2},
]


def write_jsonl(path, rows, bom=False):
    text = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


def write_csv(path, rows, bom=False):
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + buf.getvalue().encode())
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl-bom", "csv", "csv-bom", "parquet", "json", "hf"])
def test_import_each_format(ws, tmp_path, fmt):
    if fmt.startswith("jsonl"):
        path = write_jsonl(tmp_path / "docs.jsonl", ROWS, bom=fmt.endswith("bom"))
    elif fmt.startswith("csv"):
        path = write_csv(tmp_path / "docs.csv", ROWS, bom=fmt.endswith("bom"))
    elif fmt == "parquet":
        path = tmp_path / "docs.parquet"
        pq.write_table(pa.Table.from_pylist(ROWS), path)
    elif fmt == "json":
        path = tmp_path / "docs.json"
        path.write_text(json.dumps(ROWS))
    else:
        import datasets

        path = tmp_path / "docs_hf"
        datasets.DatasetDict({
            "train": datasets.Dataset.from_list([ROWS[0]]), "test": datasets.Dataset.from_list([ROWS[1]]),
        }).save_to_disk(str(path))
    r = import_file(ws, path, "docs")
    assert (r.new, r.unchanged, r.splits) == (2, 0, {"train": 1, "test": 1})
    item = get_item(ws.cursor(), "docs", "b")
    assert item["text"] == "FICHA CADASTRAL nome:Ana" and item["split"] == "test"
    assert json.loads(item["reference"]) == {"nome": "Ana"}
    assert str(item["metadata"]["pages"]) == "2"
    again = import_file(ws, path, "docs")
    assert (again.new, again.unchanged) == (0, 2)
    assert counts(ws.cursor())["items"] == 2


def test_split_override_object_reference_hash_ids_and_images(ws, tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "p1.png").write_bytes(b"\x89PNG fake")
    path = write_jsonl(tmp_path / "x.jsonl", [
        {"document": "doc one", "gold": {"k": [1, 2]}, "image": "img/p1.png"},
        {"document": "doc two"},
    ])
    fields = ImportFields(text="document", reference="gold")
    r = import_file(ws, path, "mine", split="validation", fields=fields)
    assert r.splits == {"validation": 2}
    rows = ws.cursor().execute("SELECT item_id, reference, image_path FROM items ORDER BY text").fetchall()
    assert rows[0][0].startswith("h") and json.loads(rows[0][1]) == {"k": [1, 2]}
    assert rows[0][2] == str(tmp_path / "img" / "p1.png") and rows[1][1] is None


def _truncated_parquet(path):
    pq.write_table(pa.Table.from_pylist(ROWS * 50), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _parquet_null_text(path):
    pq.write_table(pa.Table.from_pylist([ROWS[0], {**ROWS[1], "text": None}]), path)


# (name, file name, content bytes or a writer, where the error must point, words of the message)
GOOD = json.dumps(ROWS[0])
MALFORMED = [
    ("malformed json", "m.jsonl", f'{GOOD}\n{{"id": "b", "text": \n'.encode(), ":2:", "malformed JSON"),
    ("missing text", "m.jsonl", f'{GOOD}\n{{"id":"b"}}\n'.encode(), ":2:", "missing or empty required field 'text'"),
    ("empty text", "m.jsonl", b'{"id":"a","text":"   "}\n', ":1:", "missing or empty"),
    ("text wrong type", "m.jsonl", f'{GOOD}\n{{"id":"b","text":42}}\n'.encode(), ":2:", "must be a string, found int"),
    ("id wrong type", "m.jsonl", b'{"id":["x"],"text":"t"}\n', ":1:", "field 'id'"),
    ("reference wrong type", "m.jsonl", b'{"id":"a","text":"t","reference":3.5}\n', ":1:", "must be a string, found float"),
    ("not an object", "m.jsonl", f'{GOOD}\n[1, 2]\n'.encode(), ":2:", "expected an object"),
    ("non utf-8", "m.jsonl", GOOD.encode() + b'\n{"id":"b","text":"caf\xe9"}\n', ":2:", "not valid UTF-8"),
    ("duplicate ids", "m.jsonl", f'{GOOD}\n{{"id":"x","text":"t"}}\n{GOOD}\n'.encode(), ":3:", "duplicate id 'a' (first at line 1)"),
    ("empty file", "m.jsonl", b"", "m.jsonl:", "empty file"),
    ("blank lines only", "m.jsonl", b"\n  \n\n", "m.jsonl:", "empty file"),
    ("missing image", "m.jsonl", b'{"id":"a","text":"t","image":"nope.png"}\n', ":1:", "image 'nope.png' not found"),
    ("csv broken quote", "m.csv", b'id,text\na,fine\nb,"unterminated\nc,more\n', ":3:", "broken CSV quoting"),
    ("csv field count", "m.csv", b"id,text\na,one\nb,two,extra\n", ":3:", "expected 2 fields, found 3"),
    ("csv missing text column", "m.csv", b"id,body\na,one\n", ":2:", "missing or empty required field 'text'"),
    ("csv non utf-8", "m.csv", b"id,text\na,ok\nb,\xff\xfe\n", ":3:", "not valid UTF-8"),
    ("csv header only", "m.csv", b"id,text\n", "m.csv:", "empty file"),
    ("json array malformed", "m.json", b'[{"id":"a","text":"t"},\n{"id":', ":2:", "malformed JSON"),
    ("truncated parquet", "m.parquet", _truncated_parquet, "m.parquet:", "truncated or corrupt"),
    ("parquet null text", "m.parquet", _parquet_null_text, "row 2", "missing or empty required field 'text'"),
    ("unknown type", "m.xlsx", b"PK", "m.xlsx:", "unknown file type"),
    ("broken datasets folder", "m_hf", "dir", "m_hf:", "not a readable `datasets` folder"),
]


def _write_case(tmp_path, fname, content):
    path = tmp_path / fname
    if content == "dir":
        path.mkdir()
        (path / "dataset_info.json").write_text("{")
    elif callable(content):
        content(path)
    else:
        path.write_bytes(content)
    return path


@pytest.mark.parametrize("name,fname,content,where,words", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_file_names_the_line_and_imports_nothing(demo_ws, tmp_path, name, fname, content, where, words):
    before = counts(demo_ws.cursor())
    path = _write_case(tmp_path, fname, content)
    with pytest.raises(ImportFailed) as e:
        import_file(demo_ws, path, "docs")
    msg = str(e.value)
    assert str(path) in msg and where in msg and words in msg, msg
    assert "Nothing was imported" in msg
    assert counts(demo_ws.cursor()) == before


def test_same_id_different_content_is_refused_atomically(ws, tmp_path):
    import_file(ws, write_jsonl(tmp_path / "one.jsonl", ROWS), "docs")
    changed = [{"id": "z", "text": "new doc"}, {**ROWS[1], "text": "edited"}]
    with pytest.raises(ImportFailed, match=r"two.jsonl:2: id 'b' already exists .* different content"):
        import_file(ws, write_jsonl(tmp_path / "two.jsonl", changed), "docs")
    assert counts(ws.cursor())["items"] == 2  # 'z' was not imported either


def test_cli_reports_file_and_line_for_each_malformed_file(tmp_path):
    """The real CLI: exit 1, `file:line` on stderr, a JSON error as the last line, no rows written."""
    w = open_workspace(tmp_path / "ws")
    w.close()
    for name, fname, content, where, words in MALFORMED:
        case_dir = tmp_path / name.replace(" ", "_")
        case_dir.mkdir()
        path = _write_case(case_dir, fname, content)
        out = subprocess.run(
            [sys.executable, "-m", "core", "import", str(path), "--workspace", str(w.root), "-d", "docs", "--json"],
            capture_output=True, text=True, timeout=120,
        )
        assert out.returncode == 1, (name, out.stderr)
        assert "Traceback" not in out.stderr, (name, out.stderr)
        assert f"{path}" in out.stderr and where in out.stderr, (name, out.stderr)
        assert words in json.loads(out.stdout.strip().splitlines()[-1])["error"]
    w = open_workspace(tmp_path / "ws")
    assert counts(w.cursor())["items"] == 0
    w.close()


def test_cli_import_json_summary(tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", ROWS)
    cmd = [sys.executable, "-m", "core", "import", str(path), "-w", str(tmp_path / "ws"), "-d", "docs", "--json"]
    first = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
    second = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
    assert (first["new"], first["unchanged"]) == (2, 0)
    assert (second["new"], second["unchanged"]) == (0, 2)
