"""Judges: score candidates on a rubric's named criteria, with an overall score and a rationale.

One interface (``judge(batch) -> judgments``), two judges, chosen by name:

* ``reference`` — offline and deterministic, the demo's default: the DharmaOCR quality score
  ((Levenshtein ratio + BLEU-4)/2 against the reference), field-level accuracy when the output is
  JSON, format validity, and the detector's verdict, mapped onto the rubric's criteria;
* ``llm`` — prompts any model through the sampler backends with the rubric, the document, the
  reference when there is one, and the candidate (cut with a marker when long, so a 10k-character
  loop cannot blow the judge's context), then parses its answer robustly. An answer that cannot be
  read becomes a judgment with an ``error``, never an exception.

Scores are in [0, 1]; ``overall`` is the rubric-weighted mean of the criteria (an LLM's own overall,
when it gives one, is kept in ``scores['judge_overall']``).
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import asdict, dataclass, field

from core.config import option
from core.metrics import levenshtein_ratio, quality

JUDGES = ("reference", "llm")


@dataclass
class Criterion:
    name: str
    description: str
    weight: float = 1.0


DEFAULT_RUBRIC = [
    Criterion("fidelity", "Every transcribed value matches the source document exactly."),
    Criterion("completeness", "Every field and line item of the document is present."),
    Criterion("format", "The output is valid JSON and follows the expected schema."),
    Criterion("no_repetition", "No repeated lines, fields or items, and nothing invented."),
]


@dataclass
class JudgeConfig:
    """A judging run: which judge, which rubric; stored with the run."""

    judge: str = option("reference", "reference (offline, needs references) or llm (a model reads and scores)")
    rubric: list[dict] = field(default_factory=lambda: [asdict(c) for c in DEFAULT_RUBRIC], metadata={"help": "criteria: name, description, weight"})
    judge_model: str | None = option(None, "llm judge: registered model, local path, hub id, or the server's model name")
    backend: str = option("transformers", "llm judge: transformers, vllm or openai")
    base_url: str | None = option(None, "llm judge with the openai backend: server URL")
    max_candidate_chars: int = option(4000, "llm judge: longer candidates are cut in the middle with a marker")
    max_new_tokens: int = option(256, "llm judge: answer length limit")
    retries: int = option(1, "llm judge: new attempts when an answer cannot be parsed")
    batch_size: int = option(16, "candidates per shard: the unit of progress and of resume")


@dataclass
class Judgment:
    candidate_id: str
    scores: dict[str, float]
    overall: float | None
    rationale: str
    judge: str
    error: str | None = None


def rubric_of(cfg: JudgeConfig) -> list[Criterion]:
    crits = [Criterion(**c) for c in cfg.rubric]
    if not crits or len({c.name for c in crits}) != len(crits):
        raise ValueError("a rubric needs at least one criterion and unique names")
    return crits


def weighted(scores: dict[str, float], rubric: list[Criterion]) -> float | None:
    got = [(scores[c.name], c.weight) for c in rubric if scores.get(c.name) is not None]
    total = sum(w for _, w in got)
    return round(sum(s * w for s, w in got) / total, 4) if got and total > 0 else None


# ---------------------------------------------------------------- the reference judge


def _leaves(obj, prefix: str = "") -> dict[str, str]:
    """Flatten JSON to path -> normalised value; list items are matched by position."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(obj, list):
        out = {}
        for i, v in enumerate(obj):
            out.update(_leaves(v, f"{prefix}[{i}]"))
        return out
    return {prefix: " ".join(str(obj).split()).casefold()}


def _parse_json(text: str):
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return None


