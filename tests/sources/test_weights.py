"""Weights lookup (never a download), the explicit fetch and ``segdiff weights``, against a loopback HTTP server."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading

import numpy as np
import pytest
import torch
from amos_fixture import serve
from pytorch_fid.inception import FID_WEIGHTS_URL
from torchvision.models import Inception_V3_Weights

from segdiff import cli
from segdiff.core.errors import InputError
from segdiff.sources.weights import (
    FETCH_COMMAND,
    KNOWN_WEIGHTS,
    WeightsUnavailable,
    fetch_known_weights,
    fetch_weights,
    find_weights,
    read_state_dict,
)


# --------------------------------------------------------------------------- known sets and lookup


def test_known_weight_sets_are_pytorch_fid_and_torchvision_inception():
    assert KNOWN_WEIGHTS["fid-inception"].url == FID_WEIGHTS_URL
    assert KNOWN_WEIGHTS["fid-inception"].file_name == "pt_inception-2015-12-05-6726825d.pth"
    assert KNOWN_WEIGHTS["torchvision-inception"].url == Inception_V3_Weights.IMAGENET1K_V1.url
    assert KNOWN_WEIGHTS["torchvision-inception"].file_name == "inception_v3_google-0cc3c7bd.pth"


@pytest.mark.parametrize("key", sorted(KNOWN_WEIGHTS))
def test_missing_known_weights_name_where_they_were_looked_for(key, empty_hub, tmp_path):
    known = KNOWN_WEIGHTS[key]
    hub_file = empty_hub / "checkpoints" / known.file_name
    for name in (key, known.file_name):  # by key or by file name
        with pytest.raises(WeightsUnavailable) as err:
            find_weights(name)
        message = str(err.value)
        assert str(hub_file) in message and f"segdiff weights fetch {key}" in message and known.url in message
    configured = tmp_path / "elsewhere" / "weights.pth"
    with pytest.raises(WeightsUnavailable) as err:
        find_weights(key, configured)
    message = str(err.value)
    assert str(configured) in message and str(hub_file) in message and f"--dest {configured}" in message
    assert not configured.exists() and not (empty_hub / "checkpoints").exists()  # nothing created or fetched


def test_unknown_weights_and_bad_names(empty_hub):
    with pytest.raises(WeightsUnavailable) as err:
        find_weights("mine.pth")
    assert str(empty_hub / "checkpoints" / "mine.pth") in str(err.value)
    with pytest.raises(ValueError, match="plain file name"):
        find_weights("sub/mine.pth")


def test_weights_are_found_in_the_hub_cache_or_at_the_configured_path(empty_hub, tmp_path):
    cached = empty_hub / "checkpoints" / KNOWN_WEIGHTS["fid-inception"].file_name
    cached.parent.mkdir()
    cached.write_bytes(b"x")
    assert find_weights("fid-inception") == cached == find_weights(cached.name)
    configured = tmp_path / "w.pth"
    configured.write_bytes(b"y")
    assert find_weights("torchvision-inception", configured) == configured


def test_read_state_dict_refuses_what_is_not_tensors_by_name(tmp_path):
    good = tmp_path / "good.pth"
    torch.save(torch.nn.Linear(2, 2).state_dict(), good)
    assert set(read_state_dict(good, "test weights")) == {"weight", "bias"}
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a torch file at all")
    tensor = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor)
    for path in (corrupt, tensor, tmp_path / "missing.pth"):
        with pytest.raises(InputError) as err:
            read_state_dict(path, "test weights")
        assert str(err.value).startswith(f"{path}: ")


# --------------------------------------------------------------------------- fetching


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A loopback HTTP server for a directory; yields (directory, base URL); shut down afterwards."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    root = tmp_path / "served"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_fetch_writes_identical_bytes_atomically(served, tmp_path):
    root, base = served
    payload = np.random.default_rng(4).bytes(3 * 2**20 + 17)  # several read chunks
    (root / "weights.bin").write_bytes(payload)
    dest = tmp_path / "out" / "w.pth"
    assert fetch_weights(f"{base}/weights.bin", dest, timeout=10) == dest
    assert dest.read_bytes() == payload and dest.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in dest.parent.iterdir()] == ["w.pth"]  # no temp file left
    # an existing directory receives the URL's file name
    assert fetch_weights(f"{base}/weights.bin", dest.parent, timeout=10) == dest.parent / "weights.bin"


def test_fetch_defaults_to_the_hub_cache_and_verifies_hub_hash_names(served, empty_hub, tmp_path):
    root, base = served
    payload = b"inception weights stand-in"
    good = f"w-{hashlib.sha256(payload).hexdigest()[:8]}.pth"
    (root / good).write_bytes(payload)
    (root / "w-deadbeef.pth").write_bytes(payload)
    path = fetch_weights(f"{base}/{good}", timeout=10)
    assert path == empty_hub / "checkpoints" / good and path.read_bytes() == payload
    assert find_weights(good) == path
    dest = tmp_path / "bad" / "w.pth"
    with pytest.raises(WeightsUnavailable, match="SHA-256"):
        fetch_weights(f"{base}/w-deadbeef.pth", dest, timeout=10)
    assert list(dest.parent.iterdir()) == []


def test_fetch_http_error_is_clear_and_leaves_nothing(served, tmp_path):
    _, base = served
    dest = tmp_path / "out" / "w.pth"
    with pytest.raises(WeightsUnavailable) as err:
        fetch_weights(f"{base}/missing.pth", dest, timeout=10)
    message = str(err.value)
    assert "404" in message and f"{base}/missing.pth" in message and str(dest) in message
    assert not dest.exists() and list(dest.parent.iterdir()) == []
    with pytest.raises(ValueError, match="file name"):
        fetch_weights(f"{base}/", dest)
    with pytest.raises(ValueError, match="timeout"):
        fetch_weights(f"{base}/w.pth", dest, timeout=0)


def test_fetch_command_line(served, empty_hub, tmp_path, capsys):
    root, base = served
    (root / "weights.bin").write_bytes(b"abc")
    dest = tmp_path / "cli.pth"
    assert cli.main(["weights", "fetch", "fid-inception", "--dest", str(dest), "--url", f"{base}/weights.bin"]) == 0
    assert dest.read_bytes() == b"abc" and str(dest) in capsys.readouterr().out
    # no --dest: the hub cache under the set's own file name, where find_weights looks
    assert cli.main(["weights", "fetch", "torchvision-inception", "--url", f"{base}/weights.bin"]) == 0
    assert find_weights("torchvision-inception").read_bytes() == b"abc"
    # a directory as --dest receives the set's file name
    assert cli.main(["weights", "fetch", "fid-inception", "--dest", str(tmp_path), "--url", f"{base}/weights.bin"]) == 0
    assert (tmp_path / KNOWN_WEIGHTS["fid-inception"].file_name).read_bytes() == b"abc"
    capsys.readouterr()
    assert cli.main(["weights", "fetch", "fid-inception", "--dest", str(tmp_path / "x.pth"), "--url", f"{base}/nope"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "404" in err and f"{base}/nope" in err
    with pytest.raises(SystemExit) as exit_:
        cli.main(["weights", "fetch", "no-such-weights"])
    assert exit_.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_cli_weights_arguments(capsys):
    assert FETCH_COMMAND == "segdiff weights fetch"  # what find_weights' messages tell the user to run
    args = cli.build_parser().parse_args(["weights", "fetch", "fid-inception"])
    expected = ("weights", "fetch", "fid-inception", None, None, 60.0)
    assert (args.command, args.action, args.name, args.dest, args.url, args.timeout) == expected
    args = cli.build_parser().parse_args(
        ["weights", "fetch", "torchvision-inception", "--dest", "d", "--url", "http://m/w.pth", "--timeout", "5"]
    )
    assert (args.name, str(args.dest), args.url, args.timeout) == ("torchvision-inception", "d", "http://m/w.pth", 5.0)
    bad = (
        (["weights"], "action"),
        (["weights", "fetch"], "name"),
        (["weights", "fetch", "fid-inception", "--timeout", "x"], "invalid float"),
    )
    for argv, message in bad:
        with pytest.raises(SystemExit) as exit_:
            cli.main(argv)
        assert exit_.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown weight set 'nope'"):
        fetch_known_weights("nope")


# --------------------------------------------------------------------------- resume (the shared transfer)


@pytest.fixture
def no_proxy(monkeypatch):
    """Talk to 127.0.0.1 directly even where a proxy is configured."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")


