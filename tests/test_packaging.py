"""Every package folder is listed in pyproject.toml (the folders install under `decodiff.`)."""

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"harness", "models", "datasets", "reports", "jobs", "configs"}


def test_every_package_is_listed():
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(conf["packages"])
    found = set()
    for top in FOLDERS:
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT).parts
            found.add("decodiff." + ".".join(rel))
    assert found - listed == set(), f"add these to [tool.setuptools] packages: {sorted(found - listed)}"
    assert all(conf["package-dir"][f"decodiff.{t}"] == t for t in FOLDERS)


def test_no_top_level_datasets_package_shadows_hugging_face():
    import decodiff.datasets

    assert decodiff.datasets.__name__ == "decodiff.datasets"
    import importlib.util

    spec = importlib.util.find_spec("datasets")
    assert spec is None or "decodiff" not in (spec.origin or "")
