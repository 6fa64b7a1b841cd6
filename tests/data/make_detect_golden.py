"""Writes detect_golden.jsonl: hand-written cases of every class the detector must get right.

Each case is written out here (long loops as a unit times a count, so the file stays reviewable);
run `python tests/data/make_detect_golden.py` after editing. `loop_start_min/max` bound where the
reported loop (the tail loop when degenerate, else the first) starts: a loop may begin a little
before the constructed point when the text before it ends like the unit does.
"""

import json
import random
from pathlib import Path

OUT = Path(__file__).with_name("detect_golden.jsonl")
rnd = random.Random(7)
cases: list[dict] = []

PROSE = ("O documento apresenta os dados do emitente, do destinatário e dos itens adquiridos. "
         "Os valores foram conferidos com a nota original e não há divergências relevantes. ")
PRODUCTS = ["Parafuso sextavado", "Porca sextavada", "Arruela lisa", "Chapa galvanizada", "Tubo de aço",
            "Cabo flexível", "Fio de cobre", "Tinta acrílica", "Lixa d'água", "Broca de vídea", "Serra copo",
            "Martelo unha", "Alicate universal", "Chave de fenda", "Chave Phillips", "Fita isolante",
            "Disjuntor bipolar", "Tomada dupla", "Interruptor simples", "Lâmpada LED", "Luva de raspa",
            "Óculos de proteção", "Cola epóxi", "Silicone incolor", "Rebite de alumínio", "Bucha 8 mm",
            "Abraçadeira nylon", "Mangueira cristal", "Registro de gaveta", "Joelho 90 graus", "Trena 5 m"]


def case(name, cls, text, finish, degenerate, has_loop, start=None, period=0, kind=None):
    row = {"name": name, "class": cls, "text": text, "finish_reason": finish, "degenerate": degenerate, "has_loop": has_loop}
    if kind:
        row["kind"] = kind  # the kind of the loop that ends the text
    if start is not None:
        row["loop_start_min"] = max(0, start - max(period, 1) * 2)
        row["loop_start_max"] = start + max(period, 1)
    cases.append(row)


def tail(prefix, unit, times, finish="length", cls="", name="", cut=0):
    text = prefix + unit * times
    text = text[: len(text) - cut] if cut else text
    case(name, cls, text, finish, True, True, len(prefix), len(unit))


def item(desc, q, price):
    return json.dumps({"descricao": desc, "quantidade": q, "valor_unitario": f"{price:.2f}".replace(".", ","),
                       "total": f"{q * price:.2f}".replace(".", ",")}, ensure_ascii=False)


HEAD = '{"tipo":"nota_fiscal","emitente":{"nome":"Ferragens Silva LTDA","cnpj":"12.345.678/0001-90"},"itens":['

# single characters
tail("Observações: ", "a", 600, cls="single_char", name="letter a to the limit")
tail(PROSE, "!", 500, cls="single_char", name="exclamation marks to the limit")
tail('{"cnpj":"', "0", 400, cls="single_char", name="zeros inside a JSON string")
tail("Resposta: ", "k", 2000, cls="single_char", name="long single-letter run", cut=0)
case("single letter loop mid-text, stopped", "single_char", "Assinatura: " + "z" * 300 + "\nFim do documento.", "stop", False, True, 12, 1)

# whitespace and punctuation
tail(PROSE, "\n", 500, cls="whitespace_punct", name="newlines to the limit")
tail(PROSE, " ", 1200, cls="whitespace_punct", name="spaces to the limit")
tail(PROSE, ". ", 300, cls="whitespace_punct", name="dot-space to the limit")
tail("Seção 2\n", "-", 3000, cls="whitespace_punct", name="dashes to the limit")
tail(PROSE, "\t\n", 200, cls="whitespace_punct", name="tab-newline to the limit")
tail('{"itens":[', "{},", 150, cls="whitespace_punct", name="empty JSON objects to the limit")

# long units, 100-500 characters
LINE = "Declaro para os devidos fins que as informações prestadas neste formulário são verdadeiras e completas, sob as penas da lei.\n"
tail(PROSE, LINE, 6, cls="long_unit", name="a 125-char line repeated, cut mid-line", cut=40)
OBJ = json.dumps({"descricao": "Chapa galvanizada 2 mm", "quantidade": 12, "valor_unitario": "89,90", "total": "1078,80",
                  "ncm": "7210.49.10", "cfop": "5102", "unidade": "UN", "observacao": "entrega parcial conforme pedido 4471, saldo na próxima remessa"},
                 ensure_ascii=False) + ","
