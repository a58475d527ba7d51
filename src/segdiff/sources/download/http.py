"""The one verified, resumable transfer of a URL to a file, and the all-or-nothing unpacking of a zip.

Every download in segdiff (datasets through :mod:`segdiff.sources.download.amos`, pretrained
weights through :func:`segdiff.sources.weights.fetch_weights`) goes through :func:`download`:

* the bytes are streamed to ``<dest>.part``;
* an existing part is resumed with an HTTP ``Range: bytes=N-`` request, also automatically when
  a transfer is cut in the middle; a server that ignores ``Range`` (200) is followed from byte 0;
* when the transfer is complete the size, the md5 and/or a SHA-256 (or a prefix of it, torch
  hub's file-name convention) are checked, and only then is the part renamed onto ``dest``;
* a wrong size or checksum removes the part (it cannot be resumed); an interruption keeps it.

:func:`safe_extract` checks every member of a zip (no absolute paths, no ``..``, no links, no
duplicates) before writing anything, unpacks into a temporary folder next to the target and
renames it onto the target, so the target appears complete or not at all.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import shutil
import socket
import stat
import tempfile
import zipfile
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit
from urllib.request import Request, urlopen

from tqdm import tqdm

from segdiff import __version__
from segdiff.core.errors import SegdiffError

__all__ = [
    "USER_AGENT",
    "DownloadError",
    "ChecksumError",
    "UnsafeArchiveError",
    "check_http_url",
    "normalise_md5",
    "file_md5",
    "download",
    "safe_extract",
]

log = logging.getLogger(__name__)

USER_AGENT = f"segdiff/{__version__} (python urllib)"
"""``User-Agent`` header of every request segdiff makes."""

_MD5_RE = re.compile(r"^[0-9a-f]{32}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{1,64}$")
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
_CONTENT_RANGE_RE = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*$")


class DownloadError(SegdiffError):
    """A download, a remote record or an archive is unusable.

    The message is one line: ``<url or path>: <problem>``.

    Attributes:
        what: the URL or path the problem is about.
        problem: the problem, without ``what``.
    """

    def __init__(self, what: str | Path, problem: str):
        self.what = str(what)
        self.problem = problem
        super().__init__(f"{self.what}: {problem}")


class ChecksumError(DownloadError):
    """A downloaded file has the wrong size or checksum (its partial file has been removed)."""


class UnsafeArchiveError(DownloadError):
    """An archive member would be written outside the target folder, is a link, or repeats a name."""


class _Interrupted(Exception):
    """A transfer stopped before the server's announced end (resumable)."""

    def __init__(self, received: int, reason: str):
        self.received = received
        self.reason = reason
        super().__init__(reason)


def check_http_url(url: str) -> None:
    """Refuse anything but an http(s) URL.

    Args:
        url: the URL.

    Raises:
        DownloadError: if the scheme is not ``http`` or ``https``.
    """
    if urlsplit(url).scheme not in ("http", "https"):
        raise DownloadError(url, "not an http(s) URL")


def normalise_md5(value: str | None, what: str) -> str | None:
    """An md5 digest as lower-case hex (``md5:`` prefix and case dropped).

    Args:
        value: the digest, or None.
        what: what the digest is for, for the error message.

    Returns:
        The 32 hex digits, or None when ``value`` is None.

    Raises:
        DownloadError: if ``value`` is not 32 hex digits (the message starts with ``what``).
    """
    return _normalise_digest(value, what, "md5")


#: algorithm -> (the hex digits it accepts, how the error message names them)
_DIGEST_FORMS = {"md5": (_MD5_RE, "an md5 digest (32 hex digits)"),
                 "sha256": (_SHA256_RE, "a SHA-256 digest or prefix (1 to 64 hex digits)")}


def _normalise_digest(value: str | None, what: str, algorithm: str) -> str | None:
    """``value`` as lower-case hex, its ``<algorithm>:`` prefix dropped; None stays None."""
    if value is None:
        return None
    pattern, form = _DIGEST_FORMS[algorithm]
    text = value.strip().lower().removeprefix(f"{algorithm}:")
    if not pattern.match(text):
        raise DownloadError(what, f"not {form}: {value!r}")
    return text


def _digests(path: Path, algorithms: tuple[str, ...], chunk: int = 1 << 20) -> dict[str, str]:
    """Hex digests of a file for each of ``algorithms``, in one read."""
    hashes = {name: hashlib.new(name) for name in algorithms}
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            for digest in hashes.values():
                digest.update(block)
    return {name: digest.hexdigest() for name, digest in hashes.items()}


