"""Loopbreak's degeneration verdict beside four peer rules, scored on the labelled detection corpus.

Reads every ``tests/data/detect_corpus/*.jsonl`` (lines ``{"id", "kind", "text", "finish_reason",
"loop", "degenerate", "source", "note"}``) and/or ``tests/data/detect_golden.jsonl`` (lines with
``name``, ``class``, ``text``, ``finish_reason``, ``degenerate``), and scores on the ``degenerate``
label: Loopbreak (``core.policy.detect.analyze(text, finish_reason).degenerate``) and the peers of
``bench/peer_detectors.py`` (vLLM n-gram tail, llama.cpp-port exact tail, Nougat repeated tail,
Whisper compression ratio > 2.4). Unreadable lines (a file being written) are skipped and counted.

Run: ``.venv/bin/python bench/bench_detect_corpus.py [--corpus corpus|golden|both] [--json]
[--misses NAME]``. Prints a markdown table (detector | recall | false alarms | precision), then a
per-kind table: recall on each kind's positives, false alarms on its negatives, one column per
detector. ``--misses vllm`` lists the cases that detector got wrong, with the end of each text.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from peer_detectors import PEERS

from core.policy.detect import analyze

CORPUS_DIR = ROOT / "tests" / "data" / "detect_corpus"
GOLDEN = ROOT / "tests" / "data" / "detect_golden.jsonl"


def loopbreak(text: str, finish_reason: str | None) -> bool:
    return bool(analyze(text, finish_reason).degenerate)


DETECTORS = {"loopbreak": loopbreak, **PEERS}


def _read_jsonl(path: Path) -> tuple[list[dict], int]:
    rows, bad = [], 0
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return [], 1
    for line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if not isinstance(row, dict) or not isinstance(row.get("text"), str) or not isinstance(row.get("degenerate"), bool):
            bad += 1
            continue
        rows.append(row)
    return rows, bad


def load(which: str) -> tuple[list[dict], dict]:
    """Cases as ``{"id", "kind", "text", "finish_reason", "degenerate"}`` and where they came from."""
    cases: list[dict] = []
    info: dict = {"files": {}, "skipped_lines": 0}
    sources = []  # (file, the prefix of its ids, the key of a case's id, the key of its kind)
    if which in ("corpus", "both") and CORPUS_DIR.is_dir():
        sources += [(path, path.stem, "id", "kind") for path in sorted(CORPUS_DIR.glob("*.jsonl"))]
    if which in ("golden", "both") and GOLDEN.is_file():
        sources.append((GOLDEN, "golden", "name", "class"))
    for path, prefix, id_key, kind_key in sources:
        rows, bad = _read_jsonl(path)
        info["files"][str(path.relative_to(ROOT))] = len(rows)
        info["skipped_lines"] += bad
        for i, r in enumerate(rows):
            cases.append({"id": f"{prefix}:{r.get(id_key, i)}", "kind": str(r.get(kind_key) or "?"), "text": r["text"],
                          "finish_reason": r.get("finish_reason"), "degenerate": r["degenerate"]})
    return cases, info


def score(cases: list[dict]) -> dict:
    """Each detector's verdict on each case, its totals, and the totals per kind."""
    verdicts: dict[str, list[bool]] = {}
    seconds: dict[str, float] = {}
    errors: dict[str, list[str]] = defaultdict(list)
    for name, fn in DETECTORS.items():
        out = []
        t0 = time.perf_counter()
        for c in cases:
            try:
                out.append(bool(fn(c["text"], c["finish_reason"])))
            except Exception as exc:  # noqa: BLE001 - a detector that crashes on a case counts as not flagging it
                errors[name].append(f"{c['id']}: {type(exc).__name__}: {exc}")
                out.append(False)
        seconds[name] = time.perf_counter() - t0
        verdicts[name] = out

    pos = [i for i, c in enumerate(cases) if c["degenerate"]]
    neg = [i for i, c in enumerate(cases) if not c["degenerate"]]
    totals = {}
    for name, v in verdicts.items():
        found = sum(v[i] for i in pos)
        flagged = sum(v[i] for i in neg)
        totals[name] = {
            "found": found, "positives": len(pos), "recall": found / len(pos) if pos else None,
            "false_alarms": flagged, "negatives": len(neg), "fa_rate": flagged / len(neg) if neg else None,
            "precision": found / (found + flagged) if found + flagged else None,
            "seconds": round(seconds[name], 4), "errors": errors.get(name, []),
        }
    kinds: dict[str, dict] = {}
    for kind in sorted({c["kind"] for c in cases}):
        kp = [i for i in pos if cases[i]["kind"] == kind]
        kn = [i for i in neg if cases[i]["kind"] == kind]
        kinds[kind] = {"positives": len(kp), "negatives": len(kn),
                       "found": {n: sum(v[i] for i in kp) for n, v in verdicts.items()},
                       "false_alarms": {n: sum(v[i] for i in kn) for n, v in verdicts.items()}}
    return {"verdicts": verdicts, "totals": totals, "kinds": kinds}


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def markdown(cases: list[dict], info: dict, result: dict) -> str:
    names = list(DETECTORS)
    n_pos = sum(c["degenerate"] for c in cases)
    lines = [f"{len(cases)} cases ({n_pos} degenerate, {len(cases) - n_pos} not) from "
             + (", ".join(f"{f} ({n})" for f, n in info["files"].items()) or "no files")
             + (f"; {info['skipped_lines']} unreadable lines skipped" if info["skipped_lines"] else ""), ""]
    lines += ["| detector | recall (found / positives) | false alarms (flagged negatives) | precision |",
              "|---|---|---|---|"]
    for name in names:
        t = result["totals"][name]
        err = f" ({len(t['errors'])} errors)" if t["errors"] else ""
        lines.append(f"| {name}{err} | {t['found']}/{t['positives']} ({_pct(t['recall'])}) | "
                     f"{t['false_alarms']}/{t['negatives']} ({_pct(t['fa_rate'])}) | {_pct(t['precision'])} |")
    lines.append("")
    lines.append("time: " + ", ".join(f"{n} {1000 * result['totals'][n]['seconds']:.0f} ms" for n in names))
    lines += ["", "Per kind: positives show found/positives (recall), negatives flagged/negatives (false alarms).", "",
              "| kind | label | n | " + " | ".join(names) + " |", "|---|---|---|" + "---|" * len(names)]
    for kind, k in result["kinds"].items():
        if k["positives"]:
            lines.append(f"| {kind} | degenerate: recall | {k['positives']} | "
                         + " | ".join(f"{k['found'][n]}/{k['positives']}" for n in names) + " |")
        if k["negatives"]:
            lines.append(f"| {kind} | clean: false alarms | {k['negatives']} | "
                         + " | ".join(f"{k['false_alarms'][n]}/{k['negatives']}" for n in names) + " |")
    for name in names:
        for e in result["totals"][name]["errors"][:5]:
            lines.append(f"error {name}: {e}")
    return "\n".join(lines)


