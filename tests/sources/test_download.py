"""Tests of segdiff.sources.download (http, zenodo, amos) and ``segdiff download``.

Against a loopback HTTP server (no outside network access).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tomllib
import zipfile
from pathlib import Path

import nibabel as nib
import pytest
from amos_fixture import AMOS_RECORD_ID, make_amos_zip, make_zip, md5_hex, serve, serve_amos
from conftest import REPO

from segdiff import cli
from segdiff.core.errors import SegdiffError
from segdiff.sources import download as dl
from segdiff.sources.casesheet import sheet_from_amos
from segdiff.sources.download import http as dl_http

KEY = "amos22.zip"
EXPECTED_MODALITY = {"amos_0001": "ct", "amos_0002": "ct", "amos_0540": "mri"}


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    """Talk to 127.0.0.1 directly even where a proxy is configured."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")


@pytest.fixture(scope="module")
def amos_zip(tmp_path_factory) -> Path:
    """A 3-case AMOS-layout zip: amos_0001 (CT, training), amos_0002 (CT, validation), amos_0540 (MRI, training)."""
    return make_amos_zip(tmp_path_factory.mktemp("zip") / KEY, n_ct=2, n_mri=1, n_val_ct=1)


def tree(path: Path) -> set[str]:
    """Every path below ``path`` (relative), folders included."""
    return {str(p.relative_to(path)) for p in path.rglob("*")}


def leftovers(root: Path) -> list[str]:
    """Temporary or partial things fetch_amos may leave in ``root``."""
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".") or p.name.endswith(".part")) if root.exists() else []


# --------------------------------------------------------------------------------------------
# The record
# --------------------------------------------------------------------------------------------


def test_parse_record_reads_zenodo_legacy_json(tmp_path, amos_zip):
    with serve_amos(amos_zip, license_id="cc-by-nc-sa-4.0", title="A title", creators=("Doe, Jane", "Roe, Rick")) as amos:
        record = dl.fetch_record(amos.api_url)
    assert record.title == "A title"
    assert record.license == "cc-by-nc-sa-4.0"
    assert record.creators == ("Doe, Jane", "Roe, Rick")
    assert record.citation == f"Doe, Jane; Roe, Rick (2022). A title. Zenodo. https://doi.org/10.5281/zenodo.{AMOS_RECORD_ID}"
    remote = record.files[KEY]
    assert remote.url == amos.server.url(amos.file_path)
    assert remote.size == amos_zip.stat().st_size
    assert remote.md5 == md5_hex(amos_zip.read_bytes())
    text = dl.describe(record)
    assert "License: cc-by-nc-sa-4.0" in text and f"Cite as: {record.citation}" in text


def test_parse_record_variants():
    api = "https://example.org/api/records/1"
    rdm = {  # InvenioRDM's own JSON: files.entries mapping, links.content (bytes) vs links.self (metadata)
        "id": "1",
        "pids": {"doi": {"identifier": "10.1/x"}},
        "metadata": {
            "title": "RDM",
            "publication_date": "2021-03",
            "creators": [{"person_or_org": {"name": "Ng, A"}}, {"person_or_org": {"family_name": "Li", "given_name": "B"}}],
            "rights": [{"id": "cc-by-4.0", "title": {"en": "Creative Commons Attribution 4.0 International"}}],
        },
        "files": {
            "enabled": True,
            "entries": {
                "a.zip": {
                    "key": "a.zip",
                    "size": 10,
                    "checksum": "md5:" + "A" * 32,
                    "links": {"self": f"{api}/files/a.zip", "content": f"{api}/files/a.zip/content"},
                },
                "b.bin": {"size": 3, "checksum": "sha256:" + "0" * 64, "links": {}},
            },
        },
    }
    r = dl.parse_record(rdm, api)
    assert r.license == "Creative Commons Attribution 4.0 International (cc-by-4.0)"
    assert r.creators == ("Ng, A", "Li, B") and r.doi == "10.1/x" and r.year == "2021"
    assert r.files["a.zip"] == dl.RemoteFile(f"{api}/files/a.zip/content", 10, "a" * 32)
    assert r.files["b.bin"] == dl.RemoteFile(f"{api}/files/b.bin/content", 3, None)  # no link: content URL; no md5

    deposit = {  # deposit-API file schema: filename/filesize, bare hex checksum, links.download
        "title": "Dep",
        "metadata": {"title": "Dep", "license": "CC-BY-4.0", "creators": [{"name": "X"}]},
        "files": [
            {"filename": "c.zip", "filesize": 7, "checksum": "b" * 32, "links": {"self": "/api/x/meta", "download": "/api/x/c.zip"}}
        ],
    }
    r = dl.parse_record(deposit, api)
    assert r.files["c.zip"] == dl.RemoteFile("https://example.org/api/x/c.zip", 7, "b" * 32)  # relative link resolved
    assert r.license == "CC-BY-4.0" and r.citation.startswith("X (n.d.). Dep. Zenodo.")


