"""The embedded demo's document task: synthetic Brazilian-Portuguese forms and invoices.

Each record pairs a *noisy OCR-like text* of a document (the model's input) with its *JSON
transcription* (the reference). Everything is deterministic from a seed: the same arguments
give identical records, and a record depends only on (seed, split, index, noise, max_items), so
asking for more training documents never changes the test split.

Why the text looks the way it does (see DESIGN.md, "What the demo experiment showed"): a tiny
model only learns this task when the values can be copied token by token. The rendering
therefore writes ``key:value`` with no space after the colon and item rows as
``descricao|quantidade|valor_unitario|total`` at the start of a line, so that with a byte-level
BPE (whose pre-tokenizer splits before a word's leading space) the first word of a value is the
same token in the input (after ``:`` / a newline) as in the compact JSON (after ``":"``), and
every digit is its own token anyway. The keys in the text are the JSON keys.

Noise (0..1) imitates OCR: character confusions (O/0, l/1, rn/m, S/5, …), dropped accents,
broken lines, stray characters and layout noise (extra spaces, rules, page headers).
"""
from __future__ import annotations

import hashlib
import json
import random
import re
import unicodedata
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from faker import Faker

__all__ = [
    "PRODUCTS",
    "SPLITS",
    "DemoDocument",
    "build_demo_records",
    "format_brl",
    "make_document",
    "make_record",
    "record_seed",
    "render_image",
    "render_noisy_text",
    "to_reference",
]

SPLITS = ("train", "validation", "test")

# pt_BR hardware / office vocabulary for invoice line items: (noun, qualifiers, price range).
_PRODUCT_BASES: list[tuple[str, list[str], tuple[float, float]]] = [
    ("Parafuso", ["sextavado", "phillips", "autoatarraxante", "de rosca soberba", "allen"], (0.15, 4.5)),
    ("Porca", ["sextavada", "borboleta", "autotravante"], (0.1, 2.5)),
    ("Arruela", ["lisa", "de pressão", "de vedação"], (0.05, 1.5)),
    ("Prego", ["com cabeça", "sem cabeça", "de aço"], (0.05, 0.9)),
    ("Bucha", ["de nylon", "plástica", "para drywall"], (0.1, 1.8)),
    ("Fita", ["isolante", "crepe", "adesiva transparente", "dupla face", "veda rosca"], (2.5, 29.9)),
    ("Cabo", ["flexível", "paralelo", "de rede", "PP"], (1.2, 9.9)),
    ("Lâmpada", ["LED", "fluorescente", "halógena"], (6.9, 49.9)),
    ("Tomada", ["dupla", "simples", "com interruptor"], (8.5, 39.9)),
    ("Disjuntor", ["monopolar", "bipolar", "tripolar"], (14.9, 129.0)),
    ("Tinta", ["acrílica", "esmalte", "látex"], (39.9, 389.0)),
    ("Pincel", ["chato", "redondo", "de cerdas"], (3.9, 24.9)),
    ("Rolo", ["de lã", "de espuma", "antigota"], (9.9, 49.9)),
    ("Lixa", ["d'água", "para madeira", "para ferro"], (0.9, 5.9)),
    ("Broca", ["de aço rápido", "para concreto", "para madeira"], (4.9, 59.9)),
    ("Chave", ["de fenda", "philips", "inglesa", "allen"], (7.9, 89.9)),
    ("Martelo", ["de unha", "de borracha", "de bola"], (19.9, 99.9)),
    ("Alicate", ["universal", "de corte", "de pressão"], (19.9, 119.0)),
    ("Luva", ["de raspa", "nitrílica", "de algodão"], (2.9, 29.9)),
    ("Cola", ["branca", "instantânea", "de contato", "epóxi"], (2.5, 39.9)),
    ("Caneta", ["esferográfica azul", "esferográfica preta", "marca-texto"], (0.9, 7.9)),
    ("Lápis", ["preto", "de cor", "grafite"], (0.5, 4.9)),
    ("Caderno", ["universitário", "espiral", "brochura"], (6.9, 34.9)),
    ("Papel", ["sulfite A4", "cartão", "kraft"], (0.9, 39.9)),
    ("Grampo", ["26/6", "para grampeador", "trilho"], (2.9, 14.9)),
    ("Envelope", ["pardo", "branco", "ofício"], (0.3, 2.9)),
    ("Pasta", ["suspensa", "com elástico", "catálogo"], (2.5, 24.9)),
    ("Clipe", ["de metal", "colorido", "niquelado"], (2.9, 12.9)),
    ("Borracha", ["branca", "escolar", "ponteira"], (0.5, 3.9)),
    ("Tesoura", ["escolar", "multiuso", "de escritório"], (4.9, 29.9)),
    ("Cartucho", ["de tinta preto", "de tinta colorido", "de toner"], (39.9, 289.0)),
    ("Mangueira", ["de jardim", "cristal", "trançada"], (19.9, 149.0)),
    ("Registro", ["de gaveta", "de esfera", "de pressão"], (19.9, 159.0)),
    ("Joelho", ["de PVC", "soldável", "roscável"], (0.9, 8.9)),
    ("Cimento", ["CP II", "branco", "refratário"], (24.9, 49.9)),
    ("Argamassa", ["colante AC1", "colante AC2", "de reboco"], (14.9, 39.9)),
]
_SIZES = ["", "", "", " 3mm", " 5mm", " 8mm", " 10mm", " 1/4", " 3/8", " 18L", " 3,6L", " 2m", " 5m", " 50un", " 100un"]

