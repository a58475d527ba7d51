"""Fetch public datasets: AMOS22 from Zenodo, resumable, verified and safely unpacked.

The pieces, each usable alone:

* :func:`fetch_record` reads a Zenodo record through its REST API
  (``https://zenodo.org/api/records/<id>``) into a :class:`Record`: title, licence, citation
  and the record's files (URL, size, md5). Nothing about the licence or the citation is written
  in this module; both come from the record.
* :func:`describe` is the text logged before any download: the licence and how to cite.
* :func:`download` streams one URL to ``<dest>.part``, resumes an interrupted transfer with an
  HTTP ``Range`` request, checks the size and the md5 and only then renames the part onto
  ``dest``.
* :func:`safe_extract` checks every member of a zip (no absolute paths, no ``..``, no links,
  no duplicates) before writing anything, unpacks into a temporary folder next to the target
  and renames it onto the target, so the target appears complete or not at all.
* :func:`fetch_amos` chains them, idempotently: ``<root>/amos22/dataset.json`` present means
  done, without any network access.

Zenodo record format
--------------------
``GET https://zenodo.org/api/records/<id>`` (``Accept: application/json``) answers, since
Zenodo moved to InvenioRDM (October 2023), the "legacy" Zenodo JSON: ``files`` is a list of
``{"id", "key", "size", "checksum": "md5:<hex>", "links": {"self": ".../api/records/<id>/files/<key>/content"}}``
and ``metadata`` holds ``title``, ``creators`` (``[{"name", "affiliation", "orcid"}]``),
``doi``, ``publication_date`` and ``license`` (``{"id": "cc-by-4.0"}``). :func:`parse_record`
also reads the other shapes the same data takes: the deposit-API file schema
(``filename`` / ``filesize`` / a bare hex ``checksum`` / ``links.download``) and InvenioRDM's
own JSON (``files.entries`` as a mapping, ``links.content``, ``metadata.rights``,
``creators[].person_or_org.name``, ``pids.doi.identifier``). Where a file has both a
``content``/``download`` link and a ``self`` link, the former is the bytes and the latter may be
the file's metadata, so it is preferred.

Command line::

    python -m segdiff.sources.download amos --root DIR [--url API_URL] [--md5 HEX] [--keep-zip]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import socket
import stat
import sys
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urljoin, urlsplit
from urllib.request import Request, urlopen

from tqdm import tqdm

from segdiff import __version__
from segdiff.core.errors import SegdiffError

__all__ = [
    "AMOS_RECORD_API",
    "AMOS_KEY",
    "AMOS_FOLDER",
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
    "main",
]

log = logging.getLogger(__name__)

AMOS_RECORD_API = "https://zenodo.org/api/records/7262581"
"""Zenodo REST API URL of the AMOS22 record."""
AMOS_KEY = "amos22.zip"
"""Name (Zenodo file key) of the AMOS22 archive in its record."""
AMOS_FOLDER = "amos22"
"""Folder under the download root that holds the unpacked dataset (``dataset.json`` inside)."""

USER_AGENT = f"segdiff/{__version__} (python urllib)"
_MD5_RE = re.compile(r"^[0-9a-f]{32}$")
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
_CONTENT_RANGE_RE = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*$")
# Top-level archive entries that do not count when deciding whether a zip has one top folder.
_IGNORED_TOP = frozenset({"__MACOSX", ".DS_Store"})


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class DownloadError(SegdiffError):
    """A download, a remote record or an archive is unusable.

    The message is one line: ``<url or path>: <problem>``.
    """

    def __init__(self, what: str | Path, problem: str):
        self.what = str(what)
        self.problem = problem
        super().__init__(f"{self.what}: {problem}")


class ChecksumError(DownloadError):
    """A downloaded file has the wrong size or md5 (its partial file has been removed)."""


class UnsafeArchiveError(DownloadError):
    """An archive member would be written outside the target folder, is a link, or repeats a name."""


class _Interrupted(Exception):
    """A transfer stopped before the server's announced end (resumable)."""

    def __init__(self, received: int, reason: str):
        self.received = received
        self.reason = reason
        super().__init__(reason)