def test_parse_record_errors():
    api = "https://example.org/api/records/9"
    with pytest.raises(dl.DownloadError, match=r"records/9: record lists no files \(access right: restricted\)"):
        dl.parse_record({"metadata": {"title": "T", "access_right": "restricted"}, "files": []}, api)
    with pytest.raises(dl.DownloadError, match="no metadata.title"):
        dl.parse_record({"metadata": {}, "files": [{"key": "a"}]}, api)
    record = dl.parse_record({"metadata": {"title": "T"}, "files": [{"key": "a"}]}, api)
    assert record.license.startswith("not stated in the record")


def test_fetch_record_http_error_names_the_url():
    with serve({}) as server:
        url = server.url("/api/records/1")
        with pytest.raises(dl.DownloadError, match=rf"^{url}: HTTP 404"):
            dl.fetch_record(url)
        server.routes["/api/records/2"] = b"not json"
        with pytest.raises(dl.DownloadError, match="not valid JSON"):
            dl.fetch_record(server.url("/api/records/2"))


# --------------------------------------------------------------------------------------------
# fetch_amos: the whole path
# --------------------------------------------------------------------------------------------


def test_fetch_amos_end_to_end_gives_a_case_sheet(tmp_path, amos_zip):
    root = tmp_path / "data"
    with serve_amos(amos_zip) as amos:
        dataset = dl.fetch_amos(root, amos.api_url)
    assert dataset == root / "amos22" and (dataset / "dataset.json").is_file()
    assert sorted(p.name for p in root.iterdir()) == ["amos22"]  # zip deleted, no temp or part left
    sheet = sheet_from_amos(dataset)
    assert dict(zip(sheet["case"], sheet["modality"])) == EXPECTED_MODALITY
    for image, label in zip(sheet["image"], sheet["label"]):
        img, lab = nib.load(image), nib.load(label)
        assert img.shape == lab.shape and len(img.shape) == 3
    assert "imagesVa" in sheet.set_index("case").loc["amos_0002", "image"]  # the validation list is read too
    file_hits = amos.server.requests(amos.file_path)
    assert [(h.range, h.status) for h in file_hits] == [(None, 200)]


def test_license_and_citation_logged_before_the_first_file_request(tmp_path, amos_zip, caplog):
    caplog.set_level(logging.INFO, logger="segdiff.sources.download")
    with serve_amos(amos_zip, license_id="test-licence-7.1", title="Licence probe") as amos:
        events = amos.server.events

        class Recorder(logging.Handler):
            def emit(self, record):
                events.append(("log", record.getMessage()))

        recorder = Recorder()
        logging.getLogger("segdiff.sources.download").addHandler(recorder)
        try:
            dl.fetch_amos(tmp_path, amos.api_url)
        finally:
            logging.getLogger("segdiff.sources.download").removeHandler(recorder)
    assert "License: test-licence-7.1" in caplog.text  # read from the record, not written in the module
    assert "Cite as: Tester, Ada; Example, Bob (2022). Licence probe. Zenodo. https://doi.org/10.5281/zenodo.7262581" in caplog.text
    order = [e for e in events if e[0] == "request" or e[1].startswith(("License:", "Cite as:"))]
    assert order == [
        ("request", f"/api/records/{AMOS_RECORD_ID}"),
        ("log", "License: test-licence-7.1"),
        ("log", "Cite as: Tester, Ada; Example, Bob (2022). Licence probe. Zenodo. https://doi.org/10.5281/zenodo.7262581"),
        ("request", amos.file_path),
    ]


def test_fetch_amos_is_idempotent_without_network(tmp_path, amos_zip):
    with serve_amos(amos_zip) as amos:
        first = dl.fetch_amos(tmp_path, amos.api_url)
        n = amos.server.count
        assert n == 2  # record + file
        second = dl.fetch_amos(tmp_path, amos.api_url)
        assert second == first
        assert amos.server.count == n  # no request at all
    # and with nothing listening at the URL either
    assert dl.fetch_amos(tmp_path, "http://127.0.0.1:9/api/records/7262581") == first


