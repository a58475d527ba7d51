"""The ``segdiff`` command: ``segdiff serve`` starts the mask editor (:mod:`segdiff.editor.app`)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from segdiff.core.errors import SegdiffError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="segdiff", description="segmentation-guided diffusion for CT and MRI")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="the mask editor: edit a mask, generate from it, in the browser")
    serve.add_argument("--results", type=Path, default=Path("results"), help="a study's results folder (default: results)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--device", default="auto", help="auto | cpu | cuda")
    args = parser.parse_args(argv)

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


if __name__ == "__main__":
    sys.exit(main())
