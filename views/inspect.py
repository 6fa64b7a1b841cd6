"""Inspect: paste or pick a text and see its loops, the degeneration verdict and the metrics."""

import streamlit as st

from core.policy.detect import analyze
from core.present.render import md_escape, render_text_html
from views._ui import dataframe

_ROW = "| Parafuso sextavado | {q} | 12,50 |\n"
EXAMPLES = {
    "Templated table row to the limit": (
        "| Descrição | Qtd | Valor |\n|---|---|---|\n| Porca sextavada | 2 | 3,10 |\n"
        + "".join(_ROW.format(q=q) for q in range(3, 90))[:-6],
        "length",
    ),
    "Legit invoice cut at the limit": (
        "| Descrição | Qtd | Valor |\n|---|---|---|\n"
        + "".join(f"| {p} | {i + 1} | {7 * i + 3},50 |\n" for i, p in enumerate(
            ["Parafuso sextavado", "Porca sextavada", "Arruela lisa", "Chapa galvanizada", "Tubo de aço",
             "Cabo flexível", "Fio de cobre", "Tinta acrílica", "Lixa d'água", "Broca de vídea"]))[:-4],
        "length",
    ),
    "Sentence loop that still ended": ("Resumo do documento. " + "Não foi possível ler o campo. " * 12 + "Fim.", "stop"),
    "Whitespace to the limit": ("Observações:" + "\n" * 400, "length"),
    "Invoice rows drifting to the limit": (
        '{"itens":[' + "".join(f'{{"descricao":"Fita {d}","quantidade":{q},"valor_unitario":"1,{v}0","total":"1{v},60"}},'
                               for d, q, v in zip("veda rosca 3/4|dupla face|veda rosca 5mm|veda rosca 3/4|dupla face 5mm|veda rosca 3/4|"
                                                  "veda rosca 5mm|dupla face|veda rosca 3/4|veda rosca 5mm|dupla face|veda rosca 3/4|"
                                                  "dupla face 5mm|veda rosca 5mm|veda rosca 3/4|dupla face|veda rosca 5mm".split("|"),
                                                  [2, 10, 2, 2, 10, 1, 2, 10, 2, 2, 10, 1, 10, 2, 2, 10, 2], "26226226226262622"))[:-9],
        "length",
    ),
    "Heading re-read with a letter changing": (
        "# RELATÓRIO ANUAL DE ATIVIDADES\n" + "".join(f"## {h}\n" for h in [
            "RELATORIO ANUAL DE ATIVIDADES", "RELATÓRIO ANUAL DE ATIVIDADE5", "RELATÓRIO ANUAL DE ATlVIDADES",
            "RELATÓRIO ANUAL DE ATIVIDADES", "RELATÓRlO ANUAL DE ATIVIDADES", "RELATÓRIO ANUAL OE ATIVIDADES",
            "RELATÓRIO ANUAL DE ATIVIDADES", "RELATORIO ANUAL DE ATIVIDADES", "RELATÓRIO ANUAL DE ATIVIDADE5",
            "RELATÓRlO ANUAL DE ATIVIDADES", "RELATÓRIO ANUAL DE ATIVIDADES", "RELATÓRIO ANUAL OE ATIVIDADES"])[:-7],
        "length",
    ),
    "Model text with HTML": ('<script>alert("x")</script> & <img src=x onerror=alert(1)> ' * 6, "length"),
}
REASONS = ["length", "stop", "repetition", "unknown"]

st.title("Inspect")
st.caption("Paste a model output (or pick an example) to see its repetition loops and whether it degenerated.")

choice = st.selectbox("Example", ["(paste your own)", *EXAMPLES], key="example")
if choice in EXAMPLES and st.session_state.get("loaded") != choice:
    st.session_state["text"], st.session_state["finish"] = EXAMPLES[choice]
    st.session_state["loaded"] = choice

text = st.text_area("Model output", key="text", height=200)
finish = st.selectbox("finish_reason", REASONS, key="finish", help="unknown: degenerate only if the tail loop runs to the very end")

if text:
    result = analyze(text, None if finish == "unknown" else finish)
    why = md_escape(result.why() or "", 300)
    if result.degenerate:
        st.error(f"Degenerate: stopped by {finish} inside a loop — {why}.", icon=":material/repeat:")
    elif result.has_loop:
        st.warning(f"Not degenerate, but {len(result.loops)} loop(s) found; the longest — {why}.", icon=":material/warning:")
    else:
        st.success("Not degenerate: no loop found.", icon=":material/check_circle:")
    if result.note:
        st.info(md_escape(result.note, 300), icon=":material/info:")
    if result.loops:
        dataframe(
            [{"kind": lp.kind, "start": lp.start, "end": lp.end, "period": lp.period, "repeats": lp.repeats,
              "drift": lp.drift if lp.kind == "drifting" else None, "at_tail": lp.at_tail, "unit": lp.unit[:80]}
             for lp in result.loops],
            hide_index=True,
        )
    st.html(render_text_html(text, result.loops))
    cols = st.columns(4)
    for col, key in zip(cols, ["compression_ratio", "tail_loop_coverage", "seq_rep_4", "distinct_2"]):
        col.metric(key, result.metrics[key])
    with st.expander("All metrics"):
        st.json(result.metrics)
