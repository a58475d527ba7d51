"""Offline lookup and explicit download of pretrained weight files (Inception networks for FID).

Nothing in segdiff downloads weights implicitly: a network that needs a weights file asks
:func:`find_weights`, which only looks on disk (a configured path, else the torch hub cache) and
raises :class:`WeightsUnavailable` naming where it looked and the command that fetches the file.
:func:`fetch_weights` is the one function that touches the network; it is run on purpose, on a
machine with internet access, by ``python -m segdiff.sources.weights fetch NAME [--dest PATH]`` or the
``fetch_inception_weights`` Snakemake rule.

Known weight sets (:data:`KNOWN_WEIGHTS`)
-----------------------------------------
``fid-inception``
    pytorch-fid's FID InceptionV3, ``pt_inception-2015-12-05-6726825d.pth``
    (:mod:`segdiff.evaluation.features.fid`).
``torchvision-inception``
    torchvision's ImageNet InceptionV3 ``Inception_V3_Weights.IMAGENET1K_V1``,
    ``inception_v3_google-0cc3c7bd.pth``, the network of the poster's FID
    (:mod:`segdiff.evaluation.features.poster`).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from pytorch_fid.inception import FID_WEIGHTS_URL
from torchvision.models import Inception_V3_Weights

from segdiff.core.atomic import atomic_path
from segdiff.core.checkpoints import read_torch_file
from segdiff.core.errors import InputError, WeightsUnavailable

__all__ = [
    "WeightsUnavailable",
    "KnownWeights",
    "KNOWN_WEIGHTS",
    "FETCH_COMMAND",
    "url_file_name",
    "hub_weights_path",
    "find_weights",
    "fetch_weights",
    "read_state_dict",
    "main",
]

FETCH_COMMAND = "python -m segdiff.sources.weights fetch"
"""Command line that downloads a known weight set (followed by its key and ``--dest PATH``)."""


def url_file_name(url: str) -> str:
    """Last path component of ``url`` (the name torch hub caches the file under)."""
    name = Path(urllib.parse.urlparse(url).path).name
    if not name:
        raise ValueError(f"URL {url!r} does not end in a file name")
    return name


@dataclass(frozen=True)
class KnownWeights:
    """A weights file segdiff knows how to fetch.

    Attributes
    ----------
    key : str
        Name on the command line (``python -m segdiff.sources.weights fetch KEY``).
    url : str
        Download URL; its file name carries a SHA-256 prefix in torch hub's convention.
    description : str
        One line saying what the weights are for.
    """

    key: str
    url: str
    description: str

    @property
    def file_name(self) -> str:
        """File name in the torch hub cache (the URL's last component)."""
        return url_file_name(self.url)


KNOWN_WEIGHTS: Mapping[str, KnownWeights] = {
    w.key: w
    for w in (
        KnownWeights("fid-inception", FID_WEIGHTS_URL, "pytorch-fid's FID InceptionV3 (pool3, 2048-d), for FID"),
        KnownWeights(
            "torchvision-inception",
            Inception_V3_Weights.IMAGENET1K_V1.url,
            "torchvision's ImageNet InceptionV3 (IMAGENET1K_V1), the poster authors' FID network",
        ),
    )
}
"""The weight sets of :func:`main`, by key."""


def _known_by_file_name(name: str) -> KnownWeights | None:
    return next((w for w in KNOWN_WEIGHTS.values() if w.file_name == name), None)


def hub_weights_path(name: str) -> Path:
    """``<torch.hub.get_dir()>/checkpoints/<name>``: where torch hub caches a downloaded file."""
    if not name or Path(name).name != name:
        raise ValueError(f"weights file name must be a plain file name, got {name!r}")
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def find_weights(name: str, configured_path: str | Path | None = None) -> Path:
    """Locate a weights file on disk, never downloading anything.

    Parameters
    ----------
    name : str
        File name in the torch hub cache (e.g. ``pt_inception-2015-12-05-6726825d.pth``), or the
        key of a :data:`KNOWN_WEIGHTS` entry, which stands for that entry's file name.
    configured_path : str, Path or None
        Configured location. If given it must exist (no fallback to the hub cache). If ``None``,
        ``<torch.hub.get_dir()>/checkpoints/<name>`` is used.

    Returns
    -------
    Path
        The existing file.

    Raises
    ------
    WeightsUnavailable
        If the file is not there; the message names the configured and the hub locations, and
        the fetch command and URL when the file is a known weight set.
    ValueError
        If ``name`` is not a plain file name.
    """
    known = KNOWN_WEIGHTS.get(name) or _known_by_file_name(name)
    file_name = known.file_name if known is not None else name
    hub = hub_weights_path(file_name)
    candidate = Path(configured_path).expanduser() if configured_path is not None else hub
    if candidate.is_file():
        return candidate
    configured = f"configured path {candidate}" if configured_path is not None else "no path configured"
    where = f"{file_name} not found ({configured}; torch hub cache {hub})."
    if known is None:
        raise WeightsUnavailable(f"weights file {where} Put the file at the configured path or in the hub cache.")
    dest = f" --dest {candidate}" if configured_path is not None else ""
    raise WeightsUnavailable(
        f"{known.description}: {where} Fetch it on a machine with internet access with "
        f"`{FETCH_COMMAND} {known.key}{dest}` (or download {known.url} by hand) and put the file "
        f"at the configured path or in the hub cache."
    )


def fetch_weights(url: str, dest: str | Path | None = None, timeout: float = 60) -> Path:
    """Download a weights file (with :mod:`segdiff.sources.download`, the only code in segdiff that touches the network).

    The file is streamed to a temporary sibling of ``dest`` and renamed onto it only when
    complete. If the URL's file name carries a SHA-256 prefix in torch hub's convention
    (``name-<hex>.ext``), the download is verified against it.

    Parameters
    ----------
    url : str
        Source URL.
    dest : str, Path or None
        Target file; an existing directory receives the URL's file name. Default: the torch hub
        cache ``<torch.hub.get_dir()>/checkpoints/<URL file name>``.
    timeout : float
        Socket timeout in seconds.

    Returns
    -------
    Path
        Where the file now is (readable by everyone: weights are public).

    Raises
    ------
    WeightsUnavailable
        On any download failure (HTTP error, unreachable host, truncation, hash mismatch);
        nothing is left at ``dest``.
    ValueError
        If the URL has no file name or ``timeout`` is not positive.
    """
    url_name = url_file_name(url)
    if not timeout > 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    dest = hub_weights_path(url_name) if dest is None else Path(dest).expanduser()
    if dest.is_dir():
        dest = dest / url_name
    match = torch.hub.HASH_REGEX.search(url_name)
    hash_prefix = match.group(1) if match and match.group(1) else None

    def fail(problem: str) -> WeightsUnavailable:
        return WeightsUnavailable(f"could not download {url} to {dest}: {problem}")

    try:
        with atomic_path(dest) as tmp:
            digest = hashlib.sha256()
            received = 0
            request = urllib.request.Request(url, headers={"User-Agent": "segdiff"})
            with urllib.request.urlopen(request, timeout=timeout) as response, open(tmp, "wb") as out:
                expected = response.headers.get("Content-Length")
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
            if expected is not None and expected.isdigit() and received != int(expected):
                raise fail(f"truncated ({received} of {expected} bytes)")
            if hash_prefix is not None and not digest.hexdigest().startswith(hash_prefix):
                raise fail(f"SHA-256 {digest.hexdigest()} does not start with {hash_prefix}")
            os.chmod(tmp, 0o644)  # public weights; mkstemp's 0600 would hide them in a shared cache
    except urllib.error.HTTPError as err:
        raise fail(f"HTTP {err.code} {err.reason}") from err
    except urllib.error.URLError as err:
        raise fail(f"{err.reason}") from err
    except (TimeoutError, OSError) as err:
        raise fail(str(err) or type(err).__name__) from err
    return dest


def read_state_dict(path: str | Path, what: str) -> Mapping[str, torch.Tensor]:
    """Read a state dict (tensors by name) from a weights file with ``weights_only=True``.

    Parameters
    ----------
    path : str or Path
        The weights file.
    what : str
        What the file should be, for error messages (``"FID Inception weights"``).

    Raises
    ------
    InputError
        If the file is missing, corrupt, unsafe to load or not a mapping of tensors.
    """
    state = read_torch_file(path, f"{what} file")
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(path, f"not {what} (holds a {type(state).__name__} that is not tensors by name)")
    return state


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m segdiff.sources.weights fetch NAME [--dest PATH] [--url URL] [--timeout S]``.

    Downloads the known weight set ``NAME`` to ``--dest`` (a file, or a directory receiving the
    set's file name; default the torch hub cache, where :func:`find_weights` looks) and prints
    the path. ``--url`` replaces the download location (a mirror).
    """
    parser = argparse.ArgumentParser(prog="python -m segdiff.sources.weights", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    listing = "; ".join(f"{w.key}: {w.description}" for w in KNOWN_WEIGHTS.values())
    fetch = sub.add_parser("fetch", help="download a known weights file", description=listing)
    fetch.add_argument("name", choices=sorted(KNOWN_WEIGHTS), help="which weights")
    fetch.add_argument("--dest", type=Path, default=None, help="target file or directory (default: torch hub cache)")
    fetch.add_argument("--url", default=None, help="download from here instead of the set's URL")
    fetch.add_argument("--timeout", type=float, default=60.0, help="socket timeout in seconds")
    args = parser.parse_args(argv)
    known = KNOWN_WEIGHTS[args.name]
    dest = hub_weights_path(known.file_name) if args.dest is None else args.dest.expanduser()
    if dest.is_dir():
        dest = dest / known.file_name
    try:
        path = fetch_weights(args.url or known.url, dest, args.timeout)
    except (WeightsUnavailable, ValueError) as err:
        parser.exit(1, f"error: {err}\n")
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
