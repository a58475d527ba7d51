"""Downloads: one verified, resumable HTTP transfer, Zenodo records, AMOS22, safe zip unpacking.

* :mod:`segdiff.sources.download.http`: :func:`download` (the one transfer of a URL to a file:
  streamed, resumed with ``Range``, size/md5/SHA-256 checked, renamed into place only when
  verified) and :func:`safe_extract` (all-or-nothing, zip-slip-safe unpacking).
* :mod:`segdiff.sources.download.zenodo`: :func:`fetch_record` reads a Zenodo record (licence,
  citation, files) into a :class:`Record`; :func:`describe` is what is logged before a download.
* :mod:`segdiff.sources.download.amos`: :func:`fetch_amos`, AMOS22 into ``<root>/amos22``,
  idempotently.

Pretrained weights are fetched through the same transfer by
:func:`segdiff.sources.weights.fetch_weights`. Command line: ``segdiff download amos --root DIR``
(:mod:`segdiff.cli`).
"""

from segdiff.sources.download.amos import AMOS_FOLDER, AMOS_KEY, AMOS_RECORD_API, fetch_amos
from segdiff.sources.download.http import (
    USER_AGENT,
    ChecksumError,
    DownloadError,
    UnsafeArchiveError,
    download,
    file_md5,
    safe_extract,
)
from segdiff.sources.download.zenodo import Record, RemoteFile, describe, fetch_record, parse_record

__all__ = [
    "AMOS_RECORD_API",
    "AMOS_KEY",
    "AMOS_FOLDER",
    "USER_AGENT",
    "DownloadError",
    "ChecksumError",
    "UnsafeArchiveError",
    "RemoteFile",
    "Record",
    "parse_record",
    "fetch_record",
    "describe",
    "file_md5",
    "download",
    "safe_extract",
    "fetch_amos",
]