def test_fetch_amos_flat_zip_lands_in_amos22(tmp_path):
    flat = make_amos_zip(tmp_path / "flat.zip", n_ct=1, n_mri=1, n_val_ct=0, top=None)
    root = tmp_path / "root"
    with serve_amos(flat) as amos:
        dataset = dl.fetch_amos(root, amos.api_url, keep_zip=True)
    assert dataset == root / "amos22"
    assert sorted(p.name for p in root.iterdir()) == ["amos22", KEY]  # keep_zip
    assert (root / KEY).read_bytes() == flat.read_bytes()
    assert set(sheet_from_amos(dataset)["modality"]) == {"ct", "mri"}


def test_fetch_amos_refuses_an_incomplete_folder_before_any_request(tmp_path, amos_zip):
    (tmp_path / "amos22").mkdir()
    with serve_amos(amos_zip) as amos:
        with pytest.raises(dl.DownloadError, match=r"amos22: exists but has no dataset.json"):
            dl.fetch_amos(tmp_path, amos.api_url)
        assert amos.server.count == 0


def test_fetch_amos_unknown_key(tmp_path, amos_zip):
    with serve_amos(amos_zip) as amos:
        with pytest.raises(dl.DownloadError, match=r"record has no file 'other.zip' \(files: amos22.zip\)"):
            dl.fetch_amos(tmp_path, amos.api_url, key="other.zip")
        assert [h.path for h in amos.server.hits] == [f"/api/records/{AMOS_RECORD_ID}"]


# --------------------------------------------------------------------------------------------
# Resume
# --------------------------------------------------------------------------------------------


def test_cut_transfer_resumes_with_range_and_is_byte_identical(tmp_path, amos_zip):
    data = amos_zip.read_bytes()
    cut = len(data) // 3
    with serve_amos(amos_zip) as amos:
        amos.server.cut(amos.file_path, cut)
        dataset = dl.fetch_amos(tmp_path, amos.api_url, keep_zip=True)
        hits = amos.server.requests(amos.file_path)
    assert [(h.range, h.status) for h in hits] == [(None, 200), (f"bytes={cut}-", 206)]
    assert (tmp_path / KEY).read_bytes() == data
    assert set(sheet_from_amos(dataset)["case"]) == set(EXPECTED_MODALITY)


def test_interrupted_download_keeps_the_part_and_the_next_call_resumes(tmp_path, amos_zip):
    data = amos_zip.read_bytes()
    dest = tmp_path / KEY
    part = tmp_path / (KEY + ".part")
    cut = len(data) // 2 + 123
    with serve({"/f": data}) as server:
        server.cut("/f", cut)
        with pytest.raises(dl.DownloadError, match=r"interrupted .*rerun to resume") as err:
            dl.download(server.url("/f"), dest, len(data), md5_hex(data), chunk=4096, retries=0)
        assert not isinstance(err.value, dl.ChecksumError)
        assert not dest.exists() and part.read_bytes() == data[:cut]
        assert dl.download(server.url("/f"), dest, len(data), md5_hex(data), chunk=4096) == dest
        assert [(h.range, h.status) for h in server.requests("/f")] == [(None, 200), (f"bytes={cut}-", 206)]
    assert dest.read_bytes() == data and not part.exists()
    assert dl.file_md5(dest) == md5_hex(data)


