"""Offline lookup and explicit download of pretrained weight files (Inception networks for FID).

Nothing in segdiff downloads weights implicitly: a network that needs a weights file asks
:func:`find_weights`, which only looks on disk (a configured path, else the torch hub cache) and
raises :class:`WeightsUnavailable` naming where it looked and the command that fetches the file.
:func:`fetch_weights` (and :func:`fetch_known_weights` for a set of :data:`KNOWN_WEIGHTS`) is the
one way weights come from the network, through the verified, resumable transfer of
:func:`segdiff.sources.download.http.download`; it is run on purpose, on a machine with
internet access, by ``segdiff weights fetch NAME [--dest PATH]`` or the
``fetch_inception_weights`` Snakemake rule.

Known weight sets (:data:`KNOWN_WEIGHTS`):
    ``fid-inception``: pytorch-fid's FID InceptionV3, ``pt_inception-2015-12-05-6726825d.pth``
    (:mod:`segdiff.evaluation.features.fid`).

    ``torchvision-inception``: torchvision's ImageNet InceptionV3
    ``Inception_V3_Weights.IMAGENET1K_V1``, ``inception_v3_google-0cc3c7bd.pth``, the network of
    the poster's FID (:mod:`segdiff.evaluation.features.poster`).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from pytorch_fid.inception import FID_WEIGHTS_URL
from torchvision.models import Inception_V3_Weights

from segdiff.core.checkpoints import read_torch_file
from segdiff.core.errors import InputError, WeightsUnavailable
from segdiff.sources.download.http import DownloadError, download

__all__ = [
    "WeightsUnavailable",
    "KnownWeights",
    "KNOWN_WEIGHTS",
    "FETCH_COMMAND",
    "url_file_name",
    "hub_weights_path",
    "find_weights",
    "fetch_weights",
    "fetch_known_weights",
    "read_state_dict",
]

FETCH_COMMAND = "segdiff weights fetch"
"""Command line that downloads a known weight set (followed by its key and ``--dest PATH``)."""


def url_file_name(url: str) -> str:
    """Last path component of ``url`` (the name torch hub caches the file under).

    Args:
        url: the URL.

    Returns:
        The file name.

    Raises:
        ValueError: if the URL's path does not end in a file name.
    """
    name = Path(urllib.parse.urlparse(url).path).name
    if not name:
        raise ValueError(f"URL {url!r} does not end in a file name")
    return name


@dataclass(frozen=True)
class KnownWeights:
    """A weights file segdiff knows how to fetch.

    Attributes:
        key: name on the command line (``segdiff weights fetch KEY``).
        url: download URL; its file name carries a SHA-256 prefix in torch hub's convention.
        description: one line saying what the weights are for.
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
"""The weight sets of :func:`fetch_known_weights` (``segdiff weights fetch KEY``), by key."""


def _known_by_file_name(name: str) -> KnownWeights | None:
    return next((w for w in KNOWN_WEIGHTS.values() if w.file_name == name), None)