PRODUCTS: list[str] = [f"{base} {q}" for base, quals, _ in _PRODUCT_BASES for q in quals]

# OCR character confusions, one direction each way where plausible.
_CONFUSIONS: dict[str, list[str]] = {
    "O": ["0", "Q"], "0": ["O"], "o": ["0", "c"], "l": ["1", "I", "|"], "1": ["l", "I"],
    "I": ["l", "1"], "S": ["5"], "5": ["S"], "B": ["8"], "8": ["B"], "Z": ["2"], "2": ["Z"],
    "e": ["c"], "c": ["e"], "a": ["o"], "i": ["l"], "g": ["q"], "G": ["6"], "6": ["G"],
    "m": ["rn"], "n": ["ri"], "h": ["b"], "u": ["v"], "t": ["f"], ",": ["."], ".": [","],
}
_MULTI = {"rn": "m", "m": "rn", "cl": "d", "d": "cl", "vv": "w"}
_STRAY = ["'", "`", ".", ",", "~", "^", "|", ";", "_"]


@dataclass
class DemoDocument:
    """One synthetic document: its kind and its fields (the JSON transcription is ``fields``)."""

    kind: str
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return len(self.fields.get("itens", []))


def format_brl(value: Decimal) -> str:
    """Brazilian money format without the currency sign: 1234.5 -> '1.234,50'."""
    q = Decimal(value).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    whole, frac = f"{q:.2f}".split(".")
    neg = whole.startswith("-")
    whole = whole.lstrip("-")
    groups = []
    while len(whole) > 3:
        groups.insert(0, whole[-3:])
        whole = whole[:-3]
    groups.insert(0, whole)
    return ("-" if neg else "") + ".".join(groups) + "," + frac


def _cep(fake: Faker) -> str:
    digits = re.sub(r"\D", "", fake.postcode())
    digits = (digits + "00000000")[:8]
    return f"{digits[:5]}-{digits[5:]}"


def _rg(fake: Faker) -> str:
    d = re.sub(r"\D", "", fake.rg())
    d = (d + "000000000")[:9]
    return f"{d[:2]}.{d[2:5]}.{d[5:8]}-{d[8]}"


