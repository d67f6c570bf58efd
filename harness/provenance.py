"""What makes a result traceable: the code version, the environment and the data checksums."""

from __future__ import annotations

import platform
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str:
    """What a git command in the package's checkout prints (SubprocessError when it fails)."""
    return subprocess.run(
        ["git", "-C", str(PACKAGE_ROOT), *args], capture_output=True, text=True, timeout=5, check=True
    ).stdout.strip()


@lru_cache(maxsize=1)
def code_version() -> str:
    """`<version>+g<commit>[.dirty]` in a git checkout, else the installed version."""
    try:
        version = metadata.version("decodiff-bench")
    except metadata.PackageNotFoundError:
        version = "unknown"
    try:
        commit = _git("rev-parse", "--short=12", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
        return f"{version}+g{commit}{'.dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return version


def environment() -> dict[str, Any]:
    import torch  # 0.7 s: code_version() callers (reports, scores) start without it

    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0,
    }
    for pkg in ("accelerate", "diffusers", "webdataset", "mlflow", "ray", "scikit-learn", "numpy"):
        try:
            env[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return env
