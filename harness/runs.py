"""Run folders: where a run's config, provenance, tables and report live."""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

from decodiff.datasets.files import write_atomic, write_json_atomic
from decodiff.harness.config import Config, ConfigError, to_yaml
from decodiff.harness.provenance import code_version, environment


def check_folders(cfg: Config) -> None:
    """run.out_dir and run.cache_dir must be folders (or not exist yet): said before any work."""
    for key, value in (("run.out_dir", cfg.run.out_dir), ("run.cache_dir", cfg.run.cache_dir)):
        p = Path(value)
        if p.exists() and not p.is_dir():
            raise ConfigError(f"bad config value '{key}': {value} is a file, expected a folder")


def new_run_dir(cfg: Config, kind: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(cfg.run.out_dir) / f"{cfg.run.name}-{kind}-{stamp}-{secrets.token_hex(2)}"
    path.mkdir(parents=True, exist_ok=False)
    return path


def write_run_files(run_dir: Path, cfg: Config, extra: dict[str, Any]) -> dict[str, Any]:
    """config.yaml (resolved) and provenance.json: code version, environment, data checksums."""
    write_atomic(run_dir / "config.yaml", to_yaml(cfg))
    prov = {"code_version": code_version(), "config_digest": cfg.digest(), "environment": environment(), **extra}
    write_json_atomic(run_dir / "provenance.json", prov)
    return prov


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    write_json_atomic(run_dir / "summary.json", summary)