def file_md5(path: str | Path, chunk: int = 1 << 20) -> str:
    """md5 of a file, read in chunks.

    Args:
        path: the file.
        chunk: read size in bytes.

    Returns:
        The digest as lower-case hex.
    """
    return _digests(Path(path), ("md5",), chunk)["md5"]


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
                    return  # more than announced: the size check reports it
    if end is not None and received < end:
        raise _Interrupted(received, f"connection closed after {received} of {end} bytes")
    if end is None and size is not None and received < size:
        raise _Interrupted(received, f"connection closed after {received} of {size} bytes")


def _mismatch(path: Path, size: int | None, md5: str | None, sha256: str | None, chunk: int = 1 << 20) -> str | None:
    """What is wrong with ``path`` against the expected size and checksums, or None if nothing."""
    got_size = path.stat().st_size
    if size is not None and got_size != size:
        return f"size mismatch: expected {size} bytes, got {got_size}"
    algorithms = tuple(name for name, value in (("md5", md5), ("sha256", sha256)) if value is not None)
    got = _digests(path, algorithms, chunk) if algorithms else {}
    if md5 is not None and got["md5"] != md5:
        return f"md5 mismatch: expected {md5}, got {got['md5']}"
    if sha256 is not None and not got["sha256"].startswith(sha256):
        expected = sha256 if len(sha256) == 64 else f"a digest starting with {sha256}"
        return f"SHA-256 mismatch: expected {expected}, got {got['sha256']}"
    return None


def download(
    url: str,
    dest: str | Path,
    size: int | None = None,
    md5: str | None = None,
    chunk: int = 1 << 20,
    *,
    sha256: str | None = None,
    timeout: float = 60,
    retries: int = 3,
    mode: int | None = None,
) -> Path:
    """Download ``url`` to ``dest``, resumably, and verify it.

    The bytes go to ``<dest>.part``. An existing part is resumed with ``Range: bytes=N-``; a
    server that answers 200 instead of 206 is followed from byte 0, and a 416 whose
    ``Content-Range`` total equals the part's length means the part is complete. A transfer cut
    in the middle is resumed up to ``retries`` times; after that the part is kept and a later
    call resumes it. When the transfer is complete the size, the md5 and the SHA-256 (those
    given) are checked, and only then is the part renamed onto ``dest``.

    Args:
        url: http(s) URL of the file.
        dest: final path (its folder is created).
        size: expected size in bytes, or None.
        md5: expected md5 (hex, optionally ``md5:``-prefixed), or None.
        chunk: read size in bytes.
        sha256: expected SHA-256 (hex), or a prefix of it (torch hub's ``name-<prefix>.ext``
            convention), or None.
        timeout: socket timeout in seconds (connect and each read).
        retries: automatic resumptions of an interrupted transfer.
        mode: permission bits given to the file before the rename (default: as ``open`` makes it).

    Returns:
        ``dest``. An existing ``dest`` that matches the size and checksums given (at least one of
        them) is returned without any network access; with nothing to check it against, it is
        downloaded again.

    Raises:
        ChecksumError: wrong size or checksum; the message names the file, the URL and both
            values, and the part is deleted (a corrupt part cannot be resumed).
        DownloadError: a non-http(s) URL, a malformed checksum, HTTP errors, connection failures,
            or a transfer still interrupted after ``retries`` resumptions (the part is kept).
    """
    dest = Path(dest)
    md5 = normalise_md5(md5, f"md5 for {dest}")
    sha256 = _normalise_digest(sha256, f"SHA-256 for {dest}", "sha256")
    check_http_url(url)
    if dest.exists():
        if (size, md5, sha256) == (None, None, None):
            log.warning("%s: exists, with no size or checksum to verify it against; downloading again", dest)
        elif _mismatch(dest, size, md5, sha256, chunk) is None:
            log.info("%s: already downloaded and verified", dest)
            return dest
        else:
            log.warning("%s: exists but does not match the expected size/checksum; downloading again", dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
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

    problem = _mismatch(part, size, md5, sha256, chunk)
    if problem is not None:
        part.unlink(missing_ok=True)
        raise ChecksumError(dest, f"{problem} (from {url}; partial file removed)")
    if md5 is None and sha256 is None:
        log.warning("%s: no checksum to check against; only the size was verified", dest)
    if mode is not None:
        os.chmod(part, mode)
    got_size = part.stat().st_size
    os.replace(part, dest)
    log.info("%s: downloaded (%d bytes%s)", dest, got_size, ", checksum ok" if md5 or sha256 else "")
    return dest


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

    Args:
        zip_path: the archive.
        target: folder to create; it must not exist, or be an empty folder.

    Returns:
        ``target``.

    Raises:
        UnsafeArchiveError: for a refused member (nothing has been written).
        DownloadError: if the zip is unreadable or corrupt, ``target`` exists and is not an
            empty folder, or the disk is too small; the temporary folder is removed.
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