def test_server_answering_200_to_a_range_request_restarts_cleanly(tmp_path, amos_zip):
    data = amos_zip.read_bytes()
    with serve_amos(amos_zip) as amos:
        amos.server.ignore_range = True
        amos.server.cut(amos.file_path, len(data) // 4)
        dl.fetch_amos(tmp_path, amos.api_url, keep_zip=True)
        hits = amos.server.requests(amos.file_path)
    assert [(h.range, h.status) for h in hits] == [(None, 200), (f"bytes={len(data) // 4}-", 200)]
    assert (tmp_path / KEY).read_bytes() == data


def test_416_on_a_complete_part_and_on_an_overlong_part(tmp_path, amos_zip):
    data = amos_zip.read_bytes()
    dest, part = tmp_path / KEY, tmp_path / (KEY + ".part")
    with serve({"/f": data}) as server:
        part.write_bytes(data)  # complete, size unknown to the caller: the server's 416 says so
        dl.download(server.url("/f"), dest, None, md5_hex(data))
        assert [(h.range, h.status) for h in server.requests("/f")] == [(f"bytes={len(data)}-", 416)]
        assert dest.read_bytes() == data and not part.exists()

        dest.unlink()
        part.write_bytes(data + b"junk")  # longer than the file: 416, then a fresh transfer
        dl.download(server.url("/f"), dest, None, md5_hex(data))
        assert [(h.range, h.status) for h in server.requests("/f")][1:] == [(f"bytes={len(data) + 4}-", 416), (None, 200)]
        assert dest.read_bytes() == data and not part.exists()


def test_existing_destination_is_not_downloaded_again_unless_wrong(tmp_path, amos_zip):
    data = amos_zip.read_bytes()
    dest = tmp_path / KEY
    dest.write_bytes(data)
    with serve({"/f": data}) as server:
        dl.download(server.url("/f"), dest, len(data), md5_hex(data))
        assert server.count == 0
        dest.write_bytes(bytes(len(data)))  # right size, wrong content
        dl.download(server.url("/f"), dest, len(data), md5_hex(data))
        assert server.count == 1
    assert dest.read_bytes() == data


# --------------------------------------------------------------------------------------------
# Checksums
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["record", "pinned"])
def test_wrong_md5_stops_before_extraction(tmp_path, amos_zip, caplog, where):
    data = amos_zip.read_bytes()
    good, bad = md5_hex(data), "0123456789abcdef0123456789abcdef"
    root = tmp_path / "root"
    with serve_amos(amos_zip, md5=bad if where == "record" else None) as amos:
        with pytest.raises(dl.ChecksumError) as err:
            dl.fetch_amos(root, amos.api_url, md5=bad if where == "pinned" else None)
    message = str(err.value)
    assert message.startswith(str(root / KEY)) and f"expected {bad}, got {good}" in message
    assert not (root / "amos22").exists()
    assert sorted(p.name for p in root.iterdir()) == []  # no zip, no .part, no temp folder
    if where == "pinned":
        assert f"pinned md5 {bad} differs from the record's {good}" in caplog.text


def test_wrong_size_is_reported_and_the_part_removed(tmp_path, amos_zip):
    size = amos_zip.stat().st_size
    with serve_amos(amos_zip, size=size + 10) as amos:
        with pytest.raises(dl.ChecksumError, match=rf"size mismatch: expected {size + 10} bytes, got {size}"):
            dl.fetch_amos(tmp_path, amos.api_url)
    assert list(tmp_path.iterdir()) == []


def test_malformed_md5_argument(tmp_path, amos_zip):
    with serve_amos(amos_zip) as amos:
        with pytest.raises(dl.DownloadError, match=r"md5 argument: not an md5 digest"):
            dl.fetch_amos(tmp_path, amos.api_url, md5="xyz")
        assert amos.server.count == 0


# --------------------------------------------------------------------------------------------
# Archive safety
# --------------------------------------------------------------------------------------------

GOOD = {"amos22/": b"", "amos22/dataset.json": b"{}"}


def _evil_zips(tmp_path: Path) -> dict[str, tuple[dict, dict, str]]:
    """kind -> (members, symlinks, the reason the refusal must give)."""
    return {
        "dotdot": ({**GOOD, "../evil": b"x"}, {}, r"'\.\.' component$"),
        "nested-dotdot": ({**GOOD, "amos22/../../evil": b"x"}, {}, r"'\.\.' component$"),
        "absolute": ({**GOOD, str(tmp_path / "evil"): b"x"}, {}, "absolute path$"),
        "backslash-dotdot": ({**GOOD, "amos22\\..\\..\\evil": b"x"}, {}, r"'\.\.' component \(reading backslashes"),
        "windows-drive": ({**GOOD, "C:\\evil": b"x"}, {}, r"absolute Windows path \(drive letter\)$"),
        "windows-root": ({**GOOD, "\\evil": b"x"}, {}, r"absolute path \(reading backslashes as separators\)$"),
        "symlink": (GOOD, {"amos22/link": "../../evil"}, "symbolic link$"),
        "file-and-folder": ({**GOOD, "amos22/a": b"x", "amos22/a/b": b"y"}, {}, "both a file and a folder$"),
    }


