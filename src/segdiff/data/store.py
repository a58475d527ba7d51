"""The slice store: one uncompressed ``.npy`` array per subset (modality x view), read by row.

Written once after slicing, next to the subset's manifest, from its per-case shards:

``results/slices/{modality}/{view}/store/``
    ``image.npy``  float32 (N, H, W) in [0, 1], the shards' images in manifest order
    ``mask.npy``   uint8 (N, H, W) label ids
    ``index.tsv``  one row per slice: ``case``, ``split``, ``slice`` (index along the view axis)
    ``classes.json``  label ids present in each case's masks

Training, sampling and evaluation open it (:class:`SliceStore`) and read only the rows they need
with ``os.pread``, so their memory is O(batch) (or O(``evaluation.max_slices``)), never
O(dataset): the operating system's page cache, not the process, holds what was read. (Indexing a
memory map would not do: the kernel maps the pages around every row touched, and the reader's
resident memory grows towards the size of what it has read.)
Writing appends one shard at a time to the files (memory O(shard)); the folder appears whole
or not at all (:func:`segdiff.core.atomic.atomic_dir`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.lib.format import dtype_to_descr, write_array_header_1_0

from segdiff.core.atomic import atomic_dir, atomic_path
from segdiff.data.dataset import SliceSet, stratified_subset
from segdiff.core.errors import InputError
from segdiff.data.shards import build_manifest, read_shard

__all__ = ["StoreWriter", "write_store", "write_subset", "SliceStore", "STORE_FILES"]

STORE_FILES = ("image.npy", "mask.npy", "index.tsv", "classes.json")


class StoreWriter:
    """Appends slices to a new store folder, one block in memory at a time; the folder appears whole
    (with ``index.tsv`` and ``classes.json``) when the ``with`` block ends, or not at all.

    Args:
        out_dir: the store folder to write.
        total: the number of slices that will be appended (the ``.npy`` headers are written first).
        shape: (H, W) of every slice.
        views: write a ``view`` column (the slices' own views: a store of generated slices may hold
            several, and its folder is not named after one).
    """

    def __init__(self, out_dir: str | Path, total: int, shape: tuple[int, int], views: bool = False):
        self.out_dir, self.total, self.shape, self.views = Path(out_dir), int(total), tuple(shape), views
        self.rows: list[pd.DataFrame] = []
        self.classes: dict[str, set[int]] = {}
        self.written = 0

    @contextlib.contextmanager
    def _open(self):
        with atomic_dir(self.out_dir) as tmp, open(tmp / "image.npy", "wb") as images, \
                open(tmp / "mask.npy", "wb") as masks:
            # plain appends, not a writable memory map: dirty mapped pages would count as the job's memory
            for f, dtype in ((images, np.float32), (masks, np.uint8)):
                write_array_header_1_0(f, {"descr": dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                                           "shape": (self.total, *self.shape)})
            self._files = (images, masks)
            yield self
            if self.written != self.total:
                raise InputError(self.out_dir, f"{self.written} slices appended, {self.total} announced")
            columns = ["case", "split", "slice", *(["view"] if self.views else [])]
            index = pd.concat(self.rows) if self.rows else pd.DataFrame(columns=columns)
            index.to_csv(tmp / "index.tsv", sep="\t", index=False)
            classes = {case: sorted(ids) for case, ids in self.classes.items()}
            (tmp / "classes.json").write_text(json.dumps(classes) + "\n")

    def __enter__(self) -> "StoreWriter":
        self._pending = self._open()
        return self._pending.__enter__()

    def __exit__(self, *exc) -> bool:
        return self._pending.__exit__(*exc)

    def append(self, image: np.ndarray, mask: np.ndarray, case, split, slice_index, view=None) -> None:
        """Append a block of slices.

        Args:
            image: (B, H, W) in [0, 1].
            mask: (B, H, W) label ids.
            case: the case id of every slice (a scalar or (B,)); a case given for an empty block still gets
                its (empty) entry in ``classes.json``.
            split: the split of every slice (a scalar or (B,)).
            slice_index: (B,) index of each slice along its view's axis.
            view: the view of every slice (a scalar or (B,)); only with ``views``.
        """
        self._files[0].write(np.ascontiguousarray(image, np.float32).tobytes())
        self._files[1].write(np.ascontiguousarray(mask, np.uint8).tobytes())
        block = pd.DataFrame({"case": case, "split": split, "slice": np.asarray(slice_index, np.int64)})
        if self.views:
            block["view"] = view
        self.rows.append(block)
        case_of = block["case"].to_numpy(str)
        for c in np.unique(np.atleast_1d(np.asarray(case, dtype=str))):
            self.classes.setdefault(str(c), set()).update(int(i) for i in np.unique(mask[case_of == c]))
        self.written += len(block)


def write_store(manifest: pd.DataFrame, out_dir: str | Path, root: str | Path = ".") -> Path:
    """Concatenate the shards of a manifest into a store folder, one shard in memory at a time.

    Args:
        manifest: columns case, split, n_slices, shard (paths relative to ``root``).
        out_dir: the store folder to write (it appears whole or not at all).
        root: the folder the shard paths are relative to.

    Returns:
        ``out_dir``.

    Raises:
        InputError: a shard that does not match its manifest row.
    """
    out_dir = Path(out_dir)
    total = int(manifest["n_slices"].sum())
    first = next((r for r in manifest.itertuples() if r.n_slices > 0), None)
    shape = read_shard(Path(root) / first.shard).image.shape[1:] if first is not None else (0, 0)
    with StoreWriter(out_dir, total, shape) as writer:
        for row in manifest.itertuples():
            path = Path(root) / row.shard
            shard = read_shard(path)
            n = len(shard.slice)
            if n != row.n_slices or (n and shard.image.shape[1:] != shape):
                raise InputError(path, f"{n} slices of {shard.image.shape[1:]} but the manifest says {row.n_slices} "
                                       f"of {shape} (re-run the manifest)")
            writer.append(shard.image, shard.mask, row.case, row.split, shard.slice)
    return out_dir


def write_subset(rows: pd.DataFrame, shards: Sequence[str | Path], view: str, manifest: str | Path,
                 store: str | Path) -> None:
    """The slicing stage's per-subset job: the manifest TSV and the store folder, together or not at all.

    Args:
        rows: columns case, modality, split; one per case, in the order of ``shards``.
        shards: the cases' shards of ``view``.
        view: the subset's view.
        manifest: the manifest TSV to write (last: it means the store is complete).
        store: the store folder to write.
    """
    table = build_manifest(rows, dict(zip(rows["case"], shards)), view)
    try:
        write_store(table, store)
        with atomic_path(manifest) as tmp:  # last: a manifest on disk means its store is complete
            table.to_csv(tmp, sep="\t", index=False)
    except BaseException:  # the pair appears together or not at all
        shutil.rmtree(store, ignore_errors=True)
        raise


class _Rows:
    """Row-wise reads of a C-ordered ``.npy`` file with ``os.pread``; re-opened in a forked or
    unpickled process (the file descriptor is per process)."""

    def __init__(self, path: Path):
        self.path = path
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            self.offset = f.tell()
        if fortran:
            raise InputError(path, "Fortran-ordered array; the store writes C order")
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        self._fd, self._pid = None, None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None, "_pid": None}

    def read_into(self, row: int, out: np.ndarray) -> None:
        """Read one row of the array into ``out`` (opening the file first in a new process).

        Args:
            row: the row (index along the first axis) to read.
            out: a C-contiguous array of the file's dtype and row shape, filled in place.

        Raises:
            InputError: fewer bytes than a row could be read (a truncated store).
        """
        if self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        view = memoryview(out.reshape(-1).view(np.uint8))
        done = os.preadv(self._fd, [view], self.offset + int(row) * self.row_bytes)
        if done != self.row_bytes:
            raise InputError(self.path, f"row {row}: read {done} of {self.row_bytes} bytes (truncated store?)")

    def __del__(self):
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)


class SliceStore:
    """Read-only view of the slices of one or more store folders (e.g. the three
    views of a model trained on ``all``), restricted to ``splits``.

    ``case``, ``slice``, ``view`` are (N,) arrays of the selected rows; :meth:`read` returns the
    images and masks of positions ``0..N-1``; :meth:`take` / :meth:`subset` give an in-memory
    :class:`~segdiff.data.dataset.SliceSet`. Pickling keeps only the folder names (a DataLoader
    worker re-opens the files).

    Args:
        folders: store folders (``results/slices/{modality}/{view}/store``) of slices of one size.
        splits: the splits to keep (all when None).
        cases: per folder, the cases to keep (None: all); None keeps every case of every folder (e.g. a
            few real cases and every generated slice: ``[few, few, few, None, None, None]``).

    Raises:
        InputError: a folder that is not a complete store, stores of different slice sizes, or no
            slices in ``splits``.
    """

    def __init__(self, folders: Sequence[str | Path], splits: Sequence[str] | None = None,
                 cases: Sequence[Sequence[str] | None] | None = None):
        self.folders = [Path(f) for f in folders]
        self.splits = None if splits is None else list(splits)
        if cases is not None and len(cases) != len(self.folders):
            raise ValueError(f"cases: one entry per folder ({len(self.folders)}), got {len(cases)}")
        self.cases = None if cases is None else [None if c is None else sorted(map(str, c)) for c in cases]
        tables, classes, shape = [], {}, None
        for number, folder in enumerate(self.folders):
            missing = [name for name in STORE_FILES if not (folder / name).exists()]
            if missing:
                raise InputError(folder, f"not a slice store (missing {missing}; re-run the manifest rule)")
            table = pd.read_csv(folder / "index.tsv", sep="\t", dtype={"case": str, "split": str})
            # a store of generated slices names each row's view (its folder is not ``.../{view}/store``)
            view = table["view"].astype(str) if "view" in table else folder.parent.name
            table["store"], table["row"], table["view"] = number, np.arange(len(table)), view
            images = np.load(folder / "image.npy", mmap_mode="r")
            if len(images) != len(table):
                raise InputError(folder, f"image.npy holds {len(images)} slices, index.tsv {len(table)}")
            if len(images) and shape not in (None, images.shape[1:]):
                raise InputError(folder, f"slices of {images.shape[1:]}, other stores {shape}")
            shape = images.shape[1:] if len(images) else shape
            if self.cases is not None and self.cases[number] is not None:
                table = table[table["case"].isin(self.cases[number])]
            tables.append(table)
            for case, ids in json.loads((folder / "classes.json").read_text()).items():
                classes.setdefault(case, set()).update(ids)
        table = pd.concat(tables, ignore_index=True)
        if self.splits is not None:
            table = table[table["split"].isin(self.splits)]
        if table.empty:
            raise InputError(", ".join(map(str, self.folders)), f"no slices in split(s) {self.splits}")
        self.case = table["case"].to_numpy(str)
        self.slice = table["slice"].to_numpy(np.int32)
        self.view = table["view"].to_numpy(str)
        self.split = table["split"].to_numpy(str)
        self._store = table["store"].to_numpy(np.int64)
        self._row = table["row"].to_numpy(np.int64)
        self.shape: tuple[int, int] = tuple(shape)
        self.classes = sorted({c for case in set(self.case) for c in classes.get(case, ())})
        self._files: list[tuple[_Rows, _Rows]] | None = None

    def __len__(self) -> int:
        return len(self.case)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_files": None}

    def fingerprint(self, sample_rows: int = 16) -> str:
        """A digest of what training reads, cheap at any size: the chosen splits and, per store, its
        view, its ``index.tsv`` and ``classes.json``, the byte sizes of its arrays and the bytes of
        ``sample_rows`` evenly spaced rows of each (a re-slice with other intensities changes them).
        Not a hash of the arrays: at AMOS scale they hold 80 GB."""
        chosen = {"splits": self.splits} if self.cases is None else {"splits": self.splits, "cases": self.cases}
        digest = hashlib.sha256(json.dumps(chosen).encode())
        for folder, (image, mask) in zip(self.folders, self._open()):
            digest.update(folder.parent.name.encode())
            for name in ("index.tsv", "classes.json"):
                digest.update((folder / name).read_bytes())
            n = (folder / "image.npy").stat().st_size
            digest.update(f"{n} {(folder / 'mask.npy').stat().st_size}".encode())
            rows = (n - image.offset) // max(image.row_bytes, 1)
            for row in np.unique(np.linspace(0, rows - 1, min(sample_rows, rows)).astype(np.int64)) if rows else []:
                for array, dtype in ((image, np.float32), (mask, np.uint8)):
                    out = np.empty(self.shape, dtype)
                    array.read_into(row, out)
                    digest.update(out.tobytes())
        return digest.hexdigest()

    def _open(self) -> list[tuple[_Rows, _Rows]]:
        if self._files is None:
            self._files = [(_Rows(f / "image.npy"), _Rows(f / "mask.npy")) for f in self.folders]
        return self._files

    def read(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Images (B, H, W) float32 and masks (B, H, W) uint8 of positions ``index``, in that order.

        Rows are read store by store in ascending order with ``pread`` into the returned arrays:
        indexing a memory map instead makes the kernel map the pages around every row touched,
        and the process's resident memory then grows towards the size of what it has read.
        """
        index = np.asarray(index, dtype=np.int64)
        images = np.empty((len(index), *self.shape), np.float32)
        masks = np.empty((len(index), *self.shape), np.uint8)
        for number, (image, mask) in enumerate(self._open()):
            where = np.flatnonzero(self._store[index] == number)
            rows = self._row[index[where]]
            for i in np.argsort(rows, kind="stable"):
                image.read_into(rows[i], images[where[i]])
                mask.read_into(rows[i], masks[where[i]])
        return images, masks

    def take(self, index: np.ndarray) -> SliceSet:
        """The slices at positions ``index`` as an in-memory :class:`~segdiff.data.dataset.SliceSet`."""
        index = np.asarray(index, dtype=np.int64)
        images, masks = self.read(index)
        return SliceSet(images, masks, self.case[index], self.slice[index], self.view[index])

    def subset(self, max_slices: int, seed: int) -> SliceSet:
        """A seeded subset, stratified by case and view (:func:`~segdiff.data.dataset.stratified_subset`).

        Args:
            max_slices: at most this many slices (0 = all).
            seed: the subset's seed.

        Returns:
            The chosen slices as an in-memory :class:`~segdiff.data.dataset.SliceSet`.
        """
        if max_slices <= 0 or len(self) <= max_slices:
            return self.take(np.arange(len(self)))
        return self.take(stratified_subset(self.case, self.view, max_slices, seed))