tail(HEAD, OBJ, 5, cls="long_unit", name="a ~270-char JSON object repeated exactly", cut=77)
PARA = (PROSE * 3)[:480]
tail("Resumo:\n", PARA, 4, cls="long_unit", name="a 480-char paragraph repeated", cut=200)
case("long line repeated mid-text, stopped", "long_unit", PROSE + LINE * 4 + "Assinado eletronicamente.", "stop", False, True, len(PROSE), len(LINE))

# templated rows and objects: only the numbers change, to the limit
rows = "| Descrição | Qtd | Valor |\n|---|---|---|\n| Porca sextavada | 2 | 3,10 |\n"
tail_rows = "".join(f"| Parafuso sextavado | {q} | 12,50 |\n" for q in range(3, 120))
case("markdown row, quantity counting up, to the limit", "templated", rows + tail_rows[:-9], "length", True, True, len(rows), 35)
body = HEAD + item("Porca sextavada", 2, 3.10) + ","
loop = ",".join(item("Parafuso sextavado", q, 12.50) for q in range(3, 60))
case("JSON item, same descricao, numbers change, cut mid-object", "templated", body + loop[:-23], "length", True, True, len(body), 90)
loop = ",".join(item("Parafuso sextavado", rnd.randint(1, 500), rnd.randint(100, 99999) / 100) for _ in range(40))
case("JSON item, same descricao, random numbers of varying width", "templated", body + loop[:-11], "length", True, True, len(body), 95)
dated = "".join(f"{rnd.randint(1, 28):02d}/{rnd.randint(1, 12):02d}/2024 Pagamento de fornecedor R$ {rnd.randint(10, 9999)},{rnd.randint(0, 99):02d}\n" for _ in range(60))
case("statement line, dates and amounts change", "templated", "Extrato\n" + dated, "length", True, True, 8, 50)
csv = "descricao;quantidade;valor\n" + "".join(f"Parafuso sextavado;{q};12,50\n" for q in range(1, 90))
case("CSV row, quantity counting, to the limit", "templated", csv[:-5], "length", True, True, 27, 28)
loop = "".join(f"| Parafuso sextavado | {q} | 12,50 |\n" for q in range(3, 25))
case("templated rows that ended, stopped", "templated", rows + loop + "\nTotal geral: 1.234,00", "stop", False, True, len(rows), 35)
loop = ",".join(item("Parafuso sextavado", q, 12.50) for q in range(3, 40))
# What the demo SFT models really emit: amounts change magnitude (10,00 / 1.400,00) and sizes change unit.
sizes, amounts = ["5mm", "50mm", "5mm", "50mm"], ["1,66", "10,60", "1.400,00", "10,00"]
fita = ",".join(
    '{"descricao":"Fita veda rosca %s","quantidade":%d,"valor_unitario":"%s","total":"%s"}'
    % (sizes[i % 4], (2, 20, 200)[i % 3], amounts[i % 2], amounts[2 if i % 3 == 0 or i % 7 == 0 else 3]) for i in range(30)
)
case("JSON rows, sizes and amounts of varying magnitude, cut inside a number", "templated",
     body + fita[: fita.rindex('"1,66') + 4], "length", True, True, len(body), 95)
case("JSON templated loop to the very end, finish unknown", "templated", body + loop, None, True, True, len(body), 90)
case("templated loop, finish repetition", "templated", body + loop[:-3], "repetition", True, True, len(body), 90)

# counting loops: a loop, never degeneration by default
case("item 1, item 2, ... to the limit", "counting", "Lista: " + "".join(f"item {i}, " for i in range(1, 200)), "length", False, True, 7, 8)
case("Linha N lines to the limit", "counting", "".join(f"Linha {i}\n" for i in range(1, 150)), "length", False, True, 0, 8)
case("counting mid-text, stopped", "counting", "Itens: " + "".join(f"item {i}, " for i in range(1, 40)) + "fim da lista.", "stop", False, True, 7, 8)
case("bare counting numbers to the limit", "counting", "".join(f"{i}.\n" for i in range(1, 300)), "length", False, True, 0, 3)

# CJK, no spaces
tail("这份文件列出了所有的项目和金额。", "我不知道。", 100, cls="cjk", name="Chinese phrase to the limit")
case("Chinese prose cut at the limit", "cjk", "本发票记载了供应商、买方以及所购商品的详细信息。" * 1 + "所有金额均已核对无误，没有发现任何差异。第三部分说明了付款条件和交货日期，请仔细阅读。", "length", False, False)
case("Japanese loop mid-text, stopped", "cjk", "お客様へ。" + "ありがとうございます。" * 20 + "以上です。", "stop", False, True, 5, 11)
tail("요약: ", "감사합니다 ", 60, cls="cjk", name="Korean phrase to the limit")