def test_cut_weights_transfer_resumes_with_range(no_proxy, tmp_path):
    payload = np.random.default_rng(5).bytes(2 * 2**20 + 5)
    name = f"w-{hashlib.sha256(payload).hexdigest()[:8]}.pth"
    cut = len(payload) // 3
    (tmp_path / "out").mkdir()  # an existing directory receives the URL's file name
    with serve({f"/{name}": payload}) as server:
        server.cut(f"/{name}", cut)
        dest = fetch_weights(server.url(f"/{name}"), tmp_path / "out", timeout=10)
        hits = [(h.range, h.status) for h in server.requests(f"/{name}")]
        assert hits == [(None, 200), (f"bytes={cut}-", 206)]
        assert dest == tmp_path / "out" / name and dest.read_bytes() == payload
        assert dest.stat().st_mode & 0o777 == 0o644 and [p.name for p in dest.parent.iterdir()] == [name]
        n = server.count
        assert fetch_weights(server.url(f"/{name}"), dest, timeout=10) == dest  # verified against its hash: no request
        assert server.count == n


def test_interrupted_weights_fetch_keeps_the_part_and_segdiff_weights_resumes_it(no_proxy, empty_hub, tmp_path, capsys):
    payload = np.random.default_rng(6).bytes(3 * 2**20 + 11)
    name = f"w-{hashlib.sha256(payload).hexdigest()[:8]}.pth"
    dest = tmp_path / "fid.pth"
    part = tmp_path / "fid.pth.part"
    cut = len(payload) // 2 + 7
    with serve({f"/{name}": payload}) as server:
        url = server.url(f"/{name}")
        server.cut(f"/{name}", cut)
        with pytest.raises(WeightsUnavailable) as err:
            fetch_weights(url, dest, timeout=10, retries=0)
        message = str(err.value)
        assert message.startswith(f"could not download {url} to {dest}: ") and "rerun to resume" in message
        assert not dest.exists() and part.read_bytes() == payload[:cut]
        assert cli.main(["weights", "fetch", "fid-inception", "--dest", str(dest), "--url", url, "--timeout", "10"]) == 0
        assert [(h.range, h.status) for h in server.requests(f"/{name}")] == [(None, 200), (f"bytes={cut}-", 206)]
    assert capsys.readouterr().out.strip() == str(dest)
    assert dest.read_bytes() == payload and not part.exists() and dest.stat().st_mode & 0o777 == 0o644
    assert not (empty_hub / "checkpoints").exists()  # --dest given: nothing in the hub cache


def test_existing_weights_without_a_hash_are_fetched_again(served, tmp_path):
    root, base = served
    (root / "weights.bin").write_bytes(b"new")
    dest = tmp_path / "w.pth"
    dest.write_bytes(b"old")
    assert fetch_weights(f"{base}/weights.bin", dest, timeout=10) == dest and dest.read_bytes() == b"new"
