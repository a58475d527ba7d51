"""The ``segdiff`` command.

Subcommands:
    ``segdiff serve``: the mask editor (:mod:`segdiff.editor.app`) in the browser.

    ``segdiff download amos --root DIR [--url API_URL] [--md5 HEX] [--key KEY] [--keep-zip]``:
    AMOS22 from Zenodo into ``DIR/amos22``, resumable and verified
    (:func:`segdiff.sources.download.amos.fetch_amos`); prints the dataset folder.

    ``segdiff weights fetch NAME [--dest PATH] [--url URL] [--timeout S]``: a known weights file
    (:data:`segdiff.sources.weights.KNOWN_WEIGHTS`) into ``--dest`` (a file, or a directory that
    receives the set's file name; default the torch hub cache, where
    :func:`segdiff.sources.weights.find_weights` looks), resumable and verified
    (:func:`segdiff.sources.weights.fetch_known_weights`); prints the path.

``download`` and ``weights`` exit with status 1 and a one-line ``error: ...`` on stderr when the
download fails, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from segdiff.core.errors import SegdiffError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``segdiff`` and its subcommands.

    Returns:
        The parser; ``args.command`` is ``serve``, ``download`` or ``weights``.
    """
    from segdiff.sources.download.amos import AMOS_KEY, AMOS_RECORD_API
    from segdiff.sources.weights import KNOWN_WEIGHTS

    parser = argparse.ArgumentParser(prog="segdiff", description="segmentation-guided diffusion for CT and MRI")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="the mask editor: edit a mask, generate from it, in the browser")
    serve.add_argument("--results", type=Path, default=Path("results"), help="a study's results folder (default: results)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--device", default="auto", help="auto | cpu | cuda")

    download = commands.add_parser("download", help="download public datasets (resumable, verified)")
    datasets = download.add_subparsers(dest="dataset", required=True)
    amos = datasets.add_parser("amos", help="AMOS22 from Zenodo (record 7262581), into ROOT/amos22")
    amos.add_argument("--root", type=Path, required=True, help="download folder (the dataset lands in ROOT/amos22)")
    amos.add_argument("--url", default=AMOS_RECORD_API, help=f"Zenodo record API URL (default {AMOS_RECORD_API})")
    amos.add_argument("--md5", default=None, help="pin the archive's md5 (wins over the record's)")
    amos.add_argument("--key", default=AMOS_KEY, help=f"file key in the record (default {AMOS_KEY})")
    amos.add_argument("--keep-zip", action="store_true", help="keep the archive after unpacking")

    weights = commands.add_parser("weights", help="pretrained weight files (Inception networks for FID)")
    actions = weights.add_subparsers(dest="action", required=True)
    listing = "; ".join(f"{w.key}: {w.description}" for w in KNOWN_WEIGHTS.values())
    fetch = actions.add_parser("fetch", help="download a known weights file (resumable, verified)", description=listing)
    fetch.add_argument("name", choices=sorted(KNOWN_WEIGHTS), help="which weights")
    fetch.add_argument("--dest", type=Path, default=None, help="target file or directory (default: torch hub cache)")
    fetch.add_argument("--url", default=None, help="download from here instead of the set's URL")
    fetch.add_argument("--timeout", type=float, default=60.0, help="socket timeout in seconds")
    return parser


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from segdiff.editor.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        app = create_app(args.results, args.device)
    except SegdiffError as err:
        print(f"segdiff serve: {err}", file=sys.stderr)
        return 2
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"segdiff serve: listening on {args.host}: the editor is reachable from other machines", file=sys.stderr)
    print(f"segdiff mask editor: http://{args.host}:{args.port}/  (Ctrl+C stops it)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _download(args: argparse.Namespace) -> int:
    from segdiff.sources.download.amos import fetch_amos

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path = fetch_amos(args.root, args.url, key=args.key, md5=args.md5, keep_zip=args.keep_zip)
    except SegdiffError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(path)
    return 0


def _weights(args: argparse.Namespace) -> int:
    from segdiff.sources.weights import fetch_known_weights

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path = fetch_known_weights(args.name, args.dest, args.url, args.timeout)
    except (SegdiffError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``segdiff`` (the console script of ``[project.scripts]``).

    Args:
        argv: the arguments after ``segdiff`` (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 1 for a failed download, 2 when the editor cannot start.

    Raises:
        SystemExit: for bad arguments (status 2) and ``--help`` (status 0), from argparse.
    """
    args = build_parser().parse_args(argv)
    return {"serve": _serve, "download": _download, "weights": _weights}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