# emoji
tail("Reação: ", "😀", 200, cls="emoji", name="one emoji to the limit")
tail("Mensagem: ", "🎉 Parabéns! ", 30, cls="emoji", name="emoji phrase to the limit")
case("legit emoji-rich text", "emoji", "Ótimo trabalho 👍 equipe! 🎉 Entregamos 🚚 no prazo ⏱️ e com qualidade ✅.", "length", False, False)
tail("Família: ", "👨‍👩‍👧 ", 50, cls="emoji", name="ZWJ family emoji to the limit")

# right-to-left scripts
tail("النص: ", "مرحبا بكم ", 30, cls="rtl", name="Arabic phrase to the limit")
case("Hebrew legit text cut at the limit", "rtl", "המסמך כולל את פרטי הספק, הקונה והפריטים שנרכשו. כל הסכומים נבדקו מול החשבונית המקורית ולא נמצאו הבדלים.", "length", False, False)
tail("טקסט: ", "שלום עולם ", 30, cls="rtl", name="Hebrew phrase to the limit")

# combining accents
tail("Menu: ", "cafe\u0301 ", 50, cls="combining", name="decomposed café to the limit")
case("Vietnamese text with combining marks", "combining", "Tie\u0302\u0301ng Vie\u0323\u0302t co\u0301 nhie\u0302\u0300u da\u0302\u0301u. Ho\u0301a đơn đa\u0303 đươ\u0323c kie\u0302\u0309m tra.", "length", False, False)
tail("Marca: ", "a\u0308", 200, cls="combining", name="a + combining diaeresis to the limit")

# legit tables cut at the limit
table = "| Descrição | Qtd | Valor |\n|---|---|---|\n" + "".join(f"| {p} | {rnd.randint(1, 50)} | {rnd.randint(1, 999)},{rnd.randint(0, 99):02d} |\n" for p in PRODUCTS)
case("markdown table of different products cut at the limit", "legit_table", table[:-7], "length", False, False)
table = "".join(f"| {p} | UN | 1 | 10,00 |\n" for p in PRODUCTS)
case("table rows sharing unit and price, different products", "legit_table", table[:-4], "length", False, False)
border = "+----------------------+-----+\n"
table = border + "".join(f"| {p:<20} | {rnd.randint(1, 99):>3} |\n" + border for p in PRODUCTS)
case("ASCII table with border lines between rows", "legit_table", table[:-10], "length", False, False)
csv = "nome;cidade;valor\n" + "".join(f"{p};São Paulo;{rnd.randint(1, 999)},00\n" for p in PRODUCTS)
case("CSV with a repeated city column cut at the limit", "legit_table", csv[:-3], "length", False, False)

# lists
case("bullet list of products cut at the limit", "legit_list", "".join(f"- {p}\n" for p in PRODUCTS)[:-5], "length", False, False)
case("numbered list of products cut at the limit", "legit_list", "".join(f"{i}. {p}\n" for i, p in enumerate(PRODUCTS, 1))[:-5], "length", False, False)
case("list of e-mail addresses", "legit_list", "".join(f"{p.split()[0].lower()}{i}@empresa.com.br\n" for i, p in enumerate(PRODUCTS)), "length", False, False)

# JSON arrays of similar objects
body = HEAD + ",".join(item(p, rnd.randint(1, 40), rnd.randint(100, 99999) / 100) for p in PRODUCTS)
case("invoice with 30 different descricao cut at the limit", "legit_json", body[:-30], "length", False, False)
people = ",".join(json.dumps({"id": i, "nome": p, "ativo": True}, ensure_ascii=False) for i, p in enumerate(PRODUCTS, 1))
case("JSON array of records with different names", "legit_json", "[" + people[:-12], "length", False, False)
cpfs = ",".join(json.dumps({"cpf": f"{rnd.randint(0, 999):03d}.{rnd.randint(0, 999):03d}.{rnd.randint(0, 999):03d}-{rnd.randint(0, 99):02d}"}) for _ in range(60))
case("JSON array of CPF objects cut at the limit", "legit_json", "[" + cpfs[:-6], "length", False, False)
case("JSON array of numbers cut at the limit", "legit_json", "[" + ", ".join(str(rnd.randint(1, 100000)) for _ in range(200)), "length", False, False)

