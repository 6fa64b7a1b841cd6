"""The OpenAI-compatible backend: `/v1/completions` or `/v1/chat/completions` (`vllm serve`, hosted APIs).

``endpoint``: ``completions`` sends the prompt string as the model was fine-tuned on it;
``chat`` sends one user message — with the page as a data-URL ``image_url`` part when the items
have images (a VLM behind the server, or a hosted chat-only API); ``auto`` uses chat for pages and
completions for text, and moves to chat for good when a server answers 404 on completions."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

from core.samplers.base import DecodingConfig, Generation, ItemSkipped, Request, SamplerError

ENDPOINTS = ("auto", "completions", "chat")
IMAGE_MARK = "<image>"  # where the page goes in the recorded prompt of a request that carries one
# Server finish reasons -> the candidate's; vLLM reports its repetition detection as "repetition".
FINISH = {"stop": "stop", "eos": "stop", "end_turn": "stop", "stop_sequence": "stop", "length": "length",
          "max_tokens": "length", "repetition": "repetition"}


class OpenAISampler:
    name = "openai"

    def __init__(self, model: str, base_url: str | None, api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 8, timeout_s: float = 120.0, retries: int = 3, endpoint: str = "auto",
                 images: str = "auto"):
        import requests

        if not base_url:
            raise SamplerError("the openai backend needs a base URL (e.g. http://127.0.0.1:8000)")
        if endpoint not in ENDPOINTS:
            raise SamplerError(f"endpoint is one of {', '.join(ENDPOINTS)} (got {endpoint!r})")
        root = base_url.rstrip("/")
        root = root if root.endswith("/v1") else root + "/v1"
        self.urls = {"completions": root + "/completions", "chat": root + "/chat/completions"}
        self.endpoint = endpoint
        self.vision = images != "off" and endpoint != "completions"  # pages go as image parts of a chat message
        self.url = self.urls["chat" if endpoint == "chat" else "completions"]
        self.model, self.concurrency, self.timeout_s, self.retries = model, concurrency, timeout_s, retries
        self.session = requests.Session()
        key = os.environ.get(api_key_env)
        if key:
            self.session.headers["Authorization"] = f"Bearer {key}"

    def format_prompt(self, prompt: str, chat_template: str) -> str:
        return prompt  # the completions endpoint takes the prompt as the model was fine-tuned on it

    def format_image_prompt(self, instruction: str, chat_template: str) -> str:
        return f"{IMAGE_MARK}\n\n{instruction.strip()}"  # the server's chat template places the image part

    def _body(self, req: Request, chat: bool) -> dict:
        if not chat:
            return {"prompt": req.prompt}
        if req.image is None:
            return {"messages": [{"role": "user", "content": req.prompt}]}
        from core.images import data_url

        text = req.prompt[len(IMAGE_MARK):].lstrip("\n") if req.prompt.startswith(IMAGE_MARK) else req.prompt
        parts = [{"type": "image_url", "image_url": {"url": data_url(req.image)}}, {"type": "text", "text": text}]
        return {"messages": [{"role": "user", "content": parts}]}

    def _post(self, req: Request, decoding: DecodingConfig) -> list[Generation] | ItemSkipped:
        import requests

        chat = self.endpoint == "chat" or (self.endpoint == "auto" and (req.image is not None or self.url == self.urls["chat"]))
        url = self.urls["chat" if chat else "completions"]
        body = {
            "model": self.model, **self._body(req, chat), "n": req.n, "max_tokens": decoding.max_new_tokens,
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
                r = self.session.post(url, json=body, timeout=self.timeout_s)
            except requests.ConnectionError as e:
                last = f"cannot reach {url} ({type(e).__name__})"
                continue
            except requests.Timeout:
                last = f"no answer from {url} within {self.timeout_s:g} s"
                continue
            if r.status_code == 404 and not chat and self.endpoint == "auto":
                self.url = self.urls["chat"]  # a chat-only server (hosted APIs): chat from now on
                return self._post(req, decoding)
            if r.status_code >= 500 or r.status_code == 429:
                last = f"{url} answered {r.status_code}: {r.text[:200]}"
                continue
            if r.status_code >= 400:
                return ItemSkipped(f"{url} refused the request ({r.status_code}): {r.text[:300]}")
            latency = time.perf_counter() - t0
            try:
                choices = sorted(r.json()["choices"], key=lambda c: c.get("index", 0))
                return [
                    Generation(_text(c, chat), int((c.get("usage") or {}).get("completion_tokens") or 0) or _count(c),
                               FINISH.get(c.get("finish_reason"), "stop"), latency)
                    for c in choices
                ]
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                last = f"malformed answer from {url}: {e}"
                continue
        if last.startswith("cannot reach"):
            raise SamplerError(last)
        return ItemSkipped(f"gave up after {self.retries + 1} attempts: {last}")

    def generate(self, requests: list[Request], decoding: DecodingConfig) -> list[list[Generation] | ItemSkipped]:
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            return list(pool.map(lambda r: self._post(r, decoding), requests))


def _text(choice: dict, chat: bool) -> str:
    """A choice's text: ``text`` (completions) or ``message.content`` (chat; a list of parts is joined)."""
    if not chat:
        return choice["text"]
    content = choice["message"]["content"]
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if content is None:
        return ""
    if not isinstance(content, str):
        raise TypeError("message content is not text")
    return content


def _count(choice: dict) -> int:
    """Token count when the server does not report usage per choice: logprobs if given, else 0."""
    lp = choice.get("logprobs") or {}
    return len(lp.get("tokens") or [])