class ReferenceJudge:
    name = "reference"

    def __init__(self, rubric: list[Criterion]):
        self.rubric = rubric

    def judge_one(self, cand: dict) -> Judgment:
        ref = cand.get("reference")
        if not ref:
            return Judgment(cand["candidate_id"], {}, None, "", self.name, "no reference for this item: use the llm judge")
        text = cand["text"] or ""
        q = quality(text.strip(), ref.strip())
        ref_obj, out_obj = _parse_json(ref), _parse_json(text.strip())
        notes = []
        if ref_obj is not None and isinstance(out_obj, (dict, list)):
            want, got = _leaves(ref_obj), _leaves(out_obj)
            fidelity = sum(got.get(p) == v for p, v in want.items()) / max(1, len(want))
            completeness = sum(p in got for p in want) / max(1, len(want))
            invented = sum(p not in want for p in got) / max(1, len(got))
            same_keys = not isinstance(ref_obj, dict) or set(out_obj) == set(ref_obj) if isinstance(out_obj, dict) else False
            fmt = 1.0 if same_keys else 0.5
            notes.append(f"{sum(got.get(p) == v for p, v in want.items())}/{len(want)} fields exact")
            if invented:
                notes.append(f"{sum(p not in want for p in got)} fields not in the reference")
        else:
            fidelity = levenshtein_ratio(text, ref)
            completeness = min(1.0, len(text) / max(1, len(ref)))
            invented = 0.0
            fmt = 0.0 if ref_obj is not None else 1.0
            if ref_obj is not None:
                notes.append("not valid JSON")
        degenerate, has_loop = bool(cand.get("degenerate")), bool(cand.get("has_loop"))
        no_rep = 0.0 if degenerate else (0.5 if has_loop else 1.0)
        no_rep = max(0.0, no_rep - invented)
        if degenerate:
            notes.append("degenerate: a loop ran to the limit")
        elif has_loop:
            notes.append("a loop inside the output")
        by_name = {"fidelity": fidelity, "completeness": completeness, "format": fmt, "no_repetition": no_rep}
        scores = {c.name: round(by_name.get(c.name, q), 4) for c in self.rubric}
        scores["quality"] = round(q, 4)
        rationale = f"quality {q:.3f}; " + "; ".join(notes) if notes else f"quality {q:.3f}"
        return Judgment(cand["candidate_id"], scores, weighted(scores, self.rubric), rationale, self.name)

    def judge(self, batch: list[dict]) -> list[Judgment]:
        return [self.judge_one(c) for c in batch]


# ---------------------------------------------------------------- the LLM judge


class JudgeParseError(ValueError):
    pass


