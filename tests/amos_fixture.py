"""Test helpers for the download module: a small AMOS22-layout zip and a loopback HTTP server.

* :func:`make_amos_zip` writes a zip laid out like the real ``amos22.zip`` (top folder
  ``amos22/`` with ``dataset.json``, ``imagesTr``/``labelsTr``/``imagesVa``/``labelsVa``) from
  small phantom volumes (:func:`segdiff.sources.phantom.generate_case`).
* :func:`make_zip` writes a zip with arbitrary member names, symbolic links included (for the
  archive-safety tests).
* :func:`serve` runs a ``ThreadingHTTPServer`` on 127.0.0.1 (ephemeral port) in a thread: files
  with ``Range`` support (206 + ``Content-Range``, 416 past the end), JSON routes, a one-shot
  cut of a transfer after N body bytes, an option to ignore ``Range`` (answer 200), and a log
  of every request. :func:`serve_amos` adds a Zenodo-like record at ``/api/records/7262581``
  whose file link points back to the server.

Imported by the tests as ``from amos_fixture import ...`` (pytest puts ``tests/`` on
``sys.path``, as for ``conftest``).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import re
import socket
import stat
import threading
import time
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from segdiff.sources.phantom import amos_labels, generate_case

AMOS_RECORD_ID = 7262581
SMALL_SHAPE = (48, 40, 24)
SMALL_SPACING = (8.0, 8.0, 12.0)
_DATE = (2022, 10, 28, 12, 0, 0)  # fixed member timestamps: the same arguments give the same bytes


# --------------------------------------------------------------------------------------------
# Zips
# --------------------------------------------------------------------------------------------


def amos_plan(n_ct: int = 2, n_mri: int = 1, n_val_ct: int = 1, n_val_mri: int = 0, mri_first: int = 540) -> list[dict]:
    """The cases of :func:`make_amos_zip`: dicts with ``case``, ``modality``, ``subset`` (``Tr``/``Va``).

    CT cases are ``amos_0001 ..`` (ids < 500), MRI cases ``amos_<mri_first> ..`` (ids >= 500);
    the last ``n_val_ct`` CT and ``n_val_mri`` MRI cases go to the validation list.
    """
    if not (0 <= n_val_ct <= n_ct and 0 <= n_val_mri <= n_mri):
        raise ValueError("n_val_ct/n_val_mri must be between 0 and n_ct/n_mri")
    if mri_first < 500 or n_ct >= 500:
        raise ValueError("CT ids must stay below 500 and MRI ids start at 500 or later")
    plan = []
    for modality, n, first, n_val in (("ct", n_ct, 1, n_val_ct), ("mri", n_mri, mri_first, n_val_mri)):
        for i in range(n):
            subset = "Va" if i >= n - n_val else "Tr"
            plan.append({"case": f"amos_{first + i:04d}", "modality": modality, "subset": subset})
    return plan


@lru_cache(maxsize=64)
def _case_bytes(case: str, modality: str, shape: tuple, spacing: tuple, seed: int) -> tuple[bytes, bytes]:
    image, label = generate_case(case, modality, shape, spacing, seed)
    return tuple(gzip.compress(img.to_bytes(), compresslevel=1, mtime=0) for img in (image, label))


def _info(name: str, mode: int = stat.S_IFREG | 0o644) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_DATE)
    info.create_system = 3  # unix: external_attr carries the st_mode
    info.external_attr = (mode & 0xFFFF) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def make_zip(
    path: str | Path,
    members: Mapping[str, bytes | str],
    symlinks: Mapping[str, str] | None = None,
    compress: bool = True,
) -> Path:
    """Write a zip whose member names are taken verbatim (``../x``, ``/abs``, ``C:\\x`` included).

    ``symlinks`` maps member names to link targets (stored as Unix symlinks: ``S_IFLNK`` in
    ``external_attr``). Names ending in ``/`` are folders. Members are written in the given
    order, links last.
    """
    path = Path(path)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            info = _info(name, (stat.S_IFDIR | 0o755) if name.endswith("/") else (stat.S_IFREG | 0o644))
            if name.endswith("/"):
                info.external_attr |= 0x10  # MS-DOS directory flag
            if not compress:
                info.compress_type = zipfile.ZIP_STORED
            zf.writestr(info, data)
        for name, target in (symlinks or {}).items():
            zf.writestr(_info(name, stat.S_IFLNK | 0o777), target)
    return path


def make_amos_zip(
    path: str | Path,
    n_ct: int = 2,
    n_mri: int = 1,
    n_val_ct: int = 1,
    n_val_mri: int = 0,
    *,
    mri_first: int = 540,
    shape: tuple[int, int, int] = SMALL_SHAPE,
    spacing: tuple[float, float, float] = SMALL_SPACING,
    seed: int = 0,
    top: str | None = "amos22",
    extra: Mapping[str, bytes | str] | None = None,
) -> Path:
    """Write a small AMOS22-layout zip of phantom cases (see :func:`amos_plan` for the ids).

    Parameters
    ----------
    path : the zip to write.
    n_ct, n_mri : number of CT and MRI cases.
    n_val_ct, n_val_mri : how many of them go to the ``validation`` list (``imagesVa``/``labelsVa``);
        the others go to ``training`` (``imagesTr``/``labelsTr``).
    mri_first : number of the first MRI case (>= 500).
    shape, spacing, seed : phantom grid and seed (:func:`segdiff.sources.phantom.generate_case`).
    top : top folder of every member (``amos22`` as in the real archive); None for a flat zip.
    extra : more members ``{name relative to top: bytes}``.

    Returns
    -------
    Path
        ``path``. The same arguments give byte-identical zips.
    """
    plan = amos_plan(n_ct, n_mri, n_val_ct, n_val_mri, mri_first)
    prefix = f"{top}/" if top else ""
    members: dict[str, bytes | str] = {}
    if top:
        members[prefix] = b""
    for subset in ("Tr", "Va"):
        for kind in ("images", "labels"):
            if any(c["subset"] == subset for c in plan):
                members[f"{prefix}{kind}{subset}/"] = b""
    lists: dict[str, list[dict]] = {"Tr": [], "Va": []}
    for c in plan:
        image, label = _case_bytes(c["case"], c["modality"], tuple(shape), tuple(spacing), int(seed))
        rel_image = f"images{c['subset']}/{c['case']}.nii.gz"
        rel_label = f"labels{c['subset']}/{c['case']}.nii.gz"
        members[prefix + rel_image] = image
        members[prefix + rel_label] = label
        lists[c["subset"]].append({"image": f"./{rel_image}", "label": f"./{rel_label}"})
    dataset = {
        "name": "AMOS",
        "description": "segdiff test archive in AMOS22 layout (synthetic phantom, not patient data)",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {"0": "background", **{str(i): name for i, name in amos_labels().items()}},
        "numTraining": len(lists["Tr"]),
        "numValidation": len(lists["Va"]),
        "numTest": 0,
        "training": lists["Tr"],
        "validation": lists["Va"],
        "test": [],
    }
    members[prefix + "dataset.json"] = json.dumps(dataset, indent=2) + "\n"
    for name, data in (extra or {}).items():
        members[prefix + name] = data
    return make_zip(path, members)


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def zenodo_record(
    base_url: str,
    key: str,
    data: bytes,
    *,
    record_id: int = AMOS_RECORD_ID,
    md5: str | None = None,
    size: int | None = None,
    license_id: str = "cc-by-4.0",
    title: str = "AMOS test record",
    creators: tuple[str, ...] = ("Tester, Ada", "Example, Bob"),
    publication_date: str = "2022-10-28",
) -> dict[str, Any]:
    """A record in the JSON Zenodo's ``/api/records/<id>`` returns (legacy serializer of zenodo-rdm):
    ``files`` a list of ``{id, key, size, checksum: "md5:<hex>", links: {self: <content URL>}}``."""
    api = f"{base_url}/api/records/{record_id}"
    doi = f"10.5281/zenodo.{record_id}"
    return {
        "id": record_id,
        "recid": str(record_id),
        "doi": doi,
        "doi_url": f"https://doi.org/{doi}",
        "title": title,
        "links": {"self": api, "html": f"{base_url}/records/{record_id}", "files": f"{api}/files"},
        "metadata": {
            "title": title,
            "doi": doi,
            "publication_date": publication_date,
            "creators": [{"name": name, "affiliation": None} for name in creators],
            "access_right": "open",
            "license": {"id": license_id},
            "resource_type": {"type": "dataset", "title": "Dataset"},
        },
        "files": [
            {
                "id": "00000000-0000-0000-0000-000000000000",
                "key": key,
                "size": len(data) if size is None else size,
                "checksum": f"md5:{md5 or md5_hex(data)}",
                "links": {"self": f"{api}/files/{key}/content"},
            }
        ],
        "status": "published",
    }


# --------------------------------------------------------------------------------------------
# Loopback server
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    """One request the server answered."""

    method: str
    path: str
    range: str | None
    status: int
    time: float


_RANGE_RE = re.compile(r"^bytes=(\d+)-(\d*)$")


class _Handler(BaseHTTPRequestHandler):
    server_version = "segdiff-test/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr logging
        pass

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(head=False)

    def _answer(self, head: bool) -> None:
        owner: LoopbackServer = self.server.owner  # type: ignore[attr-defined]
        path = unquote(urlsplit(self.path).path)
        rng = self.headers.get("Range")
        body, ctype = owner._lookup(path)
        if body is None:
            owner._record(self.command, path, rng, 404)
            self.send_error(404)
            return
        status, start, stop = 200, 0, len(body)
        if rng and ctype == "application/octet-stream" and not owner.ignore_range:
            match = _RANGE_RE.match(rng.strip())
            if match:
                start = int(match.group(1))
                stop = min(int(match.group(2)) + 1, len(body)) if match.group(2) else len(body)
                if start >= len(body):
                    owner._record(self.command, path, rng, 416)
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
        payload = body[start:stop]
        owner._record(self.command, path, rng, status)
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{len(body)}")
        self.end_headers()
        if head:
            return
        cut = owner._take_cut(path)
        if cut is not None and cut < len(payload):
            self.wfile.write(payload[:cut])
            self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(payload)


class LoopbackServer:
    """State of a :func:`serve` server. Routes may be changed while it runs.

    Attributes
    ----------
    base_url : ``http://127.0.0.1:<port>``.
    routes : ``{path: bytes | Path | dict | list}`` (bytes and files are served with Range
        support as ``application/octet-stream``; dicts/lists as JSON).
    directory : a folder served below ``/`` (files only), or None.
    ignore_range : answer 200 with the whole body to Range requests.
    hits : every request, in arrival order.
    events : a shared, ordered list; every request appends ``("request", path)`` (tests may add
        their own entries, e.g. log records, to see what happened first).
    """

    def __init__(self, routes: Mapping[str, Any] | None = None, directory: Path | None = None):
        self.routes: dict[str, Any] = dict(routes or {})
        self.directory = directory
        self.ignore_range = False
        self.hits: list[Hit] = []
        self.events: list[tuple[str, str]] = []
        self._cuts: dict[str, int] = {}
        self._lock = threading.Lock()
        self.base_url = ""

    def url(self, path: str) -> str:
        return self.base_url + path

    def cut(self, path: str, after: int) -> None:
        """Close the connection after ``after`` body bytes of the next GET of ``path`` (once)."""
        with self._lock:
            self._cuts[path] = after

    def requests(self, path: str | None = None) -> list[Hit]:
        """The requests so far (of ``path`` only, when given)."""
        with self._lock:
            return [h for h in self.hits if path is None or h.path == path]

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.hits)

    def _record(self, method: str, path: str, rng: str | None, status: int) -> None:
        with self._lock:
            self.hits.append(Hit(method, path, rng, status, time.time()))
            self.events.append(("request", path))

    def _take_cut(self, path: str) -> int | None:
        with self._lock:
            return self._cuts.pop(path, None)

    def _lookup(self, path: str) -> tuple[bytes | None, str]:
        value = self.routes.get(path)
        if value is None and self.directory is not None:
            candidate = (self.directory / path.lstrip("/")).resolve()
            if candidate.is_file() and candidate.is_relative_to(self.directory.resolve()):
                value = candidate
        if value is None:
            return None, ""
        if isinstance(value, (dict, list)):
            return json.dumps(value).encode(), "application/json"
        if isinstance(value, Path):
            return value.read_bytes(), "application/octet-stream"
        return bytes(value), "application/octet-stream"


@contextlib.contextmanager
def serve(directory_or_routes: Path | Mapping[str, Any] | None = None) -> Iterator[LoopbackServer]:
    """Run a loopback HTTP server on 127.0.0.1 (ephemeral port) for the ``with`` block.

    ``directory_or_routes``: a folder whose files are served by relative path, or a mapping of
    routes (see :class:`LoopbackServer`). The server is shut down and its socket closed on exit.
    """
    if isinstance(directory_or_routes, Path):
        owner = LoopbackServer(directory=directory_or_routes)
    else:
        owner = LoopbackServer(routes=directory_or_routes)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.owner = owner  # type: ignore[attr-defined]
    owner.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield owner
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@dataclass
class AmosServer:
    """What :func:`serve_amos` yields: the server, the record API URL and the file's path on it."""

    server: LoopbackServer
    api_url: str
    file_path: str
    data: bytes
    record: dict


@contextlib.contextmanager
def serve_amos(zip_path: str | Path, key: str = "amos22.zip", **record_kwargs: Any) -> Iterator[AmosServer]:
    """Serve ``zip_path`` as a Zenodo record: ``/api/records/7262581`` (JSON, see
    :func:`zenodo_record`, which ``record_kwargs`` go to) and
    ``/api/records/7262581/files/<key>/content`` (the bytes, with Range support)."""
    data = Path(zip_path).read_bytes()
    record_id = record_kwargs.get("record_id", AMOS_RECORD_ID)
    with serve({}) as server:
        record = zenodo_record(server.base_url, key, data, **record_kwargs)
        api_path = f"/api/records/{record_id}"
        file_path = f"{api_path}/files/{key}/content"
        server.routes[api_path] = record
        server.routes[file_path] = data
        yield AmosServer(server, server.url(api_path), file_path, data, record)
