"""The OpenAI-compatible backend: `/v1/completions` or `/v1/chat/completions` (`vllm serve`, hosted APIs).

``endpoint``: ``completions`` sends the prompt string as the model was fine-tuned on it;
``chat`` sends one user message — with the page as a data-URL ``image_url`` part when the items
have images (a VLM behind the server, or a hosted chat-only API); ``auto`` uses chat for pages and
completions for text, and moves to chat for good when a server answers 404 on completions.

A fleet: ``base_url`` may name several servers, comma-separated (several ``vllm serve`` processes). Each
request goes to the server with the fewest requests outstanding; one that fails (unreachable, a timeout,
a 5xx) is set aside for a while and the request is tried again on another at once. The answer does not
depend on which server gave it (same model, the item's own seed), so nothing is lost or doubled."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from core.samplers.base import DecodingConfig, Generation, ItemSkipped, Request, SamplerError

ENDPOINTS = ("auto", "completions", "chat")
IMAGE_MARK = "<image>"  # where the page goes in the recorded prompt of a request that carries one
# Server finish reasons -> the candidate's; vLLM reports its repetition detection as "repetition".
FINISH = {"stop": "stop", "eos": "stop", "end_turn": "stop", "stop_sequence": "stop", "length": "length",
          "max_tokens": "length", "repetition": "repetition"}
DOWN_S = 15.0  # how long a server that failed is passed over while others are up


class _Server:
    """One base URL of the fleet, with its outstanding requests and when it may be tried again."""

    def __init__(self, base_url: str):
        root = base_url.rstrip("/")
        self.root = root if root.endswith("/v1") else root + "/v1"
        self.outstanding = 0
        self.down_until = 0.0


class OpenAISampler:
    name = "openai"

    def __init__(self, model: str, base_url: str | None, api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 8, timeout_s: float = 120.0, retries: int = 3, endpoint: str = "auto",
                 images: str = "auto"):
        import requests

        from core.access import refuse_internal

        roots = [u.strip() for u in (base_url or "").split(",") if u.strip()]
        if not roots:
            raise SamplerError("the openai backend needs a base URL (e.g. http://127.0.0.1:8000)")
        if endpoint not in ENDPOINTS:
            raise SamplerError(f"endpoint is one of {', '.join(ENDPOINTS)} (got {endpoint!r})")
        for u in roots:
            refuse_internal(u)  # link-local and metadata addresses, always (an AccessDenied, a WorkspaceError)
        self.servers = [_Server(u) for u in roots]
        self._lock = threading.Lock()
        self.endpoint = endpoint
        self.vision = images != "off" and endpoint != "completions"  # pages go as image parts of a chat message
        self.chat_only = endpoint == "chat"  # set for good when a server answers 404 on completions (auto)
        self.model, self.concurrency, self.timeout_s, self.retries = model, concurrency, timeout_s, retries
        self.served: dict[str, int] = {s.root: 0 for s in self.servers}  # answers per server (for the log and tests)
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

    def _acquire(self) -> _Server:
        """The up server with the fewest outstanding requests (all down: the one back soonest)."""
        with self._lock:
            now = time.monotonic()
            up = [s for s in self.servers if s.down_until <= now]
            server = min(up, key=lambda s: s.outstanding) if up else min(self.servers, key=lambda s: s.down_until)
            server.outstanding += 1
            return server

    def _release(self, server: _Server, failed: bool) -> bool:
        """Give a request back; a failed server is set aside. True when another server is up to retry on."""
        with self._lock:
            server.outstanding -= 1
            if not failed:
                server.down_until = 0.0
                return False
            now = time.monotonic()
            server.down_until = now + DOWN_S
            return any(s.down_until <= now for s in self.servers)

    def _post(self, req: Request, decoding: DecodingConfig) -> list[Generation] | ItemSkipped:
        body = {
            "model": self.model, "n": req.n, "max_tokens": decoding.max_new_tokens,
            "temperature": 0.0 if req.greedy else decoding.temperature,
            "top_p": 1.0 if req.greedy else decoding.top_p, "seed": req.seed,
        }
        if decoding.top_k > 0 and not req.greedy:
            body["top_k"] = decoding.top_k
        last, unreachable, attempt, backoff = "", True, 0, 0
        while attempt <= self.retries + len(self.servers) - 1:
            if backoff:
                time.sleep(min(0.5 * 2 ** (backoff - 1), 8.0))
            attempt += 1
            server = self._acquire()
            outcome = self._try(server, req, decoding, body)
            failed = isinstance(outcome, _Failure)
            other_up = self._release(server, failed)
            if not failed:
                return outcome
            last, unreachable = outcome.reason, unreachable and outcome.unreachable
            backoff = 0 if other_up else backoff + 1  # another server is up: retry there at once
        if unreachable:
            raise SamplerError(last)
        return ItemSkipped(f"gave up after {attempt} attempts: {last}")

    def _try(self, server: _Server, req: Request, decoding: DecodingConfig, body: dict):
        """One request to one server: the generations, an ItemSkipped (refused), or a _Failure (retry)."""
        import requests

        chat = self.chat_only or (self.endpoint == "auto" and req.image is not None)
        url = server.root + ("/chat/completions" if chat else "/completions")
        t0 = time.perf_counter()
        try:
            r = self.session.post(url, json={**body, **self._body(req, chat)}, timeout=self.timeout_s)
        except requests.ConnectionError as e:
            return _Failure(f"cannot reach {url} ({type(e).__name__})", unreachable=True)
        except requests.Timeout:
            return _Failure(f"no answer from {url} within {self.timeout_s:g} s")
        if r.status_code == 404 and not chat and self.endpoint == "auto":
            self.chat_only = True  # a chat-only server (hosted APIs): chat from now on
            return self._try(server, req, decoding, body)
        if r.status_code >= 500 or r.status_code == 429:
            return _Failure(f"{url} answered {r.status_code}: {r.text[:200]}")
        if r.status_code >= 400:
            return ItemSkipped(f"{url} refused the request ({r.status_code}): {r.text[:300]}")
        latency = time.perf_counter() - t0
        try:
            choices = sorted(r.json()["choices"], key=lambda c: c.get("index", 0))
            gens = [
                Generation(_text(c, chat), int((c.get("usage") or {}).get("completion_tokens") or 0) or _count(c),
                           FINISH.get(c.get("finish_reason"), "stop"), latency)
                for c in choices
            ]
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            return _Failure(f"malformed answer from {url}: {e}")
        with self._lock:
            self.served[server.root] += 1
        return gens

    def generate(self, requests: list[Request], decoding: DecodingConfig) -> list[list[Generation] | ItemSkipped]:
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            return list(pool.map(lambda r: self._post(r, decoding), requests))


class _Failure:
    """A failed attempt worth retrying (on another server when one is up)."""

    def __init__(self, reason: str, unreachable: bool = False):
        self.reason, self.unreachable = reason, unreachable


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
