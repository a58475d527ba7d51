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

from segdiff._api import lazy_api

__getattr__, __dir__, __all__ = lazy_api(
    __name__,
    {
        "amos": ["AMOS_RECORD_API", "AMOS_KEY", "AMOS_FOLDER", "fetch_amos"],
        "http": [
            "USER_AGENT", "DownloadError", "ChecksumError", "UnsafeArchiveError", "check_http_url",
            "normalise_md5", "file_md5", "download", "safe_extract",
        ],
        "zenodo": ["RemoteFile", "Record", "parse_record", "fetch_record", "describe"],
    },
)
