"""Glue shared by every workflow script: logging to the rule's log file, CPU threads, clean errors."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from threadpoolctl import threadpool_limits

from segdiff.core.errors import SegdiffError

__all__ = ["run_script"]

log = logging.getLogger("segdiff")


def run_script(snakemake: Any, main: Callable[[], None]) -> None:
    """Run ``main`` inside a Snakemake ``script:`` job.

    Logs (level INFO) go to the rule's first ``log:`` file and to stderr; torch (if already imported)
    and the BLAS libraries use exactly the threads Snakemake granted.

    Args:
        snakemake: the ``snakemake`` object Snakemake hands the script (its ``log`` and ``threads`` are used).
        main: the job's work, called without arguments.

    Raises:
        SystemExit: status 1 when ``main`` raises a :class:`SegdiffError` (bad input): the job ends with
            its one-line message, logged, instead of a traceback.
    """
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if snakemake.log:
        handlers.append(logging.FileHandler(snakemake.log[0], mode="w"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", handlers=handlers, force=True)
    logging.captureWarnings(True)
    threads = max(1, int(snakemake.threads))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    try:
        with threadpool_limits(threads):  # BLAS too (scipy's sqrtm oversubscribes otherwise: 40x slower here)
            main()
    except SegdiffError as err:
        log.error("%s", err)
        sys.exit(1)
