"""The slicing stage's file contract: NPZ shards, PNG previews, manifests, atomic writes."""

import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ras_pair
from PIL import Image

import segdiff.data.shards as shards_mod
import segdiff.data.slicing as slicing
from segdiff.core.atomic import atomic_dir, atomic_path
from segdiff.data.shards import build_manifest, preview_indices, read_shard, write_case_shards
from segdiff.data.slicing import slice_volume
from segdiff.sources.volumes import Volume

PRE = dict(image_size=24, min_foreground=4, ct_window=(-175, 250), mri_percentiles=(0.5, 99.5), previews_per_case=2)


def volume():
    image, label, affine = ras_pair()
    return Volume(image=image, label=label, spacing=(2.0, 1.5, 3.0), affine=affine)


def paths(tmp_path, views=("axial", "coronal", "sagittal")):
    return ({v: tmp_path / v / "case1.npz" for v in views}, {v: tmp_path / v / "previews" / "case1" for v in views})


def test_shards_and_previews_follow_the_contract(tmp_path):
    shards, previews = paths(tmp_path)
    counts = write_case_shards(volume(), "ct", shards, previews, **PRE)
    for view, path in shards.items():
        shard = read_shard(path)
        assert len(shard.slice) == counts[view] > 0
        assert shard.image.shape[1:] == (24, 24)
        assert (np.count_nonzero(shard.mask.reshape(len(shard.mask), -1), axis=1) >= 4).all()
        pngs = sorted(previews[view].glob("*_image.png"))
        assert len(pngs) == 2
        idx = int(pngs[0].name.split("_")[1])
        i = int(np.flatnonzero(shard.slice == idx)[0])
        img = np.asarray(Image.open(pngs[0]))
        mask = np.asarray(Image.open(str(pngs[0]).replace("_image", "_mask")))
        assert img.dtype == np.uint8 and np.abs(img.astype(int) - np.rint(shard.image[i] * 255)).max() == 0
        np.testing.assert_array_equal(mask, shard.mask[i])
    assert not list(tmp_path.rglob(".*tmp*"))


def test_streamed_shard_equals_the_in_memory_slices(tmp_path, monkeypatch):
    """Shards are streamed a few slices at a time (see test_slicing for the memory bound): same npz members,
    dtypes and values as :meth:`Shard.save` of the in-memory :func:`slice_volume`, whatever the chunk size."""
    shards, previews = paths(tmp_path / "out")
    for view in shards:  # in one chunk
        slice_volume(volume(), "ct", view, PRE["image_size"], PRE["min_foreground"]).save(tmp_path / f"{view}.npz")
    monkeypatch.setattr(slicing, "_CHUNK_VOXELS", 1200)  # two 24 x 24 output slices per chunk
    write_case_shards(volume(), "ct", shards, previews, **PRE)
    for view, path in shards.items():
        with np.load(path) as got, np.load(tmp_path / f"{view}.npz") as want:
            assert got.files == want.files == ["image", "mask", "slice", "pixel_mm"]
            for name in want.files:
                assert got[name].dtype == want[name].dtype and got[name].shape == want[name].shape
                np.testing.assert_allclose(got[name], want[name], atol=1e-6)


def test_failure_while_writing_leaves_no_output(tmp_path, monkeypatch):
    shards, previews = paths(tmp_path)

    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setattr(shards_mod, "_write_previews", broken)
    with pytest.raises(OSError, match="disk full"):
        write_case_shards(volume(), "ct", shards, previews, **PRE)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # neither shards nor temporaries


def test_preview_indices_spread():
    assert preview_indices(0, 3) == []
    assert preview_indices(10, 1) == [4]
    assert preview_indices(10, 2) == [3, 6]
    assert preview_indices(1, 3) == [0]


