"""A minimal OpenAI-compatible server over the transformers sampler.

`loopbreak serve --model PATH` puts any local model (the demo families included) behind
``POST /v1/completions``, ``POST /v1/chat/completions`` (the page as a data-URL ``image_url`` part
for a vision model) and ``GET /v1/models``, so the openai backend, an LLM judge or any other
OpenAI client can use it. It is for a laptop or a test, not a fleet: requests are served one at a
time by one model. For real throughput, use ``vllm serve``, which speaks the same protocol.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from core.samplers.base import DecodingConfig, Request
from core.samplers.transformers import TransformersSampler


class CompletionsHandler(BaseHTTPRequestHandler):
    server: "CompletionsServer"

    def log_message(self, format, *args):  # quiet by default; the server prints one line per request
        pass

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body, ensure_ascii=False).encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its timeout); nothing to answer

    def do_GET(self):
        if self.path.rstrip("/") == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": self.server.model_name, "object": "model"}]})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self):
        route = {"/v1/completions": "completions", "/v1/chat/completions": "chat"}.get(self.path.rstrip("/"))
        if route not in self.server.routes:
            return self._send(404, {"error": {"message": f"no route {self.path}"}})
        chat = route == "chat"
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            prompt, image = self._chat_prompt(body["messages"]) if chat else (body["prompt"], None)
            if not isinstance(prompt, str):
                raise ValueError("prompt must be a string")
            n = int(body.get("n", 1))
            temperature = float(body.get("temperature", 1.0))
            decoding = DecodingConfig(
                n=n, temperature=temperature or 1.0, top_p=float(body.get("top_p", 1.0)),
                top_k=int(body.get("top_k", 0) or 0), max_new_tokens=int(body.get("max_tokens", 16)),
            )
            req = Request(prompt, n, temperature == 0.0, int(body.get("seed", 0) or 0), image)
        except (ValueError, KeyError, TypeError, OSError) as e:
            return self._send(400, {"error": {"message": f"bad request: {e}"}})
        with self.server.lock:
            (gens,) = self.server.sampler.generate([req], decoding)
        if not isinstance(gens, list):
            return self._send(400, {"error": {"message": str(gens)}})
        if chat:
            return self._send(200, {
                "object": "chat.completion", "model": self.server.model_name,
                "choices": [{"index": i, "message": {"role": "assistant", "content": g.text}, "finish_reason": g.finish_reason}
                            for i, g in enumerate(gens)],
                "usage": {"completion_tokens": sum(g.n_tokens for g in gens)},
            })
        self._send(200, {
            "object": "text_completion", "model": self.server.model_name,
            "choices": [
                {"index": i, "text": g.text, "finish_reason": g.finish_reason, "usage": {"completion_tokens": g.n_tokens}}
                for i, g in enumerate(gens)
            ],
            "usage": {"completion_tokens": sum(g.n_tokens for g in gens)},
        })


    def _chat_prompt(self, messages) -> tuple[str, object]:
        """The prompt string and page image of a chat request: the last user message, formatted with
        the model's chat template (a vision model: its processor's, with the image part)."""
        from PIL import Image

        user = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        if not user:
            raise ValueError("no user message")
        content = user[-1].get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
        text = "".join(p.get("text", "") for p in parts if p.get("type") == "text")
        urls = [p["image_url"]["url"] for p in parts if p.get("type") == "image_url"]
        sampler = self.server.sampler
        if not urls:
            if sampler.vision:
                raise ValueError("this model reads page images: send one as an image_url part")
            return sampler.format_prompt(text, "auto"), None
        if not sampler.vision:
            raise ValueError("this model is text-only: it cannot take an image")
        if not urls[0].startswith("data:") or ";base64," not in urls[0]:
            raise ValueError("images are taken as data: URLs (base64) only")
        image = Image.open(io.BytesIO(base64.b64decode(urls[0].split(";base64,", 1)[1]))).convert("RGB")
        return sampler.format_image_prompt(text, "auto"), image


class CompletionsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, model_path: str, host: str = "127.0.0.1", port: int = 8000, model_name: str | None = None,
                 handler: type[BaseHTTPRequestHandler] = CompletionsHandler, routes: tuple[str, ...] = ("completions", "chat")):
        self.sampler = TransformersSampler(model_path, device="auto")
        self.model_name = model_name or model_path
        self.routes = tuple(routes)
        self.lock = threading.Lock()
        super().__init__((host, port), handler)

    def start_background(self) -> threading.Thread:
        t = threading.Thread(target=self.serve_forever, daemon=True)
        t.start()
        return t