def _address(fake: Faker) -> str:
    return f"{fake.street_name()}, {fake.building_number()} - {fake.bairro()}"


def _date(fake: Faker) -> str:
    return fake.date_between(start_date="-4y", end_date="-1d").strftime("%d/%m/%Y")


def _product(rng: random.Random) -> tuple[str, Decimal]:
    base, quals, (lo, hi) = rng.choice(_PRODUCT_BASES)
    name = f"{base} {rng.choice(quals)}{rng.choice(_SIZES)}"
    price = Decimal(str(round(rng.uniform(lo, hi), 2))).quantize(Decimal("0.01"))
    if price <= 0:
        price = Decimal("0.10")
    return name, price


def make_document(
    rng: random.Random,
    fake: Faker,
    kind: str,
    *,
    n_items: int | None = None,
    max_items: int = 30,
) -> DemoDocument:
    """Make one document of ``kind`` ("form" or "invoice") from a seeded ``rng`` and ``fake``.

    For invoices, ``n_items`` (default: uniform in 1..max_items) sets the length of the table.
    """
    if kind == "form":
        fields: dict[str, Any] = {
            "tipo": "formulario",
            "nome": fake.name(),
            "cpf": fake.cpf(),
            "rg": _rg(fake),
            "endereco": _address(fake),
            "cep": _cep(fake),
            "cidade": fake.city(),
            "uf": fake.estado_sigla(),
            "telefone": fake.phone_number(),
            "data": _date(fake),
        }
        return DemoDocument("form", fields)
    if kind != "invoice":
        raise ValueError(f"unknown document kind {kind!r} (form or invoice)")
    if n_items is None:
        n_items = rng.randint(1, max(1, max_items))
    items = []
    grand = Decimal("0")
    for _ in range(n_items):
        name, price = _product(rng)
        qty = rng.choice([1, 1, 2, 2, 3, 4, 5, 6, 10, 12, 20, 25, 50, 100]) if rng.random() < 0.7 else rng.randint(1, 60)
        total = price * qty
        grand += total
        items.append(
            {
                "descricao": name,
                "quantidade": qty,
                "valor_unitario": format_brl(price),
                "total": format_brl(total),
            }
        )
    dest_is_company = rng.random() < 0.5
    fields = {
        "tipo": "nota_fiscal",
        "numero": f"{rng.randint(1, 999999):06d}",
        "data": _date(fake),
        "emitente": {"nome": fake.company(), "cnpj": fake.cnpj(), "endereco": _address(fake), "cidade": fake.city(), "uf": fake.estado_sigla()},
        "destinatario": (
            {"nome": fake.company(), "cnpj": fake.cnpj()} if dest_is_company else {"nome": fake.name(), "cpf": fake.cpf()}
        ),
        "itens": items,
        "valor_total": format_brl(grand),
    }
    return DemoDocument("invoice", fields)


def to_reference(doc: DemoDocument) -> str:
    """The reference transcription: compact JSON, non-ASCII kept."""
    return json.dumps(doc.fields, ensure_ascii=False, separators=(",", ":"))


# --------------------------------------------------------------------------- rendering


def _clean_lines(doc: DemoDocument) -> list[str]:
    """The document's text lines before noise. Keys are the JSON keys, ``key:value`` with no
    space, item rows ``descricao|quantidade|valor_unitario|total``."""
    f = doc.fields
    if doc.kind == "form":
        return [
            "FICHA CADASTRAL",
            f"nome:{f['nome']}",
            f"cpf:{f['cpf']} rg:{f['rg']}",
            f"endereco:{f['endereco']}",
            f"cep:{f['cep']} cidade:{f['cidade']} uf:{f['uf']}",
            f"telefone:{f['telefone']}",
            f"data:{f['data']}",
        ]
    em, de = f["emitente"], f["destinatario"]
    doc_key = "cnpj" if "cnpj" in de else "cpf"
    lines = [
        f"NOTA FISCAL numero:{f['numero']} data:{f['data']}",
        "emitente",
        f"nome:{em['nome']} cnpj:{em['cnpj']}",
        f"endereco:{em['endereco']} cidade:{em['cidade']} uf:{em['uf']}",
        "destinatario",
        f"nome:{de['nome']} {doc_key}:{de[doc_key]}",
        "itens",
        "descricao|quantidade|valor_unitario|total",
    ]
    for it in f["itens"]:
        lines.append(f"{it['descricao']}|{it['quantidade']}|{it['valor_unitario']}|{it['total']}")
    lines.append(f"valor_total:{f['valor_total']}")
    return lines