# --------------------------------------------------------------------------------------------
# The record
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteFile:
    """One file of a record: its download URL, size in bytes and md5 (lower-case hex), when known."""

    url: str
    size: int | None
    md5: str | None


@dataclass(frozen=True)
class Record:
    """What a Zenodo record says about a dataset.

    Attributes
    ----------
    title : record title.
    license : the licence as the record states it (``"<title> (<id>)"`` or the id alone).
    citation : ``"<creators> (<year>). <title>. Zenodo. https://doi.org/<doi>"``, built from the record.
    files : ``{key: RemoteFile}``.
    doi, year : as found in the record (``None`` when absent).
    creators : creator names in record order.
    api_url : the URL the record was read from.
    """

    title: str
    license: str
    citation: str
    files: dict[str, RemoteFile]
    doi: str | None = None
    year: str | None = None
    creators: tuple[str, ...] = ()
    api_url: str = ""


def _text(value: Any) -> str | None:
    """A non-empty string from a str or an i18n mapping (``{"en": ...}``)."""
    if isinstance(value, Mapping):
        value = value.get("en") or next((v for v in value.values() if isinstance(v, str) and v), None)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _license(meta: Mapping[str, Any]) -> str | None:
    candidates: list[Any] = []
    if "license" in meta:
        candidates.append(meta["license"])
    rights = meta.get("rights")
    if isinstance(rights, Sequence) and not isinstance(rights, str):
        candidates.extend(rights)
    for item in candidates:
        if isinstance(item, str) and item.strip():
            return item.strip()
        if isinstance(item, Mapping):
            ident = _text(item.get("id"))
            title = _text(item.get("title"))
            if ident and title and title.lower() != ident.lower():
                return f"{title} ({ident})"
            if ident or title:
                return ident or title
    return None


def _creators(meta: Mapping[str, Any]) -> tuple[str, ...]:
    names = []
    for creator in meta.get("creators") or []:
        if isinstance(creator, str):
            name = _text(creator)
        elif isinstance(creator, Mapping):
            person = creator.get("person_or_org") if isinstance(creator.get("person_or_org"), Mapping) else creator
            name = _text(person.get("name"))
            if name is None:
                family, given = _text(person.get("family_name")), _text(person.get("given_name"))
                name = ", ".join(p for p in (family, given) if p) or None
        else:
            name = None
        if name:
            names.append(name)
    return tuple(names)


def _md5_of_checksum(checksum: Any) -> str | None:
    """``'md5:<hex>'`` or a bare 32-digit hex string -> lower-case hex; other algorithms -> None."""
    if not isinstance(checksum, str):
        return None
    algo, _, value = checksum.strip().rpartition(":")
    value = value.lower()
    if algo.lower() in ("", "md5") and _MD5_RE.match(value):
        return value
    return None


