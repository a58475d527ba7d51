"""Provenance written next to results: config, seeds, package versions, git commit, machine."""

from __future__ import annotations

import json
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from segdiff.core.atomic import atomic_path

__all__ = ["PACKAGES", "collect_provenance", "write_provenance"]

PACKAGES = ("segdiff", "snakemake", "torch", "monai", "nibabel", "numpy", "pandas", "scipy", "scikit-image",
            "pytorch-fid", "matplotlib", "pillow")


def _git_commit(repo: Path) -> str:
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return commit + ("-dirty" if dirty else "")


def collect_provenance(config: dict[str, Any], repo: str | Path) -> dict[str, Any]:
    """What a run was made with.

    Args:
        config: the validated configuration.
        repo: the checkout whose git commit is recorded (``-dirty`` with uncommitted changes).

    Returns:
        Creation time, git commit, seed, config, package versions, Python, platform and device.
    """
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    device = "cpu"
    try:
        import torch

        if torch.cuda.is_available():
            device = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(Path(repo)),
        "seed": config.get("seed"),
        "config": config,
        "packages": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
    }


def write_provenance(path: str | Path, config: dict[str, Any], repo: str | Path) -> None:
    """Write :func:`collect_provenance` as JSON, atomically.

    Args:
        path: the JSON file to write.
        config: the validated configuration.
        repo: the checkout whose git commit is recorded.
    """
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(collect_provenance(config, repo), indent=2, default=str) + "\n")