def test_manifest(tmp_path):
    shards, previews = paths(tmp_path, ("axial",))
    write_case_shards(volume(), "ct", shards, previews, **PRE)
    rows = pd.DataFrame([{"case": "case1", "modality": "ct", "split": "test"}])
    manifest = build_manifest(rows, {"case1": shards["axial"]}, "axial")
    assert list(manifest.columns) == ["case", "modality", "view", "split", "n_slices", "shard"]
    assert manifest["n_slices"].iloc[0] == len(read_shard(shards["axial"]).slice)


def test_read_shard_rejects_foreign_file(tmp_path):
    bad = tmp_path / "x.npz"
    np.savez(bad, image=np.zeros((2, 4, 4)))
    with pytest.raises(Exception, match="x.npz: not a slice shard"):
        read_shard(bad)


def test_atomic_outputs_get_ordinary_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "a.npz") as tmp:
            np.savez(tmp, x=np.zeros(2))
        with atomic_dir(tmp_path / "folder") as tmp:
            (tmp / "f.txt").write_text("x")
    finally:
        os.umask(mask)
    assert (tmp_path / "a.npz").stat().st_mode & 0o777 == 0o644  # mkstemp alone would leave 0600
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o755


class Injected(OSError):
    """The failure injected at one write position."""


class WritePositions:
    """Counts the calls that write or commit output (npz members, PNGs, chmod/rename/removal of the
    temporaries) and fails the ``fail_at``-th one, before or after the real call."""

    CALLS = [(zipfile.ZipFile, "open"), (Image.Image, "save"), (os, "chmod"), (os, "replace"), (shutil, "rmtree")]

    def __init__(self, monkeypatch, fail_at=0, after=False):
        self.trace, self.fail_at, self.after = [], fail_at, after
        for owner, name in self.CALLS:
            monkeypatch.setattr(owner, name, self._wrap(getattr(owner, name), name))

    def _wrap(self, real, name):
        def call(*args, **kwargs):
            self.trace.append(f"{name}{tuple(Path(str(a)).name for a in args if isinstance(a, (str, os.PathLike)))}")
            failing = len(self.trace) == self.fail_at
            if failing and not self.after:
                raise Injected(f"before {self.trace[-1]}")
            result = real(*args, **kwargs)
            if failing:
                if hasattr(result, "close"):  # an opened npz member: close it, as a failing write would
                    result.close()
                raise Injected(f"after {self.trace[-1]}")
            return result

        return call


@pytest.mark.parametrize("rerun", [False, True], ids=["fresh", "over-earlier-outputs"])
def test_failure_at_any_write_position_leaves_no_output(tmp_path, monkeypatch, rerun):
    """All outputs of a case (3 shards, 3 preview folders) appear together or none does, wherever writing fails:
    at a shard or PNG write, or at any chmod / rename / removal while committing them."""
    out = tmp_path / "out"
    shards, previews = paths(out)
    with monkeypatch.context() as m:  # a clean run counts the write positions
        positions = WritePositions(m)
        write_case_shards(volume(), "ct", shards, previews, **PRE)
    trace = positions.trace
    assert len([c for c in trace if c.startswith("replace")]) == 6 and len([c for c in trace if c.startswith("save")]) == 12
    assert len([c for c in trace if c.startswith("open")]) >= 3  # at least one npz member per shard
    for after in (False, True):
        for fail_at in range(1, len(trace) + 1):
            if not rerun:
                shutil.rmtree(out)
            with monkeypatch.context() as m:
                WritePositions(m, fail_at, after)
                with pytest.raises(Injected):
                    write_case_shards(volume(), "ct", shards, previews, **PRE)
            where = f"failure {'after' if after else 'before'} {trace[fail_at - 1]} (call {fail_at} of {len(trace)})"
            assert not [p for p in shards.values() if p.exists()], where
            assert not [p for p in previews.values() if p.exists()], where
            assert not list(out.rglob(".*.tmp*")), where
            assert not [p for p in out.rglob("*") if p.is_file()], where
            if rerun:  # the next try starts over earlier outputs again
                write_case_shards(volume(), "ct", shards, previews, **PRE)
