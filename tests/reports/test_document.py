"""Tables in the paper's layouts rendered to Markdown, LaTeX, HTML and CSV; best / second marks;
seed groups, interval overlap notes and gaps; figures that are the same bytes for the same data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from decodiff.reports.build import build_comparison_report, build_run_report, category_comparison, summary_table
from decodiff.reports.document import Report, Row, Section, Table, Value, value_text
from decodiff.reports.entries import entry_from_published, entry_from_runs, group_by_setting, overlaps
from decodiff.reports.figures import qualitative_figure, roc_pr_figure, roc_pr_points, sweep_figure
from decodiff.reports.highlight import ranks
from decodiff.reports.html import render_html
from decodiff.reports.latex import escape, table_latex
from decodiff.reports.markdown import table_markdown
from decodiff.reports.rundata import RunData
from decodiff.reports.write import table_frame, write_report_files


def test_ranks_follow_the_printed_value():
    assert ranks([0.9, 0.8, 0.95, None]) == [2, None, 1, None]
    assert ranks([0.98611, 0.98649, 0.97]) == [1, 1, 2]  # both print 98.6: a tie for best
    assert ranks([0.5, None]) == [None, None]  # a lone value is best of nothing
    assert ranks([0.2, 0.1, 0.3], higher_is_better=False) == [2, 1, None]


def _table(rank="column") -> Table:
    rows = [
        Row("a_1", [[Value(0.9)], [Value(0.5, std=0.01, n=3)]]),
        Row("b", [[Value(0.95)], [Value(None)]], kind="published"),
        Row("c", [[Value(0.7)], [Value(0.4, low=0.3, high=0.5)]]),
    ]
    return Table(
        "t",
        "Caption 100%",
        "Method",
        ["AUROC", "AUPRO"],
        rows,
        groups=[("Image-level", 1), ("Pixel-level", 1)],
        rank=rank,
        intervals=True,
    )


def test_marks_per_column_and_per_row():
    t = _table()
    assert [[m[0] for m in r] for r in t.marks()] == [[2, 1], [1, None], [None, 2]]
    t.rank = "row"
    assert [[m[0] for m in r] for r in t.marks()] == [[1, 2], [None, None], [1, 2]]


def test_markdown_bold_underline_headers_and_gaps():
    md = table_markdown(_table())
    lines = md.splitlines()
    assert lines[2] == "| Method | Image AUROC | Pixel AUPRO |"
    assert "| a_1 | <ins>90.0</ins> | **50.0** ± 1.0 |" in md
    assert "| b | **95.0** | — |" in md
    assert "| c | 70.0 | <ins>40.0</ins> [30.0, 50.0] |" in md


def test_latex_escapes_and_marks():
    tex = table_latex(_table())
    assert r"\multicolumn{1}{c}{Image-level}" in tex and r"\cmidrule(lr){2-2}" in tex
    assert r"a\_1 & \underline{90.0} & \textbf{50.0} $\pm$ 1.0 \\" in tex
    assert r"Caption 100\%" in tex and "--" in tex
    assert escape("x_{1} & 5% #") == r"x\_\{1\} \& 5\% \#"


def test_html_is_escaped_and_marked():
    t = _table()
    t.rows[0].label = "<script>"
    html = render_html(Report("R & D", [("k", "v<")], [Section("S", [t])]))
    assert "&lt;script&gt;" in html and "<script>" not in html
    assert "<b>95.0</b>" in html and "<u>90.0</u>" in html and 'class="published"' in html
    assert "<title>R &amp; D</title>" in html


def test_value_text():
    assert value_text(Value(0.1234, std=0.005, n=2)) == ("12.3", " ± 0.5")
    assert value_text(Value(0.1234, std=0.005, n=1)) == ("12.3", "")
    assert value_text(Value(None, low=0.1, high=0.2), intervals=True) == ("—", "")
    assert value_text(Value(7.0, count=True)) == ("7", "")


def test_csv_keeps_numbers_std_intervals_and_source(tmp_path):
    df = table_frame(_table())
    assert list(df.columns[:4]) == ["Method", "source", "Image AUROC", "Pixel AUPRO"]
    assert df.loc[0, "Pixel AUPRO std"] == pytest.approx(1.0) and df.loc[0, "Pixel AUPRO seeds"] == 3
    assert df.loc[2, "Pixel AUPRO low"] == pytest.approx(30.0) and pd.isna(df.loc[1, "Pixel AUPRO"])
    assert df["source"].tolist() == ["measured", "published", "measured"]
    fig = roc_pr_figure({"a": roc_pr_points(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))}, "x")
    from decodiff.reports.document import Figure

    report = Report("T", [], [Section("S", [_table(), Figure("f", "cap", fig)])])
    path = write_report_files(report, tmp_path)
    assert path == tmp_path / "report.md"
    assert sorted(p.name for p in (tmp_path / "tables").iterdir()) == ["t.csv", "t.tex"]
    assert (tmp_path / "figures" / "f.png").read_bytes() == fig
    assert not list(tmp_path.rglob(".*.tmp"))
    assert "![cap](figures/f.png)" in path.read_text()


def _run(name: str, seed: int, shift: float, dataset: str = "mvtec", gamma: str = "0.4") -> RunData:
    recs = []
    for cat, base in (("bottle", 0.9), ("cable", 0.8)):
        for level, metrics in (("image", ("auroc", "auprc", "f1max")), ("pixel", ("auroc", "auprc", "f1max", "aupro"))):
            for m in metrics:
                recs.append({"dataset": dataset, "category": cat, "level": level, "metric": m, "value": base + shift})
    for level, metrics in (("image", ("auroc", "auprc", "f1max")), ("pixel", ("auroc", "auprc", "f1max", "aupro"))):
        for m in metrics:
            recs.append({"dataset": dataset, "category": "mean", "level": level, "metric": m, "value": 0.85 + shift})
    params = {"run.seed": str(seed), "run.name": name, "infer.gamma_p": gamma, "run.out_dir": f"/x/{name}"}
    return RunData(name=name, title=name, dataset=dataset, records=recs, params=params)


def test_seeds_are_averaged_and_settings_labelled():
    runs = [_run("a", 0, 0.0), _run("b", 1, 0.02), _run("c", 0, 0.05, gamma="0.2")]
    groups = group_by_setting(runs)
    assert [(label, [r.name for r in members]) for label, members in groups] == [
        ("infer.gamma_p=0.4 (2 runs, seeds 0, 1)", ["a", "b"]),
        ("infer.gamma_p=0.2", ["c"]),
    ]
    e = entry_from_runs(*groups[0])
    v = e.value(("mean", "pixel", "aupro"))
    assert v.mean == pytest.approx(0.86) and v.std == pytest.approx(np.std([0.85, 0.87], ddof=1)) and v.n == 2
    assert overlaps(v, Value(0.861, std=0.001, n=2)) and not overlaps(
        Value(0.5, low=0.4, high=0.6), Value(0.7, low=0.65, high=0.8)
    )


def test_comparison_report_with_published_and_unresolved_differences():
    runs = [_run("a", 0, 0.0), _run("b", 1, 0.001)]
    runs[1].params["infer.gamma_p"] = "0.2"
    for r, lo in zip(runs, (0.80, 0.81)):
        r.intervals = [{"category": "mean", "level": "pixel", "metric": "aupro", "low": lo, "high": lo + 0.1}]
    rep = build_comparison_report("cmp", [], runs, [("ghost", "mvtec", "not found")], compare_published=True)
    summary = [t for t in rep.tables() if t.name == "summary_mvtec"][0]
    assert [r.kind for r in summary.rows] == ["measured", "measured", "missing"] + ["published"] * 9
    text = render_html(rep)
    assert "pixel AUPRO: infer.gamma_p=0.4 (85.0) and infer.gamma_p=0.2 (85.1) differ by 0.1 points" in text
    assert "ghost (missing): not found" in text
    pixel = [t for t in rep.tables() if t.name == "pixel_categories_mvtec"][0]
    assert [r.label for r in pixel.rows][:3] == ["bottle", "cable", "capsule"] and pixel.rows[-1].label == "Average"
    assert pixel.columns[:2] == ["infer.gamma_p=0.4", "infer.gamma_p=0.2"] and pixel.columns[-1].startswith("DeCo-Diff")


def test_published_entry_marks_the_papers_own_inconsistencies():
    e = entry_from_published("visa", "MoEAD")
    assert e.value(("mean", "pixel", "auprc")).mark == "‡" and e.value(("mean", "image", "auroc")).mark == ""
    assert e.value(("pcb1", "pixel", "aupro")).mean == pytest.approx(0.920)
    t = summary_table([e, entry_from_published("visa", "MambaAD")], "visa", "s", "c")
    assert t.rows[0].label == "MoEAD (ECCV'24)†"


def test_run_report_without_published_numbers_says_why():
    run = _run("a", 0, 0.0, dataset="demo")
    rep = build_run_report(run, published_dataset="demo")
    from decodiff.reports.markdown import render_markdown

    assert "publishes no numbers for dataset 'demo'" in render_markdown(rep)
    t = category_comparison([entry_from_runs("a", [run])], "demo", "image", "x", "c")
    assert [r.label for r in t.rows] == ["bottle", "cable", "Average"]


def test_figures_are_the_same_bytes_for_the_same_data():
    pts = roc_pr_points(np.array([0.1, 0.4, 0.35, 0.8, 0.8]), np.array([0, 0, 1, 1, 0]))
    assert pts["fpr"].tolist() == [0.0, 1 / 3, 2 / 3, 2 / 3, 1.0] and pts["tpr"].tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    a = roc_pr_figure({"x": pts}, "t")
    assert a == roc_pr_figure({"x": pts}, "t") and a[:8] == b"\x89PNG\r\n\x1a\n"
    rng = np.random.default_rng(0)
    item = {
        "role": "best",
        "key": "bottle/test/broken/000",
        "score": 0.5,
        "input": rng.integers(0, 255, (16, 16, 3), dtype=np.uint8),
        "reconstruction": np.zeros((16, 16, 3), np.uint8),
        "mask": np.eye(16, dtype=np.uint8),
        "map": rng.random((16, 16)).astype(np.float16),
    }
    assert qualitative_figure("bottle", [item]) == qualitative_figure("bottle", [item])
    # a score that is not the shown map's maximum (infer.image_map=latent) says so in the title
    assert qualitative_figure("bottle", [{**item, "score_of": "latent part"}]) != qualitative_figure("bottle", [item])
    assert qualitative_figure("bottle", [{**item, "score_of": "map"}]) == qualitative_figure("bottle", [item])
    series = {"": [[(1, 0.5, 0.1), (2, 0.6, None)]] * 7}
    assert sweep_figure("k", series, [str(i) for i in range(7)], "t")[:4] == b"\x89PNG"