def cut_middle(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    head, tail = text[: limit * 2 // 3], text[-(limit // 3):]
    return f"{head}\n[… {len(text) - len(head) - len(tail):,} characters cut …]\n{tail}"


def judge_prompt(rubric: list[Criterion], document: str, reference: str | None, candidate: str, limit: int) -> str:
    crits = "\n".join(f"- {c.name}: {c.description}" for c in rubric)
    ref = f"\nREFERENCE TRANSCRIPTION:\n{cut_middle(reference, limit)}\n" if reference else ""
    example = ", ".join(f'"{c.name}": 7' for c in rubric)
    return (
        "You are grading a model's transcription of a document.\n"
        f"Score each criterion from 0 (worst) to 10 (best):\n{crits}\n\n"
        f"DOCUMENT:\n{cut_middle(document, limit)}\n{ref}\n"
        f"CANDIDATE OUTPUT:\n{cut_middle(candidate, limit)}\n\n"
        'Answer with one JSON object and nothing else, e.g. {"scores": {' + example + '}, "overall": 7, '
        '"rationale": "one short sentence"}\nANSWER:'
    )


_NUM = r"(-?\d+(?:[.,]\d+)?)"


def _number(s) -> float | None:
    if isinstance(s, bool):
        return None
    if isinstance(s, (int, float)):
        return float(s)
    if isinstance(s, str):
        m = re.search(_NUM + r"(?:\s*/\s*(\d+))?", s)
        if m:
            v = float(m.group(1).replace(",", "."))
            return v / float(m.group(2)) * 10 if m.group(2) and float(m.group(2)) > 0 else v
    return None


def _json_objects(text: str):
    """Balanced {...} spans in text, outermost first, tolerant of code fences and prose around."""
    depth, start, in_str, esc = 0, None, False, False
    for i, ch in enumerate(text):
        if in_str:
            esc = not esc and ch == "\\"
            if ch == '"' and not esc:
                in_str = False
            elif ch != "\\":
                esc = False
            continue
        if ch == '"':
            in_str = True
        elif ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                yield text[start : i + 1]


def _loads_lenient(s: str):
    for candidate in (s, re.sub(r",\s*([}\]])", r"\1", s), re.sub(r"'", '"', re.sub(r",\s*([}\]])", r"\1", s))):
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    return None


def _scale(values: list[float]) -> float:
    """The scale the judge used, from the largest value seen: 1 (fractions), 10, or 100 (percent).

    "7/10" or "3/5" were already brought to tenths by _number. All-fraction answers on a 0–10
    rubric ("1, 0, 1") are read as fractions: ambiguous, and rare enough to accept.
    """
    top = max(values) if values else 0
    return 1.0 if top <= 1.0 else 10.0 if top <= 10.0 else 100.0


def parse_judge_answer(answer: str, rubric: list[Criterion]) -> tuple[dict[str, float], float | None, str]:
    """(scores in [0, 1], the judge's overall or None, rationale) from a free-form answer.

    Raises JudgeParseError when no criterion score can be found or some are missing.
    """
    if not answer or not answer.strip():
        raise JudgeParseError("empty answer")
    names = {c.name.casefold(): c.name for c in rubric}
    raw: dict[str, float] = {}
    overall, rationale = None, ""
    for blob in _json_objects(answer):
        obj = _loads_lenient(blob)
        if not isinstance(obj, dict):
            continue
        flat = dict(obj)
        if isinstance(obj.get("scores"), dict):
            flat.update(obj["scores"])
        for k, v in flat.items():
            key = str(k).strip().casefold().replace(" ", "_")
            if key in names and _number(v) is not None:
                raw[names[key]] = _number(v)
        if overall is None and _number(obj.get("overall")) is not None:
            overall = _number(obj.get("overall"))
        if not rationale and isinstance(obj.get("rationale"), str):
            rationale = obj["rationale"].strip()
        if raw:
            break
    if not raw:  # no usable JSON: look for "name: 7" or "name = 7/10" in prose
        for c in rubric:
            m = re.search(re.escape(c.name).replace("_", "[ _]") + r"\W{0,5}" + _NUM + r"(?:\s*/\s*(\d+))?", answer, re.I)
            if m:
                v = float(m.group(1).replace(",", "."))
                raw[c.name] = v / float(m.group(2)) * 10 if m.group(2) and float(m.group(2)) > 0 else v
        m = re.search(r"overall\W{0,5}" + _NUM, answer, re.I)
        overall = float(m.group(1).replace(",", ".")) if m and overall is None else overall
        rationale = rationale or answer.strip()[:300]
    if not raw:
        raise JudgeParseError(f"no criterion score found in the answer: {answer.strip()[:120]!r}")
    missing = [c.name for c in rubric if c.name not in raw]
    if missing:
        raise JudgeParseError(f"missing criteria: {', '.join(missing)}")
    if any(v < 0 for v in raw.values()):
        raise JudgeParseError("negative score")
    scale = _scale(list(raw.values()) + ([overall] if overall is not None else []))
    scores = {k: round(min(1.0, v / scale), 4) for k, v in raw.items()}
    return scores, (round(min(1.0, max(0.0, overall / scale)), 4) if overall is not None else None), rationale[:500]


class LLMJudge:
    name = "llm"

    def __init__(self, cfg: JudgeConfig, rubric: list[Criterion], sampler=None):
        from core.sampling import DecodingConfig, SampleConfig, make_sampler

        self.cfg, self.rubric = cfg, rubric
        self.decoding = DecodingConfig(n=0, with_greedy=True, max_new_tokens=cfg.max_new_tokens)
        self.sampler = sampler or make_sampler(
            SampleConfig(model=cfg.judge_model or "", backend=cfg.backend, base_url=cfg.base_url), cfg.judge_model or ""
        )
        self.label = f"llm:{cfg.judge_model}"

    def judge(self, batch: list[dict]) -> list[Judgment]:
        from core.sampling import Request

        prompts = [
            self.sampler.format_prompt(
                judge_prompt(self.rubric, c.get("document") or "", c.get("reference"), c["text"] or "", self.cfg.max_candidate_chars), "auto"
            )
            for c in batch
        ]
        out: list[Judgment | None] = [None] * len(batch)
        errors = [""] * len(batch)
        todo = list(range(len(batch)))
        for _ in range(self.cfg.retries + 1):
            if not todo:
                break
            results = self.sampler.generate([Request(prompts[i], 1, True, 0) for i in todo], self.decoding)
            still = []
            for i, res in zip(todo, results):
                if not isinstance(res, list) or not res:
                    errors[i] = str(res)
                    still.append(i)
                    continue
                try:
                    scores, own, rationale = parse_judge_answer(res[0].text, self.rubric)
                except JudgeParseError as e:
                    errors[i] = f"{e}"
                    still.append(i)
                    continue
                if own is not None:
                    scores["judge_overall"] = own
                out[i] = Judgment(batch[i]["candidate_id"], scores, weighted(scores, self.rubric), rationale, self.label)
            todo = still
        for i in todo:
            out[i] = Judgment(batch[i]["candidate_id"], {}, None, "", self.label, f"judge answer unusable: {errors[i]}")
        return out  # type: ignore[return-value]


def make_judge(cfg: JudgeConfig):
    if cfg.judge not in JUDGES:
        raise ValueError(f"unknown judge {cfg.judge!r}: choose one of {', '.join(JUDGES)}")
    rubric = rubric_of(cfg)
    return ReferenceJudge(rubric) if cfg.judge == "reference" else LLMJudge(cfg, rubric)


# ---------------------------------------------------------------- the job (never opens the database)


def run_judge_job(ctx) -> None:
    import pyarrow.parquet as pq

    from core.store import now

    cfg = JudgeConfig(**ctx.spec["config"])
    cands = pq.read_table(ctx.dir / "candidates.parquet").to_pylist()
    prev = ctx.read_shards("judgments", columns=["candidate_id"])
    done = set(prev.column("candidate_id").to_pylist()) if prev is not None else set()
    todo = [c for c in cands if c["candidate_id"] not in done]
    ctx.progress(len(cands) - len(todo), len(cands), "loading the judge", unit="candidates")
    judge = make_judge(cfg)
    ctx.log(f"{len(todo)} of {len(cands)} candidates to judge with {cfg.judge}")
    finished = len(cands) - len(todo)
    errors = 0
    for start in range(0, len(todo), max(1, cfg.batch_size)):
        batch = todo[start : start + cfg.batch_size]
        rows = []
        for j in judge.judge(batch):
            errors += j.error is not None
            rows.append({
                "judgment_id": f"{ctx.run_id}:{j.candidate_id}", "run_id": ctx.run_id, "candidate_id": j.candidate_id,
                "judge": j.judge, "scores": json.dumps(j.scores), "overall": j.overall, "rationale": j.rationale,
                "error": j.error, "created_at": now(),
            })
        ctx.write_shard("judgments", rows)
        finished += len(batch)
        ctx.progress(finished, len(cands), f"{errors} judge errors" if errors else "", unit="candidates")


# ---------------------------------------------------------------- writer side


def start_judging(ws, sample_run: str, cfg: JudgeConfig, run_id: str | None = None) -> str:
    """Freeze the run's candidates (with their documents and references) into a judge job and launch it."""
    from core import jobs
    from core.store import WorkspaceError, resolve_model

    if cfg.judge not in JUDGES:
        raise WorkspaceError(f"unknown judge {cfg.judge!r}: choose one of {', '.join(JUDGES)}")
    try:
        rubric_of(cfg)
    except (TypeError, ValueError) as e:
        raise WorkspaceError(f"bad rubric: {e}") from None
    cur = ws.cursor()
    if cfg.judge == "llm":
        if not cfg.judge_model:
            raise WorkspaceError("the llm judge needs a judge model")
        if cfg.backend != "openai":
            cfg.judge_model = resolve_model(cur, cfg.judge_model)["path"]
    table = cur.sql(
        """SELECT c.candidate_id, c.text, c.degenerate, c.has_loop, i.text AS document, i.reference
           FROM candidates c JOIN items i USING (dataset, item_id) WHERE c.run_id = ? ORDER BY c.candidate_id""",
        params=[sample_run],
    ).to_arrow_table()
    if table.num_rows == 0:
        raise WorkspaceError(f"run {sample_run!r} has no candidates to judge")
    if cfg.judge == "reference" and table.column("reference").null_count == table.num_rows:
        raise WorkspaceError("these items have no references: use the llm judge")
    dataset = cur.execute("SELECT dataset FROM runs WHERE run_id = ?", [sample_run]).fetchone()
    run_id = jobs.create_job(
        ws, "judge", {"config": asdict(cfg), "source_run": sample_run},
        model=cfg.judge_model or cfg.judge, dataset=dataset[0] if dataset else None, run_id=run_id,
    )
    import pyarrow.parquet as pq

    pq.write_table(table, ws.jobs_dir / run_id / "candidates.parquet")
    jobs.launch(ws, run_id)
    return run_id


def judge_runs_of(ws, sample_run: str) -> list[str]:
    """Judging runs over a sampling run, newest first."""
    rows = ws.cursor().execute(
        "SELECT run_id FROM runs WHERE kind = 'judge' AND json_extract_string(config, '$.source_run') = ? ORDER BY created_at DESC",
        [sample_run],
    ).fetchall()
    return [r[0] for r in rows]


def judgments_frame(ws, judge_run: str, sample: int | None = None):
    """One row per judged candidate: loop flags, overall, each criterion, error (for charts and mining).

    With `sample`, at most that many rows, a fixed random sample: the page's charts are distributions,
    and drawing 800k points (or parsing 800k score objects) took tens of seconds.
    """
    import pandas as pd

    sql = """SELECT j.candidate_id, c.item_id, c.dataset, c.degenerate, c.has_loop, c.finish_reason,
                    j.overall, j.scores, j.rationale, j.error
             FROM judgments j JOIN candidates c USING (candidate_id) WHERE j.run_id = ?"""
    if sample is not None:
        sql = f"SELECT * FROM ({sql}) USING SAMPLE reservoir({int(sample)} ROWS) REPEATABLE (42)"
    df = ws.cursor().execute(f"SELECT * FROM ({sql}) ORDER BY candidate_id", [judge_run]).df()
    scores = pd.json_normalize([json.loads(s) if s else {} for s in df.pop("scores")])
    return pd.concat([df, scores.add_prefix("score_")], axis=1)


_summaries: dict[tuple, dict] = {}


def judge_summary(ws, judge_run: str) -> dict:
    """Counts and mean scores of a judging run, in SQL (800k judgments through pandas took 18 s), kept per
    judgments count: the page reruns it, and judgments are only ever inserted."""
    cur = ws.cursor()
    key = (str(ws.db_path), judge_run, cur.execute("SELECT count(*) FROM judgments").fetchall()[0][0])
    if key not in _summaries:
        if len(_summaries) > 32:
            _summaries.clear()
        _summaries[key] = _judge_summary(cur, judge_run)
    return copy.deepcopy(_summaries[key])


def _judge_summary(cur, judge_run: str) -> dict:
    base = "FROM judgments j JOIN candidates c USING (candidate_id) WHERE j.run_id = ?"
    judged, errors, ok, mean = cur.execute(
        f"SELECT count(*), count(*) FILTER (j.error IS NOT NULL), count(*) FILTER (j.error IS NULL), "
        f"avg(j.overall) FILTER (j.error IS NULL) {base}", [judge_run],
    ).fetchall()[0]
    crit = dict(cur.execute(  # each criterion's mean, in the order the judge wrote them (json_each: names are never paths)
        f"""SELECT je.key, round(avg(TRY_CAST(json_extract_string(je.value, '$') AS DOUBLE)), 4)
            {base.replace("WHERE", ", json_each(j.scores) je WHERE")} AND j.error IS NULL AND j.scores IS NOT NULL
            GROUP BY je.key ORDER BY min(je.id), je.key""", [judge_run],
    ).fetchall())
    by_flag = cur.execute(
        f"SELECT c.degenerate, round(avg(j.overall), 4) {base} AND j.error IS NULL AND c.degenerate IS NOT NULL GROUP BY 1",
        [judge_run],
    ).fetchall()
    return {
        "run_id": judge_run, "judged": judged, "errors": errors,
        "mean_overall": round(float(mean), 4) if ok and mean is not None else None,
        "criteria": crit, "overall_by_degenerate": {str(k).lower(): v for k, v in by_flag},
    }
