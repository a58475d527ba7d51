"""Zenodo records: what a dataset is, its licence, how to cite it and where its files are.

:func:`fetch_record` reads a record through Zenodo's REST API
(``https://zenodo.org/api/records/<id>``) into a :class:`Record`: title, licence, citation and
the record's files (URL, size, md5). Nothing about a licence or a citation is written in this
module; both come from the record. :func:`describe` is the text logged before any download.

Zenodo record format:
    ``GET https://zenodo.org/api/records/<id>`` (``Accept: application/json``) answers, since
    Zenodo moved to InvenioRDM (October 2023), the "legacy" Zenodo JSON: ``files`` is a list of
    ``{"id", "key", "size", "checksum": "md5:<hex>", "links": {"self": ".../api/records/<id>/files/<key>/content"}}``
    and ``metadata`` holds ``title``, ``creators`` (``[{"name", "affiliation", "orcid"}]``),
    ``doi``, ``publication_date`` and ``license`` (``{"id": "cc-by-4.0"}``). :func:`parse_record`
    also reads the other shapes the same data takes: the deposit-API file schema
    (``filename`` / ``filesize`` / a bare hex ``checksum`` / ``links.download``) and
    InvenioRDM's own JSON (``files.entries`` as a mapping, ``links.content``,
    ``metadata.rights``, ``creators[].person_or_org.name``, ``pids.doi.identifier``). Where a
    file has both a ``content``/``download`` link and a ``self`` link, the former is the bytes
    and the latter may be the file's metadata, so the former is preferred.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urljoin
from urllib.request import Request, urlopen

from segdiff.sources.download.http import _MD5_RE, USER_AGENT, DownloadError, check_http_url

__all__ = ["RemoteFile", "Record", "parse_record", "fetch_record", "describe"]


@dataclass(frozen=True)
class RemoteFile:
    """One file of a record.

    Attributes:
        url: download URL (the bytes).
        size: size in bytes, when known.
        md5: md5 as lower-case hex, when known.
    """

    url: str
    size: int | None
    md5: str | None


@dataclass(frozen=True)
class Record:
    """What a Zenodo record says about a dataset.

    Attributes:
        title: record title.
        license: the licence as the record states it (``"<title> (<id>)"`` or the id alone).
        citation: ``"<creators> (<year>). <title>. Zenodo. https://doi.org/<doi>"``, built from
            the record.
        files: ``{key: RemoteFile}``.
        doi: as found in the record (``None`` when absent).
        year: publication year as found in the record (``None`` when absent).
        creators: creator names in record order.
        api_url: the URL the record was read from.
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

    Args:
        data: the decoded JSON.
        api_url: the URL it was read from.

    Returns:
        The record.

    Raises:
        DownloadError: if the JSON is not an object, has no title, or lists no file.
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


def fetch_record(api_url: str, timeout: float = 60) -> Record:
    """Read a Zenodo record through the REST API (``https://zenodo.org/api/records/<id>``).

    Args:
        api_url: the record's API URL.
        timeout: socket timeout in seconds.

    Returns:
        The record (:func:`parse_record`).

    Raises:
        DownloadError: on a network error, an HTTP error status, a body that is not JSON, or a
            record without a title or files (the message names ``api_url``).
    """
    check_http_url(api_url)
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
    """The lines to show before downloading.

    Args:
        record: the record.

    Returns:
        Dataset, licence, citation and source, one per line.
    """
    return "\n".join(
        [
            f"Dataset: {record.title}",
            f"License: {record.license}",
            f"Cite as: {record.citation}",
            f"Source:  {record.api_url}",
        ]
    )
