"""The slicing stage's file contract: NPZ shards, PNG previews, manifests, atomic writes."""

import os

import numpy as np
import pandas as pd
import pytest
from conftest import ras_pair
from PIL import Image

import segdiff.shards as shards_mod
from segdiff.atomic import atomic_dir, atomic_path
from segdiff.shards import build_manifest, preview_indices, read_shard, write_case_shards
from segdiff.volumes import Volume

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


def test_failure_while_writing_leaves_no_output(tmp_path, monkeypatch):
    shards, previews = paths(tmp_path)

    def broken(shard, folder, count):
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
