"""The judge role: a rubric of named criteria, a judgment per candidate, the run's config."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Protocol

from core.config import option


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
    base_url: str | None = option(None, "llm judge with the openai backend: server URL(s), comma-separated")
    images: str = option("auto", "llm judge: show it the page image — auto (when the judge model reads images), on, off")
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


class Judge(Protocol):
    """What every judge offers: a name, and one judgment per candidate of a batch (errors recorded, never raised)."""

    name: str

    def judge(self, batch: list[dict]) -> list[Judgment]:
        """Each candidate dict has candidate_id, text, degenerate, has_loop, document and reference."""
        ...
