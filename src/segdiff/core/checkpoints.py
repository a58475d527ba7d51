"""Model files and resumable training state, saved atomically and loaded with ``weights_only=True``.

A *model file* is the final product of a training job: a plain dict with a ``format`` tag,
the (EMA) ``state_dict`` and the ``hparams`` needed to rebuild the network. A *training
checkpoint* holds everything needed to resume bit-for-bit: model, EMA, optimizer, LR schedule,
RNG state and step. Both are refused with an :class:`InputError` when corrupt or foreign.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from segdiff.core.atomic import atomic_path
from segdiff.core.errors import InputError

__all__ = ["save_file", "load_file", "read_torch_file", "remove_finished", "MODEL_FORMAT", "CHECKPOINT_FORMAT"]

MODEL_FORMAT = "segdiff-model/1"
CHECKPOINT_FORMAT = "segdiff-checkpoint/1"


def save_file(path: str | Path, payload: dict[str, Any], fmt: str, kind: str) -> None:
    """``torch.save`` ``payload`` tagged with ``fmt`` and ``kind``, atomically.

    Args:
        path: the file to write (it appears whole or not at all).
        payload: tensors and plain values (what ``torch.load(weights_only=True)`` reads back).
        fmt: the format tag, e.g. :data:`MODEL_FORMAT`.
        kind: what the file holds, e.g. ``diffusion``.
    """
    with atomic_path(path) as tmp:
        torch.save({"format": fmt, "kind": kind, **payload}, tmp)


def read_torch_file(path: str | Path, what: str, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)`` with one-line errors.

    Args:
        path: the file to read.
        what: what the file should be, for the error message (e.g. ``diffusion file``).
        map_location: where to load tensors.

    Returns:
        The unpickled object.

    Raises:
        InputError: a missing, corrupt, truncated or unsafe (arbitrary pickle) file, naming ``path``
            and ``what`` it should be.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(path, f"not a readable {what} (corrupt, truncated or unsafe to load: {reason})") from err


def load_file(path: str | Path, fmt: str, kind: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a file written by :func:`save_file`.

    Args:
        path: the file to read.
        fmt: the format tag it must carry.
        kind: the kind it must hold.
        map_location: where to load tensors.

    Returns:
        The payload, with its ``format`` and ``kind`` keys.

    Raises:
        InputError: a corrupt file, a foreign format or another kind.
    """
    payload = read_torch_file(path, f"{kind} file", map_location)
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise InputError(path, f"not a segdiff {kind} file (format {found!r}, expected {fmt!r})")
    if payload.get("kind") != kind:
        raise InputError(path, f"holds a {payload.get('kind')!r} model, expected {kind!r}")
    return payload


def remove_finished(pairs: Iterable[tuple[str | Path, str | Path]]) -> list[Path]:
    """Delete each training checkpoint whose model file exists and is newer (the workflow's
    ``onsuccess``); the removed paths. Checkpoints of models not (re)written yet stay for a resume."""
    removed = []
    for checkpoint, model in pairs:
        checkpoint, model = Path(checkpoint), Path(model)
        if checkpoint.is_file() and model.is_file() and model.stat().st_mtime >= checkpoint.stat().st_mtime:
            checkpoint.unlink()
            removed.append(checkpoint)
    return removed
