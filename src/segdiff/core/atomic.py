"""Atomic file output: write to a temporary sibling, then rename, so no half-written file is ever visible."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_dir"]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _public(path: Path, mode: int) -> None:
    """Give a temporary file (mkstemp: 0600) or folder (mkdtemp: 0700) the permissions an ordinary
    ``open`` / ``mkdir`` would have, so results in a shared project folder stay readable."""
    os.chmod(path, mode & ~_umask())


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``.

    The temporary name keeps the suffixes of ``path`` (``x.nii.gz`` -> ``.x.tmpXXXX.nii.gz``) so
    writers that dispatch on the extension (nibabel, numpy, PIL) behave as for the final name.
    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.tmp", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _public(tmp_path, 0o666)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory next to ``path``; on success it replaces ``path`` as a whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp", dir=path.parent))
    try:
        yield tmp
        _public(tmp, 0o777)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