def hub_weights_path(name: str) -> Path:
    """Where torch hub caches a downloaded file.

    Args:
        name: a plain file name.

    Returns:
        ``<torch.hub.get_dir()>/checkpoints/<name>``.

    Raises:
        ValueError: if ``name`` is empty or has a folder part.
    """
    if not name or Path(name).name != name:
        raise ValueError(f"weights file name must be a plain file name, got {name!r}")
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def find_weights(name: str, configured_path: str | Path | None = None) -> Path:
    """Locate a weights file on disk, never downloading anything.

    Args:
        name: file name in the torch hub cache (e.g. ``pt_inception-2015-12-05-6726825d.pth``),
            or the key of a :data:`KNOWN_WEIGHTS` entry, which stands for that entry's file name.
        configured_path: configured location. If given it must exist (no fallback to the hub
            cache). If ``None``, ``<torch.hub.get_dir()>/checkpoints/<name>`` is used.

    Returns:
        The existing file.

    Raises:
        WeightsUnavailable: if the file is not there; the message names the configured and the
            hub locations, and the fetch command and URL when the file is a known weight set.
        ValueError: if ``name`` is not a plain file name.
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


def fetch_weights(url: str, dest: str | Path | None = None, timeout: float = 60, *, retries: int = 3) -> Path:
    """Download a weights file with :func:`segdiff.sources.download.http.download`.

    The file is streamed to ``<dest>.part`` and renamed onto ``dest`` only when complete and
    verified. A transfer cut in the middle is resumed with an HTTP ``Range`` request (up to
    ``retries`` times, and by a later call: the part is kept). If the URL's file name carries a
    SHA-256 prefix in torch hub's convention (``name-<hex>.ext``), the download is verified
    against it, and an existing ``dest`` that matches it is returned without any network access.

    Args:
        url: source URL.
        dest: target file; an existing directory receives the URL's file name. Default: the
            torch hub cache ``<torch.hub.get_dir()>/checkpoints/<URL file name>``.
        timeout: socket timeout in seconds.
        retries: automatic resumptions of an interrupted transfer.

    Returns:
        Where the file now is (mode 0644: weights are public).

    Raises:
        WeightsUnavailable: on any download failure (HTTP error, unreachable host, an
            interruption that outlasted ``retries``, hash mismatch); the message names ``url``
            and ``dest``, and nothing new is left at ``dest``.
        ValueError: if the URL has no file name or ``timeout`` is not positive.
    """
    url_name = url_file_name(url)
    if not timeout > 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    dest = hub_weights_path(url_name) if dest is None else Path(dest).expanduser()
    if dest.is_dir():
        dest = dest / url_name
    match = torch.hub.HASH_REGEX.search(url_name)
    hash_prefix = match.group(1) if match and match.group(1) else None
    try:
        return download(url, dest, sha256=hash_prefix, timeout=timeout, retries=retries, mode=0o644)
    except DownloadError as err:
        raise WeightsUnavailable(f"could not download {url} to {dest}: {err.problem}") from err
    except OSError as err:
        raise WeightsUnavailable(f"could not download {url} to {dest}: {err or type(err).__name__}") from err


def fetch_known_weights(
    key: str, dest: str | Path | None = None, url: str | None = None, timeout: float = 60, *, retries: int = 3
) -> Path:
    """Download a known weight set (:data:`KNOWN_WEIGHTS`) with :func:`fetch_weights`.

    Args:
        key: the set's key (``fid-inception``, ``torchvision-inception``).
        dest: target file, or an existing directory that receives the set's file name. Default:
            the torch hub cache under the set's file name, where :func:`find_weights` looks.
        url: download from here (a mirror) instead of the set's URL.
        timeout: socket timeout in seconds.
        retries: automatic resumptions of an interrupted transfer.

    Returns:
        Where the file now is.

    Raises:
        WeightsUnavailable: on any download failure (see :func:`fetch_weights`).
        ValueError: if ``key`` is not a known set, the URL has no file name or ``timeout`` is
            not positive.
    """
    known = KNOWN_WEIGHTS.get(key)
    if known is None:
        raise ValueError(f"unknown weight set {key!r} (known: {', '.join(sorted(KNOWN_WEIGHTS))})")
    target = hub_weights_path(known.file_name) if dest is None else Path(dest).expanduser()
    if target.is_dir():
        target = target / known.file_name
    return fetch_weights(url or known.url, target, timeout, retries=retries)


def read_state_dict(path: str | Path, what: str) -> Mapping[str, torch.Tensor]:
    """Read a state dict (tensors by name) from a weights file with ``weights_only=True``.

    Args:
        path: the weights file.
        what: what the file should be, for error messages (``"FID Inception weights"``).

    Returns:
        The tensors by name.

    Raises:
        InputError: if the file is missing, corrupt, unsafe to load or not a mapping of tensors.
    """
    state = read_torch_file(path, f"{what} file")
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(path, f"not {what} (holds a {type(state).__name__} that is not tensors by name)")
    return state