# separators
case("sections split by dashed lines", "separator", "".join(f"Seção {p}\n" + "-" * 40 + f"\n{p}: {PROSE}\n" for p in PRODUCTS[:3]), "stop", False, False)
toc = "".join(f"{p} {'.' * (40 - len(p))} {rnd.randint(1, 90)}\n" for p in PRODUCTS[:15])
case("table of contents with dot leaders", "separator", toc, "stop", False, False)
case("document ending in an 80-char rule at the limit", "separator", PROSE + "\n" + "=" * 80, "length", False, False)
case("markdown table separator row", "separator", "| a | b | c | d | e | f |\n|---|---|---|---|---|---|\n| 1 | 2 | 3 | 4 | 5 | 6 |", "stop", False, False)
case("underscore signature lines", "separator", "Assinatura: " + "_" * 60 + "\nTestemunha: " + "_" * 60 + "\nData: ____/____/______", "stop", False, False)

# repeated headers and footers
pages = "".join(f"FERRAGENS SILVA LTDA — CNPJ 12.345.678/0001-90\nRelatório de vendas\n\n{PRODUCTS[i]}: {PROSE}\nPágina {i + 1} de 4\n\f" for i in range(4))
case("pages with the same header and footer", "header_footer", pages, "stop", False, False)
case("pages with the same header and footer cut at the limit", "header_footer", pages[:-40], "length", False, False)

# bare number lists cut at the limit: not degenerate, not a loop
cpf_lines = "".join(f"{rnd.randint(0, 999):03d}.{rnd.randint(0, 999):03d}.{rnd.randint(0, 999):03d}-{rnd.randint(0, 99):02d}\n" for _ in range(80))
case("CPF list cut at the limit", "bare_numbers", cpf_lines[:-4], "length", False, False)
case("labelled CPF list cut at the limit", "bare_numbers", "".join(f"CPF: {x}\n" for x in cpf_lines.split())[:-3], "length", False, False)
case("product codes cut at the limit", "bare_numbers", "".join(f"COD-{rnd.randint(10000, 99999)}\n" for _ in range(80)), "length", False, False)
case("phone numbers cut at the limit", "bare_numbers", "".join(f"(11) 9{rnd.randint(1000, 9999)}-{rnd.randint(1000, 9999)}\n" for _ in range(60))[:-2], "length", False, False)
case("numbers of varying width cut at the limit", "bare_numbers", "".join(f"{rnd.randint(1, 10 ** rnd.randint(1, 9))}\n" for _ in range(150)), "length", False, False)

# short texts
case("OK at the limit", "short", "OK", "length", False, False)
case("Sim, stopped", "short", "Sim.", "stop", False, False)
case("ha ha ha at the limit", "short", "ha ha ha ha ha", "length", False, False)
case("empty text", "short", "", "length", False, False)
case("ten letters at the limit", "short", "aaaaaaaaaa", "length", False, False)

# loops inside outputs that still ended: loops, not degeneration
case("sentence looped mid-text, stopped", "mid_loop", PROSE + "Não sei. " * 20 + "De resto, tudo certo.", "stop", False, True, len(PROSE), 9)
case("exact JSON object repeated inside, closed properly", "mid_loop", HEAD + OBJ * 4 + item("Porca", 1, 1.0) + "]}", "stop", False, True, len(HEAD), len(OBJ))
case("tail loop but the model stopped", "mid_loop", PROSE + "Obrigado. " * 30, "stop", False, True, len(PROSE), 10)
case("tail loop to the very end, finish unknown", "mid_loop", PROSE + "Obrigado. " * 30, None, True, True, len(PROSE), 10)
case("loop then other text, finish unknown", "mid_loop", PROSE + "Obrigado. " * 30 + "Fim.", None, False, True, len(PROSE), 10)

# drifting loops: units repeated with small changes, letters too (issue 16's kinds; see tests/data/detect_corpus)
HEADS = ["RELATÓRIO ANUAL DE ATIVIDADES", "RELATORIO ANUAL DE ATIVIDADES", "RELATÓRIO ANUAL DE ATIVIDADE5",
         "RELATÓRIO ANUAL DE ATlVIDADES", "RELATÓRIO ANUAL OE ATIVIDADES", "RELATÓRlO ANUAL DE ATIVIDADES"]
drift_head = PROSE + "\n" + "".join(f"## {rnd.choice(HEADS)}\n" for _ in range(30))
case("OCR heading re-read with a letter changing, to the limit", "drifting", drift_head[:-9], "length", True, True, kind="drifting")
cycle = ["Fita veda rosca 3/4", "Fita veda rosca 5mm", "Fita dupla face"]
drift_rows = HEAD + ",".join(
    '{"descricao":"%s","quantidade":%d,"valor_unitario":"%s","total":"%s"}' % (
        cycle[i % 3], rnd.choice([2, 10]), rnd.choice(["1,20", "1,60", "1,2,0"]), rnd.choice(["1,60", "12,60", "1,40"]))
    for i in range(30))