EVIL_KINDS = ["dotdot", "nested-dotdot", "absolute", "backslash-dotdot", "windows-drive", "windows-root", "symlink", "file-and-folder"]


@pytest.mark.parametrize("kind", EVIL_KINDS)
def test_unsafe_zip_is_refused_and_nothing_is_written(tmp_path, kind):
    members, links, reason = _evil_zips(tmp_path)[kind]
    zip_path = make_zip(tmp_path / "evil.zip", members, symlinks=links)
    (tmp_path / "work").mkdir()
    before = tree(tmp_path)
    with pytest.raises(dl.UnsafeArchiveError, match=r"evil.zip: member .* refused: " + reason):
        dl.safe_extract(zip_path, tmp_path / "work" / "target")
    assert tree(tmp_path) == before
    assert not (tmp_path / "evil").exists() and not (tmp_path.parent / "evil").exists()


@pytest.mark.parametrize("kind", ["dotdot", "nested-dotdot"])
def test_resolved_path_check_catches_what_the_name_check_would_miss(tmp_path, monkeypatch, kind):
    """Belt and braces: with a naive name check, the resolved-path check still refuses."""
    monkeypatch.setattr(dl_http, "_member_parts", lambda name: tuple(p for p in name.split("/") if p))
    members, links, _ = _evil_zips(tmp_path)[kind]
    zip_path = make_zip(tmp_path / "evil.zip", members, symlinks=links)
    before = tree(tmp_path)
    with pytest.raises(dl.UnsafeArchiveError, match="refused: resolves outside"):
        dl.safe_extract(zip_path, tmp_path / "target")
    assert tree(tmp_path) == before


def test_duplicate_member_is_refused(tmp_path):
    zip_path = tmp_path / "dup.zip"
    with zipfile.ZipFile(zip_path, "w") as zf, pytest.warns(UserWarning, match="Duplicate name"):
        zf.writestr("amos22/a.txt", b"first")
        zf.writestr("amos22/a.txt", b"second")
    before = tree(tmp_path)
    with pytest.raises(dl.UnsafeArchiveError, match="duplicate name"):
        dl.safe_extract(zip_path, tmp_path / "target")
    assert tree(tmp_path) == before


def test_corrupt_member_leaves_no_temp_folder(tmp_path):
    payload = b"A" * 4096
    zip_path = make_zip(tmp_path / "bad.zip", {"amos22/ok.txt": b"fine", "amos22/big.bin": payload}, compress=False)
    raw = bytearray(zip_path.read_bytes())
    at = raw.index(payload) + 100
    raw[at] ^= 0xFF  # break the CRC of the second member; the first one has been written by then
    zip_path.write_bytes(bytes(raw))
    before = tree(tmp_path)
    with pytest.raises(dl.DownloadError, match=r"bad.zip: member 'amos22/big.bin' unreadable"):
        dl.safe_extract(zip_path, tmp_path / "target")
    assert tree(tmp_path) == before


