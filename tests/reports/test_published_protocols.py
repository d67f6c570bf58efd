"""--compare-published says when a run's recipe, AUPRO protocol or image labels differ from those
behind the published column it sits beside (reports/published/column_protocols.csv)."""

from __future__ import annotations

from decodiff.reports import published
from decodiff.reports.build import build_comparison_report, build_run_report
from decodiff.reports.markdown import render_markdown
from decodiff.reports.rundata import RunData

RECIPE_WARNING = (
    "Run r1 used recipe 'custom', while the published DeCo-Diff column comes from recipe 'paper' "
    '(README "Recipes"): the difference is not only the data or the method.'
)
AUPRO_WARNING = (
    "Run r1 scored AUPRO with protocol 'mvtec', while the published DeCo-Diff AUPRO comes from "
    "'deco-diff-code' (metrics.aupro_protocol): the AUPRO values are not computed the same way."
)


def _run(params: dict[str, str], provenance: list[tuple[str, str]] | None = None) -> RunData:
    recs = [
        {"dataset": "mvtec", "category": c, "level": lv, "metric": m, "value": 0.9}
        for c in ("bottle", "mean")
        for lv, ms in (("image", ("auroc", "auprc", "f1max")), ("pixel", ("auroc", "auprc", "f1max", "aupro")))
        for m in ms
    ]
    return RunData(name="r1", title="r1", dataset="mvtec", records=recs, params=params, provenance=provenance or [])


def test_the_published_columns_name_their_recipe_and_protocol():
    cols = published.column_protocols()
    assert set(cols) == set(published.METHODS)
    deco = cols["DeCo-Diff"]
    assert (deco.recipe, deco.aupro_protocol, deco.image_label) == ("paper", "deco-diff-code", "mask-max")
    assert all(c.recipe == "" and c.aupro_protocol == "unknown" for m, c in cols.items() if m != "DeCo-Diff")


def test_a_custom_run_with_the_mvtec_aupro_is_flagged_beside_the_paper():
    run = _run({"recipe": "custom", "metrics.aupro_protocol": "mvtec", "metrics.image_label": "metadata"})
    text = render_markdown(build_run_report(run, "mvtec"))
    assert RECIPE_WARNING in text and AUPRO_WARNING in text
    assert "labels images by 'metadata', while the published DeCo-Diff image metrics use 'mask-max'" in text
    assert "how their AUPRO and image labels were computed is not stated there" in text
    comparison = render_markdown(build_comparison_report("T", [], [run], compare_published=True))
    assert RECIPE_WARNING in comparison and AUPRO_WARNING in comparison
    assert RECIPE_WARNING not in render_markdown(build_run_report(run))  # nothing published beside it: no warning


def test_a_paper_recipe_run_is_not_flagged_but_its_departures_are_named():
    same = {"recipe": "paper", "metrics.aupro_protocol": "deco-diff-code", "metrics.image_label": "mask-max"}
    text = render_markdown(build_run_report(_run(same), "mvtec"))
    assert "used recipe" not in text and "scored AUPRO with protocol" not in text and "labels images by" not in text
    line = "paper; departs in infer.gamma_l=0.2 (paper: 0.4)"
    text = render_markdown(build_run_report(_run(same, [("recipe", line)]), "mvtec"))
    assert "Run r1 departs from recipe 'paper': infer.gamma_l=0.2 (paper: 0.4)." in text
    # a run made before recipes existed counts as custom
    assert "used recipe 'custom'" in render_markdown(
        build_run_report(_run({"metrics.aupro_protocol": "mvtec"}), "mvtec")
    )
