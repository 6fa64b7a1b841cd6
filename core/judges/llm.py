"""The LLM judge: any model, through a sampler backend, reads the rubric and scores; its answer parsed robustly."""

from __future__ import annotations

import json
import re

from core.judges.base import Criterion, JudgeConfig, Judgment, weighted


class JudgeParseError(ValueError):
    pass


def cut_middle(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    head, tail = text[: limit * 2 // 3], text[-(limit // 3):]
    return f"{head}\n[… {len(text) - len(head) - len(tail):,} characters cut …]\n{tail}"


def judge_prompt(rubric: list[Criterion], document: str, reference: str | None, candidate: str, limit: int,
                 page: bool = False) -> str:
    """The rubric prompt. ``page``: the judge is a vision model shown the page image itself, which is
    the document; the OCR text, when the item has one, follows as a secondary hint."""
    crits = "\n".join(f"- {c.name}: {c.description}" for c in rubric)
    ref = f"\nREFERENCE TRANSCRIPTION:\n{cut_middle(reference, limit)}\n" if reference else ""
    example = ", ".join(f'"{c.name}": 7' for c in rubric)
    if page:
        lead = "You are grading a model's transcription of the document page in the image.\n"
        doc = f"OCR TEXT OF THE PAGE (may contain errors; the image is what counts):\n{cut_middle(document, limit)}\n" if document else ""
    else:
        lead = "You are grading a model's transcription of a document.\n"
        doc = f"DOCUMENT:\n{cut_middle(document, limit)}\n"
    return (
        lead +
        f"Score each criterion from 0 (worst) to 10 (best):\n{crits}\n\n"
        f"{doc}{ref}\n"
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
        from core.samplers import make_sampler
        from core.samplers.base import DecodingConfig

        self.cfg, self.rubric = cfg, rubric
        self.decoding = DecodingConfig(n=0, with_greedy=True, max_new_tokens=cfg.max_new_tokens)
        self.sampler = sampler or make_sampler(cfg.backend, cfg.judge_model or "", model=cfg.judge_model or "",
                                                base_url=cfg.base_url, images=cfg.images, endpoint="auto")
        self.label = f"llm:{cfg.judge_model}"

    def _prompt(self, c: dict):
        """(prompt, page image or None) for one candidate: a judge that reads images sees the page."""
        from core.images import ImageProblem, load_image

        page = None
        if getattr(self.sampler, "vision", False) and self.cfg.images != "off" and c.get("image_path"):
            try:
                page = load_image(c["image_path"])
            except ImageProblem:
                page = None
        if getattr(self.sampler, "vision", False) and page is None and self.sampler.name != "openai" and self.cfg.images != "off":
            return None, None  # a VLM judge without the page has nothing to read
        text = judge_prompt(self.rubric, c.get("document") or "", c.get("reference"), c["text"] or "",
                            self.cfg.max_candidate_chars, page=page is not None)
        if page is not None:
            return self.sampler.format_image_prompt(text, "auto"), page
        return self.sampler.format_prompt(text, "auto"), None

    def judge(self, batch: list[dict]) -> list[Judgment]:
        from core.samplers.base import Request

        inputs = [self._prompt(c) for c in batch]
        out: list[Judgment | None] = [None] * len(batch)
        errors = [""] * len(batch)
        todo = []
        for i, (prompt, _) in enumerate(inputs):
            if prompt is None:
                out[i] = Judgment(batch[i]["candidate_id"], {}, None, "", self.label,
                                  "the judge reads page images and this item's page is missing or unreadable")
            else:
                todo.append(i)
        for _ in range(self.cfg.retries + 1):
            if not todo:
                break
            results = self.sampler.generate([Request(inputs[i][0], 1, True, 0, inputs[i][1]) for i in todo], self.decoding)
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