def test_safe_extract_all_or_nothing_target(tmp_path, amos_zip):
    target = tmp_path / "out"
    assert dl.safe_extract(amos_zip, target) == target
    assert (target / "amos22" / "dataset.json").is_file()
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o777 & ~umask  # not left with mkdtemp's private 0700
    with pytest.raises(dl.DownloadError, match=r"out: already exists"):
        dl.safe_extract(amos_zip, target)
    with pytest.raises(dl.DownloadError, match="not a readable zip"):
        dl.safe_extract(tmp_path / "out" / "amos22" / "dataset.json", tmp_path / "out2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_unsafe_zip_through_fetch_amos_leaves_no_dataset(tmp_path):
    zip_path = make_zip(tmp_path / "evil.zip", {**GOOD, "amos22/../../evil": b"x"})
    root = tmp_path / "root"
    with serve_amos(zip_path) as amos:
        with pytest.raises(dl.UnsafeArchiveError):
            dl.fetch_amos(root, amos.api_url)
    assert sorted(p.name for p in root.iterdir()) == [KEY]  # the verified download stays, nothing else
    assert not (tmp_path / "evil").exists()


def test_zip_without_dataset_json_is_reported(tmp_path):
    zip_path = make_zip(tmp_path / "odd.zip", {"a/x.txt": b"1", "b/y.txt": b"2"})
    root = tmp_path / "root"
    with serve_amos(zip_path) as amos:
        with pytest.raises(dl.DownloadError, match=re.escape(f"{root / KEY}: has no dataset.json")):
            dl.fetch_amos(root, amos.api_url)
    assert leftovers(root) == [] and not (root / "amos22").exists()


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def test_cli(tmp_path, amos_zip, capsys):
    with serve_amos(amos_zip) as amos:
        assert cli.main(["download", "amos", "--root", str(tmp_path), "--url", amos.api_url]) == 0
        assert capsys.readouterr().out.strip() == str(tmp_path / "amos22")
        assert cli.main(["download", "amos", "--root", str(tmp_path / "other"), "--url", amos.api_url, "--md5", "0" * 32]) == 1
    err = capsys.readouterr().err
    assert "error: " in err and "md5 mismatch: expected 00000000000000000000000000000000" in err
    assert issubclass(dl.DownloadError, SegdiffError)
    assert os.listdir(tmp_path / "other") == []


def test_cli_download_arguments(tmp_path, capsys):
    args = cli.build_parser().parse_args(["download", "amos", "--root", str(tmp_path)])
    assert (args.command, args.dataset, args.root) == ("download", "amos", tmp_path)
    assert (args.url, args.key, args.md5, args.keep_zip) == (dl.AMOS_RECORD_API, dl.AMOS_KEY, None, False)
    args = cli.build_parser().parse_args(
        ["download", "amos", "--root", "r", "--url", "http://x/api/records/1", "--md5", "a" * 32, "--key", "k.zip", "--keep-zip"]
    )
    assert (args.url, args.md5, args.key, args.keep_zip) == ("http://x/api/records/1", "a" * 32, "k.zip", True)
    bad = ((["download", "amos"], "--root"), (["download"], "dataset"), (["download", "kaggle", "--root", "r"], "invalid choice"))
    for argv, message in bad:
        with pytest.raises(SystemExit) as exit_:
            cli.main(argv)
        assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_cli_download_keeps_the_zip_and_is_idempotent(tmp_path, amos_zip, capsys):
    with serve_amos(amos_zip) as amos:
        argv = ["download", "amos", "--root", str(tmp_path), "--url", amos.api_url, "--keep-zip"]
        assert cli.main(argv) == 0
        n = amos.server.count
        assert cli.main(argv) == 0 and amos.server.count == n  # second run: no request
    assert capsys.readouterr().out.split() == [str(tmp_path / "amos22")] * 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["amos22", KEY]


def test_one_entry_point():
    """``segdiff`` (cli.main) is the only command line: the library modules have none."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"segdiff": "segdiff.cli:main"}
    from segdiff.sources import weights
    from segdiff.sources.download import amos, zenodo

    for module in (dl, dl_http, zenodo, amos, weights):
        assert not hasattr(module, "main"), module.__name__
    assert dl.download is dl_http.download and weights.download is dl_http.download  # one transfer


# --------------------------------------------------------------------------------------------
# download(): SHA-256 (torch hub's file-name convention), permissions, nothing to verify against
# --------------------------------------------------------------------------------------------


def test_download_checks_sha256_and_its_prefix(tmp_path):
    data = os.urandom(50_000)
    digest = hashlib.sha256(data).hexdigest()
    with serve({"/w.pth": data}) as server:
        for i, expected in enumerate((digest, digest[:8].upper(), "sha256:" + digest)):
            dest = tmp_path / f"ok{i}.pth"
            assert dl.download(server.url("/w.pth"), dest, sha256=expected, mode=0o640) == dest
            assert dest.read_bytes() == data and dest.stat().st_mode & 0o777 == 0o640
        dest = tmp_path / "bad.pth"
        with pytest.raises(dl.ChecksumError, match=rf"SHA-256 mismatch: expected a digest starting with deadbeef, got {digest}"):
            dl.download(server.url("/w.pth"), dest, sha256="deadbeef")
        assert not dest.exists() and not (tmp_path / "bad.pth.part").exists()
        with pytest.raises(dl.DownloadError, match="not a SHA-256 digest"):
            dl.download(server.url("/w.pth"), dest, sha256="xyz")
        n = server.count
        dl.download(server.url("/w.pth"), tmp_path / "ok0.pth", sha256=digest[:8])  # verified: no request
        assert server.count == n
        dl.download(server.url("/w.pth"), tmp_path / "ok0.pth")  # nothing to verify it against: fetched again
        assert server.count == n + 1
    with pytest.raises(dl.DownloadError, match="not an http"):
        dl.download("file:///etc/passwd", tmp_path / "x")
