"""The run's records: what a sweep records about the software and machine it ran on (sweep.json, every trial row)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["environment"]


def environment() -> dict[str, Any]:
    """Versions, hardware and git commit (``-dirty`` with uncommitted changes), for sweep.json and every trial row.
    Computed once per run."""
    import importlib.metadata as md

    versions = {}
    for pkg in ("raysweep", "torch", "ray", "optuna", "segmentation-models-pytorch", "pyarrow", "numpy"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=here).stdout.strip() or None
        if commit and subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                     text=True, timeout=10, cwd=here).stdout.strip():
            commit += "-dirty"
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"versions": versions, "python": sys.version.split()[0], "platform": platform.platform(),
            "cpus": os.cpu_count(), "git_commit": commit}