def resolve(name: str) -> str:
    if name in DETECTORS:
        return name
    hits = [n for n in DETECTORS if n.startswith(name) or name in n]
    if len(hits) != 1:
        raise SystemExit(f"--misses: unknown or ambiguous detector {name!r}; one of {', '.join(DETECTORS)}")
    return hits[0]


def misses(cases: list[dict], result: dict, name: str) -> str:
    v = result["verdicts"][name]
    out = [f"{name}: missed (degenerate, not flagged) and false alarms (flagged, not degenerate); text tail = last 120 chars", ""]
    for label, want in (("MISSED", True), ("FALSE ALARM", False)):
        bad = [i for i, c in enumerate(cases) if c["degenerate"] is want and v[i] is not want]
        out.append(f"## {label}: {len(bad)}")
        for i in bad:
            c = cases[i]
            tail = json.dumps(c["text"][-120:], ensure_ascii=False)
            out.append(f"- {c['id']} [{c['kind']}, finish={c['finish_reason']}, {len(c['text'])} chars] {tail}")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", choices=("corpus", "golden", "both"), default="corpus",
                    help="tests/data/detect_corpus/*.jsonl, tests/data/detect_golden.jsonl, or both (default corpus)")
    ap.add_argument("--json", action="store_true", help="print the tables as JSON")
    ap.add_argument("--misses", metavar="NAME", help=f"list the cases one detector got wrong ({', '.join(DETECTORS)}; a prefix will do)")
    args = ap.parse_args(argv)

    cases, info = load(args.corpus)
    if not cases:
        print(f"no cases found for --corpus {args.corpus} (looked in {CORPUS_DIR.relative_to(ROOT)}/ and "
              f"{GOLDEN.relative_to(ROOT)})", file=sys.stderr)
        raise SystemExit(1)
    result = score(cases)
    if args.json:
        payload = {"corpus": args.corpus, "cases": len(cases), **info, "totals": result["totals"], "kinds": result["kinds"]}
        if args.misses:
            name = resolve(args.misses)
            v = result["verdicts"][name]
            payload["misses"] = {"detector": name, "cases": [
                {"id": c["id"], "kind": c["kind"], "finish_reason": c["finish_reason"], "degenerate": c["degenerate"],
                 "flagged": v[i], "tail": c["text"][-120:]}
                for i, c in enumerate(cases) if v[i] != c["degenerate"]]}
        print(json.dumps(payload, ensure_ascii=False, indent=2))
        return
    print(markdown(cases, info, result))
    if args.misses:
        print()
        print(misses(cases, result, resolve(args.misses)))


if __name__ == "__main__":
    main()
