"""The OpenAI-compatible backend: any `/v1/completions` server (`vllm serve` fleets, hosted APIs)."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

from core.samplers.base import DecodingConfig, Generation, ItemSkipped, Request, SamplerError


class OpenAISampler:
    name = "openai"

    def __init__(self, model: str, base_url: str | None, api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 8, timeout_s: float = 120.0, retries: int = 3):
        import requests

        if not base_url:
            raise SamplerError("the openai backend needs a base URL (e.g. http://127.0.0.1:8000)")
        self.url = base_url.rstrip("/") + ("/completions" if base_url.rstrip("/").endswith("/v1") else "/v1/completions")
        self.model, self.concurrency, self.timeout_s, self.retries = model, concurrency, timeout_s, retries
        self.session = requests.Session()
        key = os.environ.get(api_key_env)
        if key:
            self.session.headers["Authorization"] = f"Bearer {key}"

    def format_prompt(self, prompt: str, chat_template: str) -> str:
        return prompt  # the completions endpoint takes the prompt as the model was fine-tuned on it

    def _post(self, req: Request, decoding: DecodingConfig) -> list[Generation] | ItemSkipped:
        import requests

        body = {
            "model": self.model, "prompt": req.prompt, "n": req.n, "max_tokens": decoding.max_new_tokens,
            "temperature": 0.0 if req.greedy else decoding.temperature,
            "top_p": 1.0 if req.greedy else decoding.top_p, "seed": req.seed,
        }
        if decoding.top_k > 0 and not req.greedy:
            body["top_k"] = decoding.top_k
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(0.5 * 2 ** (attempt - 1), 8.0))
            t0 = time.perf_counter()
            try:
                r = self.session.post(self.url, json=body, timeout=self.timeout_s)
            except requests.ConnectionError as e:
                last = f"cannot reach {self.url} ({type(e).__name__})"
                continue
            except requests.Timeout:
                last = f"no answer from {self.url} within {self.timeout_s:g} s"
                continue
            if r.status_code >= 500 or r.status_code == 429:
                last = f"{self.url} answered {r.status_code}: {r.text[:200]}"
                continue
            if r.status_code >= 400:
                return ItemSkipped(f"{self.url} refused the request ({r.status_code}): {r.text[:300]}")
            latency = time.perf_counter() - t0
            try:
                choices = sorted(r.json()["choices"], key=lambda c: c.get("index", 0))
                return [
                    Generation(c["text"], int((c.get("usage") or {}).get("completion_tokens") or 0) or _count(c),
                               {"stop": "stop", "length": "length"}.get(c.get("finish_reason"), "repetition"), latency)
                    for c in choices
                ]
            except (ValueError, KeyError, TypeError) as e:
                last = f"malformed answer from {self.url}: {e}"
                continue
        if last.startswith("cannot reach"):
            raise SamplerError(last)
        return ItemSkipped(f"gave up after {self.retries + 1} attempts: {last}")

    def generate(self, requests: list[Request], decoding: DecodingConfig) -> list[list[Generation] | ItemSkipped]:
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            return list(pool.map(lambda r: self._post(r, decoding), requests))


def _count(choice: dict) -> int:
    """Token count when the server does not report usage per choice: logprobs if given, else 0."""
    lp = choice.get("logprobs") or {}
    return len(lp.get("tokens") or [])