case("invoice rows cycling over three descriptions, values recurring, cut mid-object", "drifting", drift_rows[:-23], "length", True, True)
misread = ["| Mangueira cristal 3/4 | 2 | 1,60 |", "| Mangueira cristal 3/4 | 2 | 1,60 |", "| Mangueira cristai 3/4 | 2 | 1,60 |",
           "| Mangueira crista1 3/4 | 2 | 1,60 |", "| Manqueira cristal 3/4 | 2 | 1,60 |"]
md_drift = "| Descrição | Qtd | Valor |\n|---|---|---|\n" + "".join(rnd.choice(misread) + "\n" for _ in range(40))
case("markdown row re-read with spelling drift, to the limit", "drifting", md_drift[:-14], "length", True, True)
case("drifting rows that ended, stopped", "drifting", md_drift + "\nTotal: 64,00", "stop", False, True)

# letterless templates: no letters at all, looping to the limit
srt = "".join(f"{i}\n00:{i * 2 // 60:02d}:{i * 2 % 60:02d},000 --> 00:{(i * 2 + 2) // 60:02d}:{(i * 2 + 2) % 60:02d},000\n\n" for i in range(1, 90))
case("subtitle cues with a counter and a time range and nothing else, to the limit", "letterless", "1\n00:00:00,000 --> 00:00:02,000\nBom dia.\n\n" + srt[:-17],
     "length", True, True)
stamps = "".join(f"<|{t:.2f}|><|{t + 2:.2f}|>" for t in range(0, 400, 2))
case("timestamp tokens advancing with nothing between, to the limit", "letterless", stamps[:-5], "length", True, True)
case("two codes cycling, to the limit", "letterless", "Códigos:\n" + "A1-B2\nC3-D4\n" * 30, "length", True, True)

# short units cut at the limit: under min_chars, but degenerate
case("one CJK character 40 times at the limit", "short_limit", "回答：" + "的" * 40, "length", True, True, kind="short")
case("ok ok ok at the limit", "short_limit", "Status: " + "ok " * 20, "length", True, True)

# a long period: a whole reasoning paragraph repeated
para = " ".join(f"Passo {i}: conferimos {p.lower()} contra a nota e anotamos a diferença encontrada no campo {i}." for i, p in enumerate(PRODUCTS[:14]))
case("a 1,300-char paragraph repeated, cut at the limit", "long_period", PROSE + (para + "\n") * 4, "length", True, True)

# a loop cut mid-word that the server reported as stop
case("tail loop cut mid-word, reported as stop", "stop_reported", PROSE + "Obrigado. " * 30 + "Obrig", "stop", True, True)

# repeated structures that carry new information: not loops
log = "".join(f"Epoch {e}/50 - loss: {0.9 * 0.93 ** e + rnd.random() * 0.01:.4f} - accuracy: {1 - 0.5 * 0.9 ** e:.4f} - lr: 1e-04\n" for e in range(1, 51))
case("training log, epochs with new numbers, cut at the limit", "log_like", log[:-20], "length", False, False)
paths = "".join(f"/data/scans/2024/lote_07/pagina_{i:06d}.png\n" for i in range(1, 80))
case("paths with a sequential trailing id, cut at the limit", "log_like", paths[:-9], "length", False, True)  # an enumeration
keys = "".join(f"s3://ocr-bucket/raw/run-{rnd.randint(10000, 99999)}/pagina.png\n" for _ in range(60))
case("object keys with a random id, cut at the limit", "log_like", keys[:-12], "length", False, True)  # an enumeration
chorus = "E a gente canta junto, canta a noite inteira,\nque amanhã é domingo e a vida é brincadeira.\n"
verses = ["Acordei cedo, o sol batia na janela,\nfiz um café e pensei logo nela.\n",
          "Passei na praça, tinha feira e tinha banda,\no povo dançando uma ciranda.\n",
          "Voltei pra casa com a lua lá no alto,\nsapato na mão, descalço no asfalto.\n"]
song = "".join(v + chorus * 2 for v in verses)
case("song with a refrain, cut mid-verse at the limit", "log_like", song + verses[0][:30], "length", False, False)

names = [c["name"] for c in cases]
assert len(names) == len(set(names)), "case names must be unique"
OUT.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in cases), encoding="utf-8")
print(f"{len(cases)} cases written to {OUT}")