def _strip_accents(s: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", s) if unicodedata.category(c) != "Mn")


def _noisy_line(line: str, noise: float, rng: random.Random) -> str:
    p_char = 0.06 * noise
    words = line.split(" ")
    out_words = []
    for w in words:
        if rng.random() < 0.5 * noise:
            w = _strip_accents(w)
        chars: list[str] = []
        i = 0
        while i < len(w):
            two = w[i : i + 2]
            if two in _MULTI and rng.random() < p_char * 2:
                chars.append(_MULTI[two])
                i += 2
                continue
            c = w[i]
            r = rng.random()
            if c in _MULTI and r < p_char:
                chars.append(_MULTI[c])
            elif c in _CONFUSIONS and r < p_char * 2:
                chars.append(rng.choice(_CONFUSIONS[c]))
            elif r > 1.0 - p_char * 0.2:  # a stray mark after the character
                chars.append(c + rng.choice(_STRAY))
            else:
                chars.append(c)
            i += 1
        out_words.append("".join(chars))
    sep = [" " if rng.random() >= 0.15 * noise else "  " for _ in out_words[1:]]
    line = out_words[0] + "".join(s + w for s, w in zip(sep, out_words[1:]))
    if rng.random() < 0.2 * noise:
        line = " " * rng.randint(1, 4) + line
    return line


def render_noisy_text(doc: DemoDocument, noise: float, rng: random.Random) -> str:
    """The OCR-like text of ``doc``. ``noise`` = 0 gives the clean layout; up to 1, more
    confusions, dropped accents, broken lines and layout noise. Deterministic given ``rng``."""
    noise = min(max(float(noise), 0.0), 1.0)
    lines = _clean_lines(doc)
    if noise <= 0:
        return "\n".join(lines)
    out: list[str] = []
    if rng.random() < 0.3 * noise:
        out.append(rng.choice(["- - -", "pag. 1/1", "____", "DOCUMENTO AUXILIAR", "* * *"]))
    for line in lines:
        noisy = _noisy_line(line, noise, rng)
        # a broken line: split at a space inside the line
        if rng.random() < 0.12 * noise and " " in noisy.strip():
            spaces = [m.start() for m in re.finditer(" ", noisy) if 0 < m.start() < len(noisy) - 1]
            if spaces:
                k = rng.choice(spaces)
                out.append(noisy[:k])
                out.append(noisy[k + 1 :])
                continue
        out.append(noisy)
        if rng.random() < 0.04 * noise:
            out.append(rng.choice(["", "-----", "| |", "."]))
    return "\n".join(out)


FONT_PATH = Path(__file__).resolve().parents[2] / "data" / "fonts" / "DejaVuSans.ttf"  # has ã, ç, é, í
PAGE_SIZE = (640, 640)  # every page the same size, as scans are: how far the text runs down the page shows
# how many lines (item rows) it has, the cue a tiny VLM learns first


def page_font(size: int = 12, bold: bool = False):
    """DejaVu Sans (shipped in data/fonts; Pillow's default font draws Portuguese accents as boxes)."""
    from PIL import ImageFont

    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    for path in (FONT_PATH.with_name(name), Path("/usr/share/fonts/truetype/dejavu") / name):
        try:
            return ImageFont.truetype(str(path), size)
        except OSError:  # a checkout without data/fonts: Debian's copy, else Pillow's scalable default
            continue
    return ImageFont.load_default(size)


def render_image(doc: DemoDocument, path: Path) -> Path:
    """Draw the clean document on a fixed-size white page as a PNG, the way printed forms look: a
    bold title over a rule, and the invoice's item table banded (alternate rows shaded) and ruled,
    so its rows can be seen, and counted, even where the text is too small to read."""
    from PIL import Image, ImageDraw

    lines = _clean_lines(doc)
    font, bold = page_font(12), page_font(14, bold=True)
    line_h, left, top = 16, 16, 16
    width = PAGE_SIZE[0] - 2 * left
    img = Image.new("RGB", PAGE_SIZE, "white")
    draw = ImageDraw.Draw(img)
    header = lines.index("descricao|quantidade|valor_unitario|total") if doc.kind == "invoice" else None
    for i, s in enumerate(lines):
        y = top + i * line_h
        if i == 0:
            draw.text((left, y - 2), s, fill="black", font=bold)
            draw.line([(left, y + line_h - 1), (left + width, y + line_h - 1)], fill="black", width=2)
            continue
        if header is not None and header <= i < header + 1 + doc.n_items:
            row = i - header
            shade = (150, 150, 150) if row == 0 else (205, 205, 205) if row % 2 else None
            if shade:
                draw.rectangle([(left, y - 1), (left + width, y + line_h - 2)], fill=shade)
            draw.line([(left, y + line_h - 2), (left + width, y + line_h - 2)], fill="black", width=1)
        draw.text((left + 4, y), s, fill="black", font=bold if header is not None and i == header else font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG")
    return path


# --------------------------------------------------------------------------- records


def record_seed(seed: int, split: str, index: int) -> int:
    """A stable per-record seed (independent of Python's hash randomisation)."""
    h = hashlib.sha256(f"loopbreak-demo:{seed}:{split}:{index}".encode()).digest()
    return int.from_bytes(h[:8], "big")


def make_record(
    seed: int,
    split: str,
    index: int,
    *,
    noise: float = 0.3,
    max_items: int = 30,
    images_dir: Path | None = None,
    kind: str | None = None,
    n_items: int | None = None,
    invoice_share: float = 0.7,
) -> dict:
    """One demo record; depends only on its arguments."""
    s = record_seed(seed, split, index)
    rng = random.Random(s)
    fake = Faker("pt_BR")
    fake.seed_instance(s)
    if kind is None:
        kind = "invoice" if rng.random() < invoice_share else "form"
    doc = make_document(rng, fake, kind, n_items=n_items, max_items=max_items)
    text = render_noisy_text(doc, noise, random.Random(s ^ 0x5EED))
    rid = f"demo-{split}-{index:05d}"
    rec = {
        "id": rid,
        "split": split,
        "kind": doc.kind,
        "text": text,
        "reference": to_reference(doc),
        "n_items": doc.n_items,
    }
    if images_dir is not None:
        rec["image"] = str(render_image(doc, Path(images_dir) / f"{rid}.png"))
    return rec


def build_demo_records(
    seed: int = 0,
    n_train: int = 600,
    n_validation: int = 100,
    n_test: int = 300,
    noise: float = 0.3,
    images_dir: Path | None = None,
    max_items: int = 30,
) -> list[dict]:
    """The demo data set: train, validation and test records, deterministic from ``seed``.

    Each record is ``{"id", "split", "kind", "text", "reference", "n_items"}`` plus ``"image"``
    (a PNG path) when ``images_dir`` is given. About 70% are invoices with 1..max_items items.
    """
    records: list[dict] = []
    for split, n in zip(SPLITS, (n_train, n_validation, n_test)):
        for i in range(n):
            records.append(make_record(seed, split, i, noise=noise, max_items=max_items, images_dir=images_dir))
    return records
