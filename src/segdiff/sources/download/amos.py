"""AMOS22 from Zenodo: read the record, download the archive (resumable, verified), unpack it safely.

:func:`fetch_amos` is idempotent: ``<root>/amos22/dataset.json`` present means done, without
any network access. From the command line: ``segdiff download amos --root DIR``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from segdiff.sources.download.http import DownloadError, download, normalise_md5, safe_extract
from segdiff.sources.download.zenodo import describe, fetch_record

__all__ = ["AMOS_RECORD_API", "AMOS_KEY", "AMOS_FOLDER", "fetch_amos"]

log = logging.getLogger(__name__)

AMOS_RECORD_API = "https://zenodo.org/api/records/7262581"
"""Zenodo REST API URL of the AMOS22 record."""
AMOS_KEY = "amos22.zip"
"""Name (Zenodo file key) of the AMOS22 archive in its record."""
AMOS_FOLDER = "amos22"
"""Folder under the download root that holds the unpacked dataset (``dataset.json`` inside)."""

# Top-level archive entries that do not count when deciding whether a zip has one top folder.
_IGNORED_TOP = frozenset({"__MACOSX", ".DS_Store"})


def _dataset_folder(unpacked: Path, zip_path: Path) -> Path:
    """The folder holding ``dataset.json``: the unpacked root itself, or its single top folder."""
    if (unpacked / "dataset.json").is_file():
        return unpacked
    top = [p for p in unpacked.iterdir() if p.name not in _IGNORED_TOP]
    if len(top) == 1 and top[0].is_dir() and (top[0] / "dataset.json").is_file():
        return top[0]
    names = ", ".join(sorted(p.name for p in top)[:5]) or "nothing"
    raise DownloadError(
        zip_path, f"has no dataset.json at its top level or in a single top folder (top level: {names}); is it the AMOS22 archive?"
    )


def fetch_amos(
    root: str | Path,
    api_url: str = AMOS_RECORD_API,
    key: str = AMOS_KEY,
    md5: str | None = None,
    keep_zip: bool = False,
    *,
    timeout: float = 60,
    retries: int = 3,
) -> Path:
    """Download and unpack AMOS22 under ``root``; idempotent.

    The dataset is ready when ``<root>/amos22/dataset.json`` exists; then it is returned with no
    network access at all. Otherwise: the record is read and its licence and citation are logged
    (:func:`~segdiff.sources.download.zenodo.describe`), ``key`` is downloaded to ``<root>/<key>``
    (:func:`~segdiff.sources.download.http.download`: resumable, verified; a pinned ``md5`` wins
    over the record's, both are logged when they differ), unpacked with
    :func:`~segdiff.sources.download.http.safe_extract` into a temporary folder under ``root``,
    and the folder holding ``dataset.json`` (the zip's single top folder, whatever its name, or
    the zip's top level when it has no single top folder) is renamed to ``<root>/amos22``, so that
    folder appears complete or not at all. The zip is deleted afterwards unless ``keep_zip``.

    Args:
        root: download folder; the dataset lands in ``<root>/amos22``.
        api_url: Zenodo record API URL.
        key: file key of the archive in the record.
        md5: pinned md5 of the archive (hex), or None for the record's.
        keep_zip: keep the archive after unpacking.
        timeout: socket timeout in seconds.
        retries: automatic resumptions of an interrupted transfer.

    Returns:
        ``<root>/amos22``.

    Raises:
        DownloadError: ``<root>/amos22`` exists without ``dataset.json`` (checked before any
            network access), ``md5`` is malformed, the record has no file ``key``, or anything
            ``fetch_record``, ``download`` or ``safe_extract`` raises (``ChecksumError``,
            ``UnsafeArchiveError``).
    """
    root = Path(root)
    dataset = root / AMOS_FOLDER
    if (dataset / "dataset.json").is_file():
        log.info("AMOS22 already present at %s; nothing to download", dataset)
        return dataset
    if dataset.exists():
        raise DownloadError(dataset, "exists but has no dataset.json (not a complete AMOS22 folder); remove it and rerun")
    pinned = normalise_md5(md5, "md5 argument")

    record = fetch_record(api_url, timeout=timeout)
    for line in describe(record).splitlines():
        log.info("%s", line)
    remote = record.files.get(key)
    if remote is None:
        raise DownloadError(api_url, f"record has no file {key!r} (files: {', '.join(sorted(record.files))})")
    if pinned and remote.md5 and pinned != remote.md5:
        log.warning("%s: pinned md5 %s differs from the record's %s; checking against the pinned one", key, pinned, remote.md5)
    expected = pinned or remote.md5

    root.mkdir(parents=True, exist_ok=True)
    zip_path = download(remote.url, root / key, remote.size, expected, timeout=timeout, retries=retries)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{AMOS_FOLDER}.partial"))
    try:
        unpacked = safe_extract(zip_path, staging / "unpacked")
        os.replace(_dataset_folder(unpacked, zip_path), dataset)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not keep_zip:
        zip_path.unlink(missing_ok=True)
    log.info("AMOS22 ready at %s", dataset)
    return dataset