def _file_entries(data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    files = data.get("files")
    if isinstance(files, Mapping):  # InvenioRDM: {"enabled": true, "entries": {key: {...}} or [...]}
        entries = files.get("entries")
        if isinstance(entries, Mapping):
            return [dict(v, key=v.get("key", k)) for k, v in entries.items() if isinstance(v, Mapping)]
        files = entries
    if isinstance(files, Sequence) and not isinstance(files, str):
        return [f for f in files if isinstance(f, Mapping)]
    return []


def parse_record(data: Mapping[str, Any], api_url: str) -> Record:
    """Build a :class:`Record` from a Zenodo record's JSON (see the module notes for the shapes read).

    Relative file links are resolved against ``api_url``; a file without any link gets the
    InvenioRDM content URL ``<api_url>/files/<key>/content``.

    Raises
    ------
    DownloadError
        If the JSON is not an object, has no title, or lists no file.
    """
    if not isinstance(data, Mapping):
        raise DownloadError(api_url, f"record JSON is a {type(data).__name__}, expected an object")
    meta = data.get("metadata") if isinstance(data.get("metadata"), Mapping) else {}
    title = _text(meta.get("title")) or _text(data.get("title"))
    if title is None:
        raise DownloadError(api_url, "record has no metadata.title (is this a Zenodo record API URL?)")
    pids = data.get("pids") if isinstance(data.get("pids"), Mapping) else {}
    doi = _text(meta.get("doi")) or _text(data.get("doi")) or _text((pids.get("doi") or {}).get("identifier"))
    date = _text(meta.get("publication_date"))
    year = date[:4] if date and date[:4].isdigit() else None
    creators = _creators(meta)
    license_text = _license(meta) or f"not stated in the record (check {api_url})"

    files: dict[str, RemoteFile] = {}
    for entry in _file_entries(data):
        key = _text(entry.get("key")) or _text(entry.get("filename"))
        if key is None:
            continue
        links = entry.get("links") if isinstance(entry.get("links"), Mapping) else {}
        link = _text(links.get("content")) or _text(links.get("download")) or _text(links.get("self"))
        url = urljoin(api_url, link) if link else f"{api_url.rstrip('/')}/files/{quote(key)}/content"
        size = entry.get("size", entry.get("filesize"))
        size = int(size) if isinstance(size, (int, float)) and not isinstance(size, bool) and size >= 0 else None
        files[key] = RemoteFile(url=url, size=size, md5=_md5_of_checksum(entry.get("checksum")))
    if not files:
        access = _text(meta.get("access_right")) or _text((data.get("access") or {}).get("files"))
        hint = f" (access right: {access})" if access else ""
        raise DownloadError(api_url, f"record lists no files{hint}")

    authors = "; ".join(creators) if creators else "Unknown creators"
    citation = f"{authors} ({year or 'n.d.'}). {title}. Zenodo."
    if doi:
        citation += f" https://doi.org/{doi}"
    elif _text((data.get("links") or {}).get("html")):
        citation += f" {data['links']['html']}"
    return Record(
        title=title,
        license=license_text,
        citation=citation,
        files=files,
        doi=doi,
        year=year,
        creators=creators,
        api_url=api_url,
    )


def _check_http_url(url: str) -> None:
    if urlsplit(url).scheme not in ("http", "https"):
        raise DownloadError(url, "not an http(s) URL")


def fetch_record(api_url: str, timeout: float = 60) -> Record:
    """Read a Zenodo record through the REST API (``https://zenodo.org/api/records/<id>``).

    Raises
    ------
    DownloadError
        On a network error, an HTTP error status, a body that is not JSON, or a record without
        a title or files (the message names ``api_url``).
    """
    _check_http_url(api_url)
    request = Request(api_url, headers={"Accept": "application/json", "User-Agent": USER_AGENT})
    try:
        with urlopen(request, timeout=timeout) as response:
            body = response.read()
    except HTTPError as err:
        raise DownloadError(api_url, f"HTTP {err.code} {err.reason} while reading the record") from err
    except (URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(api_url, f"cannot read the record ({reason})") from err
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DownloadError(api_url, f"record is not valid JSON ({err})") from err
    return parse_record(data, api_url)


def describe(record: Record) -> str:
    """The lines to show before downloading: dataset, licence, citation, source (one per line)."""
    return "\n".join(
        [
            f"Dataset: {record.title}",
            f"License: {record.license}",
            f"Cite as: {record.citation}",
            f"Source:  {record.api_url}",
        ]
    )


# --------------------------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------------------------


def _normalise_md5(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    text = value.strip().lower()
    text = text.removeprefix("md5:")
    if not _MD5_RE.match(text):
        raise DownloadError(what, f"not an md5 digest (32 hex digits): {value!r}")
    return text


def file_md5(path: str | Path, chunk: int = 1 << 20) -> str:
    """md5 (lower-case hex) of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``'bytes 100-199/1000'`` -> (100, 1000); ``'bytes */1000'`` -> (None, 1000); else (None, None)."""
    match = _CONTENT_RANGE_RE.match(value or "")
    if match is None:
        return None, None
    start = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(3)) if match.group(3) != "*" else None
    return start, total


def _transfer(url: str, part: Path, size: int | None, chunk: int, timeout: float, name: str) -> None:
    """Bring ``part`` to the end of the remote file, resuming from its current length.

    Returns when the server has sent everything it announced (or said, with 416, that the part
    already has it); raises :class:`_Interrupted` when the body stops early.
    """
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:
        log.warning("%s: %d bytes already, more than the expected %d; starting again", part, offset, size)
        part.unlink()
        offset = 0
    if size is not None and offset == size:
        return
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        log.info("%s: resuming at byte %d", name, offset)
    try:
        response = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as err:
        with err:
            if err.code == 416 and offset:
                _, total = _content_range(err.headers.get("Content-Range"))
                if total == offset:
                    log.info("%s: the server says the %d bytes already here are the whole file", name, offset)
                    return
                log.warning("%s: server refused to resume at byte %d (HTTP 416); starting again", name, offset)
                part.unlink()
            else:
                raise DownloadError(url, f"HTTP {err.code} {err.reason}") from err
        return _transfer(url, part, size, chunk, timeout, name)
    except (URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        kept = f"; {offset} bytes kept in {part}, rerun to resume" if offset else ""
        raise DownloadError(url, f"cannot connect ({reason}){kept}") from err

    with response:
        status = response.status
        mode = "ab"
        if status == 206:
            start, _ = _content_range(response.headers.get("Content-Range"))
            if start != offset:
                raise DownloadError(url, f"asked for bytes from {offset}, the server sent a range starting at {start}")
        elif status == 200:
            if offset:
                log.warning("%s: server ignored the Range request (HTTP 200); starting again from byte 0", name)
            offset, mode = 0, "wb"
        else:
            raise DownloadError(url, f"unexpected HTTP status {status}")
        length = response.headers.get("Content-Length")
        end = offset + int(length) if length is not None and length.isdigit() else None
        received = offset
        with open(part, mode) as fh, tqdm(
            total=size if size is not None else end,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            mininterval=2.0,
            desc=name,
        ) as bar:
            while True:
                try:
                    block = response.read(chunk)
                except (http.client.HTTPException, ConnectionError, TimeoutError, socket.timeout) as err:
                    raise _Interrupted(received, f"{type(err).__name__}: {err}") from err
                if not block:
                    break
                fh.write(block)
                received += len(block)
                bar.update(len(block))
                if size is not None and received > size:
                    return  # more than the record announced: the size check reports it
    if end is not None and received < end:
        raise _Interrupted(received, f"connection closed after {received} of {end} bytes")
    if end is None and size is not None and received < size:
        raise _Interrupted(received, f"connection closed after {received} of {size} bytes")


def _matches(path: Path, size: int | None, md5: str | None) -> bool:
    if size is not None and path.stat().st_size != size:
        return False
    return md5 is None or file_md5(path) == md5


def download(
    url: str,
    dest: str | Path,
    size: int | None,
    md5: str | None,
    chunk: int = 1 << 20,
    *,
    timeout: float = 60,
    retries: int = 3,
) -> Path:
    """Download ``url`` to ``dest``, resumably, and verify it.

    The bytes go to ``<dest>.part``. An existing part is resumed with ``Range: bytes=N-``; a
    server that answers 200 instead of 206 is followed from byte 0, and a 416 whose
    ``Content-Range`` total equals the part's length means the part is complete. A transfer cut
    in the middle is resumed up to ``retries`` times; after that the part is kept and a later
    call resumes it. When the transfer is complete the size and then the md5 are checked, and
    only then is the part renamed onto ``dest``.

    Parameters
    ----------
    url : http(s) URL of the file.
    dest : final path.
    size : expected size in bytes, or None.
    md5 : expected md5 (hex, optionally ``md5:``-prefixed), or None.
    chunk : read size in bytes.
    timeout : socket timeout in seconds (connect and each read).
    retries : automatic resumptions of an interrupted transfer.

    Returns
    -------
    Path
        ``dest``. An existing ``dest`` with the right size (and md5, when given) is returned
        without any network access.

    Raises
    ------
    ChecksumError
        Wrong size or md5; the message names the file and both values, and the part is deleted
        (a corrupt part cannot be resumed).
    DownloadError
        HTTP errors, connection failures, or a transfer still interrupted after ``retries``
        resumptions (the part is kept).
    """
    dest = Path(dest)
    md5 = _normalise_md5(md5, f"md5 for {dest}")
    _check_http_url(url)
    if dest.exists():
        if _matches(dest, size, md5):
            log.info("%s: already downloaded and verified", dest)
            return dest
        log.warning("%s: exists but does not match the expected size/md5; downloading again", dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(dest)
    attempt = 0
    while True:
        try:
            _transfer(url, part, size, chunk, timeout, dest.name)
            break
        except _Interrupted as err:
            if attempt >= retries:
                raise DownloadError(
                    url, f"transfer to {dest} interrupted ({err.reason}); {err.received} bytes kept in {part}, rerun to resume"
                ) from err
            attempt += 1
            log.warning("%s: transfer interrupted (%s); resuming (%d/%d)", dest.name, err.reason, attempt, retries)

    got_size = part.stat().st_size
    if size is not None and got_size != size:
        part.unlink(missing_ok=True)
        raise ChecksumError(dest, f"size mismatch: expected {size} bytes, got {got_size} (from {url}; partial file removed)")
    if md5 is not None:
        got_md5 = file_md5(part, chunk)
        if got_md5 != md5:
            part.unlink(missing_ok=True)
            raise ChecksumError(dest, f"md5 mismatch: expected {md5}, got {got_md5} (from {url}; partial file removed)")
    else:
        log.warning("%s: no md5 to check against; only the size was verified", dest)
    os.replace(part, dest)
    log.info("%s: downloaded (%d bytes%s)", dest, got_size, ", md5 ok" if md5 else "")
    return dest


# --------------------------------------------------------------------------------------------
# Safe extraction
# --------------------------------------------------------------------------------------------


def _member_parts(name: str) -> tuple[str, ...]:
    """Path components of a member name, or ValueError saying why it is unsafe."""
    if not name:
        raise ValueError("empty name")
    if "\x00" in name:
        raise ValueError("NUL character in the name")
    norm = name.replace("\\", "/")
    via = " (reading backslashes as separators)" if norm != name else ""
    if norm.startswith("/"):
        raise ValueError(f"absolute path{via}")
    if _DRIVE_RE.match(norm):
        raise ValueError("absolute Windows path (drive letter)")
    parts = tuple(p for p in norm.split("/") if p not in ("", "."))
    if ".." in parts:
        raise ValueError(f"'..' component{via}")
    if not parts:
        raise ValueError("names no file")
    return parts


def _check_members(zf: zipfile.ZipFile, zip_path: Path) -> list[tuple[zipfile.ZipInfo, tuple[str, ...], bool]]:
    """Check every member; return ``(info, parts, is_dir)`` for each, or raise UnsafeArchiveError."""
    checked = []
    named: set[tuple[str, ...]] = set()
    files: set[tuple[str, ...]] = set()
    dirs: set[tuple[str, ...]] = set()
    for info in zf.infolist():
        for name in dict.fromkeys((info.orig_filename, info.filename)):
            try:
                parts = _member_parts(name)
            except ValueError as err:
                raise UnsafeArchiveError(zip_path, f"member {name!r} refused: {err}") from None
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise UnsafeArchiveError(zip_path, f"member {info.filename!r} refused: symbolic link")
        kind = stat.S_IFMT(mode)
        if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
            raise UnsafeArchiveError(zip_path, f"member {info.filename!r} refused: special file (mode {oct(mode)})")
        if parts in named:
            raise UnsafeArchiveError(zip_path, f"member {info.filename!r} refused: duplicate name")
        named.add(parts)
        is_dir = info.filename.replace("\\", "/").endswith("/") or kind == stat.S_IFDIR
        (dirs if is_dir else files).add(parts)
        dirs.update(parts[:i] for i in range(1, len(parts)))
        checked.append((info, parts, is_dir))
    clash = files & dirs
    if clash:
        raise UnsafeArchiveError(zip_path, f"member {'/'.join(min(clash))!r} refused: both a file and a folder")
    return checked


def safe_extract(zip_path: str | Path, target: str | Path) -> Path:
    """Unpack a zip into ``target`` after checking every member; all or nothing.

    Before anything is written, every member name is checked: absolute paths (``/x``, ``C:\\x``,
    ``\\x``), ``..`` components (also when backslashes are read as separators), NUL characters,
    symbolic links and other special files (``external_attr >> 16``), duplicate names and names
    that are both a file and a folder are refused. The members are then written into
    ``tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial")`` (each resolved
    output path is checked to stay inside it) and that folder is renamed onto ``target``.

    Parameters
    ----------
    zip_path : the archive.
    target : folder to create; it must not exist, or be an empty folder.

    Returns
    -------
    Path
        ``target``.

    Raises
    ------
    UnsafeArchiveError
        For a refused member (nothing has been written).
    DownloadError
        If the zip is unreadable or corrupt, ``target`` exists and is not an empty folder, or
        the disk is too small; the temporary folder is removed.
    """
    zip_path, target = Path(zip_path), Path(target)
    if target.exists() and not (target.is_dir() and not any(target.iterdir())):
        raise DownloadError(target, "already exists (and is not an empty folder); remove it or choose another target")
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as err:
        raise DownloadError(zip_path, f"not a readable zip archive ({err})") from err
    with zf:
        members = _check_members(zf, zip_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        needed = sum(info.file_size for info, _, is_dir in members if not is_dir)
        free = shutil.disk_usage(target.parent).free
        if needed > free:
            raise DownloadError(target.parent, f"needs {needed} bytes to unpack {zip_path.name}, only {free} free")
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial"))
        try:
            root = tmp.resolve()
            for info, parts, is_dir in members:
                out = tmp.joinpath(*parts)
                if not out.resolve().is_relative_to(root):
                    raise UnsafeArchiveError(zip_path, f"member {info.filename!r} refused: resolves outside {tmp}")
                if is_dir:
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with zf.open(info) as src, open(out, "xb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                except (zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError) as err:
                    raise DownloadError(zip_path, f"member {info.filename!r} unreadable ({err})") from err
            mask = os.umask(0o022)
            os.umask(mask)
            os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes 0700
            if target.exists():
                target.rmdir()  # empty, checked above
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


# --------------------------------------------------------------------------------------------
# AMOS22
# --------------------------------------------------------------------------------------------


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
    (:func:`describe`), ``key`` is downloaded to ``<root>/<key>`` (resumable, verified: a pinned
    ``md5`` wins over the record's, both are logged when they differ), unpacked with
    :func:`safe_extract` into a temporary folder under ``root``, and the folder holding
    ``dataset.json`` (the zip's single top folder, whatever its name, or the zip's top level
    when it has no single top folder) is renamed to ``<root>/amos22``, so that folder appears
    complete or not at all. The zip is deleted afterwards unless ``keep_zip``.

    Returns
    -------
    Path
        ``<root>/amos22``.

    Raises
    ------
    DownloadError
        ``<root>/amos22`` exists without ``dataset.json`` (checked before any network access),
        the record has no file ``key``, or anything :func:`fetch_record`, :func:`download` or
        :func:`safe_extract` raises (:class:`ChecksumError`, :class:`UnsafeArchiveError`).
    """
    root = Path(root)
    dataset = root / AMOS_FOLDER
    if (dataset / "dataset.json").is_file():
        log.info("AMOS22 already present at %s; nothing to download", dataset)
        return dataset
    if dataset.exists():
        raise DownloadError(dataset, "exists but has no dataset.json (not a complete AMOS22 folder); remove it and rerun")
    pinned = _normalise_md5(md5, "md5 argument")

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


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m segdiff.sources.download amos --root DIR [--url API_URL] [--md5 HEX] [--keep-zip]``."""
    parser = argparse.ArgumentParser(prog="python -m segdiff.sources.download", description="Download public datasets.")
    sub = parser.add_subparsers(dest="dataset", required=True)
    amos = sub.add_parser("amos", help="AMOS22 from Zenodo (record 7262581), into ROOT/amos22")
    amos.add_argument("--root", type=Path, required=True, help="download folder (the dataset lands in ROOT/amos22)")
    amos.add_argument("--url", default=AMOS_RECORD_API, help=f"Zenodo record API URL (default {AMOS_RECORD_API})")
    amos.add_argument("--md5", default=None, help="pin the archive's md5 (wins over the record's)")
    amos.add_argument("--key", default=AMOS_KEY, help=f"file key in the record (default {AMOS_KEY})")
    amos.add_argument("--keep-zip", action="store_true", help="keep the archive after unpacking")
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path = fetch_amos(args.root, args.url, key=args.key, md5=args.md5, keep_zip=args.keep_zip)
    except SegdiffError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
