"""How a run's sampling splits into chunk jobs (``sampling.chunks``): the part of the test subset
each job samples. Imported by the workflow at parse time (a chunk job's memory request), so it
needs nothing heavier than numpy."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["chunk_bounds", "largest_chunk", "scatter_item"]


def chunk_bounds(n: int, chunks: int, k: int, batch_size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of each of ``chunks`` contiguous parts of a test subset of ``n`` slices.

    The subset is cut into *batch blocks*, the fewest slices whose ``k`` generations fill whole
    sampling batches (``batch_size / gcd(batch_size, k)`` slices), and the blocks are split as
    ``np.array_split`` splits (the first ``blocks % chunks`` parts one block longer). Every batch a
    chunk job samples is then one the unsplit job samples too: equal results do not rest on the
    kernels giving the same bits for other batch shapes (cuDNN picks algorithms by shape).

    Args:
        n: slices in the test subset.
        chunks: parts to split it into (at least 1).
        k: generations per slice.
        batch_size: generations per sampling batch.

    Returns:
        ``chunks`` ``(start, stop)`` pairs, in order, that together cover ``0..n``. A part may be empty
        when there are fewer blocks than chunks.

    Raises:
        ValueError: ``chunks`` below 1.
    """
    if chunks < 1:
        raise ValueError(f"chunks must be >= 1, got {chunks}")
    block = batch_size // math.gcd(batch_size, k)
    sizes = [len(p) for p in np.array_split(np.arange(-(-n // block)), chunks)]
    edges = np.minimum(np.concatenate([[0], np.cumsum(sizes)]) * block, n)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def largest_chunk(n: int, chunks: int, k: int, batch_size: int) -> int:
    """Slices of the largest part (what one chunk job holds).

    Args:
        n: slices in the test subset.
        chunks: parts it is split into (at least 1).
        k: generations per slice.
        batch_size: generations per sampling batch.

    Returns:
        The number of slices of the largest part of :func:`chunk_bounds`.
    """
    return max(stop - start for start, stop in chunk_bounds(n, chunks, k, batch_size))


def scatter_item(item: str) -> tuple[int, int]:
    """Snakemake's scatter item ``"i-of-n"`` (wildcard ``scatteritem``) as ``(i, n)``, i from 1."""
    chunk, chunks = map(int, item.split("-of-"))
    return chunk, chunks
