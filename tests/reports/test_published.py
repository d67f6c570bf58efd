"""The transcription of the paper's tables (reports/published/*.csv): every Average row against
the mean of its category rows, the main tables against the appendix, the ablations' reference
rows against Table 1, the main tables' printed margins against our best/second ranking; each
disagreement the paper itself contains is a named exception in known_inconsistencies.csv, and
the test fails on any other (a transcription error) or on an exception that no longer occurs."""

from __future__ import annotations

import pandas as pd
import pytest

from decodiff.reports import published as P
from decodiff.reports.highlight import ranks

# Average rows: each printed value has up to 0.05 of rounding, and so has the mean of the rounded
# category values.
ROUNDING = 0.1 + 1e-9


def _exceptions(check: str) -> set[tuple[str, str, str, str]]:
    known = P.known_inconsistencies()
    out = set()
    for _, r in known[known["check"] == check].iterrows():
        for cell in str(r["cells"]).split(";"):
            out.add((r["dataset"], r["method"], *cell.split("_", 1)))
    return out


def test_shipped_tables_have_every_method_category_and_metric():
    for (dataset, _level), (name, _) in P.CATEGORY_TABLES.items():
        df = P.read_csv(name)
        n_cats = {"mvtec": 15, "visa": 12}[dataset]
        assert df["category"].nunique() == n_cats + 1, name  # + average
        assert df["method"].nunique() == 8, name  # the appendix has no RD4AD
        assert len(df) == (n_cats + 1) * 8, name
        assert not df.drop(columns="group").isna().any().any(), name
        assert ((df.select_dtypes("number") >= 0) & (df.select_dtypes("number") <= 100)).all().all(), name
    assert P.methods_for("mvtec") == list(P.METHODS)
    assert P.methods_for("visa") == list(P.METHODS)
    assert "MoEAD" not in P.methods_for("mpdd") and "GLAD" in P.methods_for("mpdd")
    assert "GLAD" not in P.methods_for("realiad") and len(P.methods_for("realiad")) == 7
    assert set(P.category_groups("mvtec").values()) == {"objects", "textures"}
    assert set(P.category_groups("visa").values()) == {"complex structure", "multiple instances", "single instance"}
    assert len(P.ablations()) == 7 + 5 + 5 + 17


def test_average_rows_match_the_mean_of_their_categories_except_named():
    found = set()
    for (dataset, level), (name, _) in P.CATEGORY_TABLES.items():
        df = P.read_csv(name)
        metrics = [c for c in df.columns if c not in ("category", "group", "method")]
        for method, g in df.groupby("method"):
            avg = g[g["category"] == "average"].iloc[0]
            cats = g[g["category"] != "average"]
            for m in metrics:
                if abs(cats[m].mean() - avg[m]) > ROUNDING:
                    found.add((dataset, method, level, m))
    assert found == _exceptions("average")


def test_main_tables_repeat_the_appendix_averages_except_named():
    found = set()
    for (dataset, level), (name, _) in P.CATEGORY_TABLES.items():
        avg = P.read_csv(name).query("category == 'average'").set_index("method")
        summary = P.read_csv(P.SUMMARY_TABLES[dataset][0]).query("dataset == @dataset").set_index("method")
        for method in avg.index:
            for m in [c for c in avg.columns if c not in ("category", "group")]:
                if abs(summary.loc[method, f"{level}_{m}"] - avg.loc[method, m]) > 1e-9:
                    found.add((dataset, method, level, m))
    assert found == _exceptions("summary")


def test_ablation_reference_rows_equal_table1():
    table1 = P.summary("mvtec").query("method == 'DeCo-Diff'")
    ref = {f"{r.level}_{r.metric}": r.value for r in table1.itertuples()}
    reference_rows = [
        r
        for r in P.ablations()
        if r.default or r.label in ("zt-1, 5 steps", "geometric mean (Eq. 15)", "UNet-L (395M)")
    ]
    assert (
        len(reference_rows) == 1 + 1 + 1 + 4
    )  # one each in Tables 3, 4, appendix Table 1; four defaults in appendix Table 2
    assert {r.table for r in reference_rows} == set(P.ABLATION_TABLES.values())
    for row in reference_rows:
        for col, v in row.values.items():
            assert v == pytest.approx(ref[col]), (row.table, row.label, col)
    # the one illegible cell group is empty, not guessed
    patch124 = [r for r in P.ablations() if r.label == "patch size set [1, 2, 4]"][0]
    assert [patch124.values[c] for c in ("image_auroc", "image_auprc", "image_f1max")] == [None] * 3
    assert _exceptions("illegible") == {("mvtec", "DeCo-Diff", "image", m) for m in ("auroc", "auprc", "f1max")}


# The grey margins printed under DeCo-Diff in Tables 1 and 2 (its value minus the best other
# method's, or minus the second where DeCo-Diff is best).
MARGINS = {
    "mvtec": {
        "image_auroc": 0.7,
        "image_auprc": 0.2,
        "image_f1max": 0.7,
        "pixel_auroc": 0.7,
        "pixel_auprc": 14.1,
        "pixel_f1max": 9.0,
        "pixel_aupro": 1.8,
    },
    "visa": {
        "image_auroc": 2.1,
        "image_auprc": 1.7,
        "image_f1max": 2.4,
        "pixel_auroc": -0.2,
        "pixel_auprc": 11.7,
        "pixel_f1max": 7.2,
        "pixel_aupro": 0.1,
    },
}


@pytest.mark.parametrize("dataset", ["mvtec", "visa"])
def test_printed_margins_follow_from_the_transcribed_values(dataset):
    wide = P.read_csv(P.SUMMARY_TABLES[dataset][0]).set_index("method")
    for col, margin in MARGINS[dataset].items():
        others = wide.drop(index="DeCo-Diff")[col]
        assert round(wide.loc["DeCo-Diff", col] - others.max(), 1) == pytest.approx(margin), col
        # our highlighting marks DeCo-Diff best wherever its margin is positive
        r = ranks(list(wide[col] / 100.0))
        assert (r[list(wide.index).index("DeCo-Diff")] == 1) == (margin > 0), col


def test_records_are_fractions_in_the_results_contract():
    recs = P.records("visa", "MambaAD")
    df = pd.DataFrame(recs)
    assert set(df.columns) == {"dataset", "category", "level", "metric", "value"}
    assert df["value"].between(0, 1).all()
    assert len(df) == 12 * 3 + 12 * 4 + 7  # categories x metrics + the Table 2 mean row
    mean = df.query("category == 'mean' and level == 'pixel' and metric == 'aupro'")["value"].item()
    assert mean == pytest.approx(0.910)
    # a method without per-category values (RD4AD) still has its summary
    assert {r["category"] for r in P.records("mvtec", "RD4AD")} == {"mean"}
    assert P.records("demo", "RD4AD") == []


def test_ablation_rows_match_trial_overrides():
    rows = P.matching_ablations({"infer.gamma_p": 0.4, "infer.gamma_l": None, "run.seed": 3})
    assert [r.label for r in rows] == ["gamma_p / gamma_l 0.4 / none"]
    rows = P.matching_ablations({"process.patch_sizes": [1, 2, 4, 8, 16], "process.patch_probs": [0.3] * 5})
    assert [r.table for r in rows] == ["appendix Table 2"]
    assert P.matching_ablations({"model.size": "tiny"}) == []
    assert [r.label for r in P.matching_ablations({"infer.combination": "arithmetic"})] == ["arithmetic mean"]
