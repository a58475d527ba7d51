"""The memory-mapped slice store and the step-indexed DataLoader: equal to the shards, O(batch)
reads, and a kill-and-resume through worker processes that ends bit-identical."""

import os
import pickle

import numpy as np
import pandas as pd
import pytest
import torch

import segdiff.models.training as training
from segdiff.core.checkpoints import remove_finished
from segdiff.data.dataset import stratified_subset
from segdiff.models.diffusion import DenoiserConfig, SchedulerConfig, fit_diffusion
from segdiff.core.errors import InputError
from segdiff.data.loader import LoaderSettings, StepBatches, step_loader
from segdiff.data.shards import build_manifest, read_shard
from segdiff.data.slicing import Shard
from segdiff.data.store import SliceStore, write_store
from segdiff.models.training import TrainSettings
from tiny import SPLITS, make_subset

def test_store_equals_the_shards(tmp_path):
    manifest, store_dir = make_subset(tmp_path)
    store = SliceStore([store_dir])
    assert len(store) == 18 and store.shape == (16, 16)
    images, masks = store.read(np.arange(len(store)))
    start = 0
    for row in manifest.itertuples():
        shard = read_shard(row.shard)
        n = len(shard.slice)
        np.testing.assert_array_equal(images[start : start + n], shard.image)  # bit for bit
        np.testing.assert_array_equal(masks[start : start + n], shard.mask)
        assert (store.case[start : start + n] == row.case).all()
        np.testing.assert_array_equal(store.slice[start : start + n], shard.slice)
        start += n
    # the files are plain .npy arrays (numpy reads them whole or memory-mapped)
    np.testing.assert_array_equal(np.load(store_dir / "image.npy", mmap_mode="r"), images)
    test = SliceStore([store_dir], ["test"])
    assert set(test.case) == {"c3", "c4"} and len(test) == 10
    assert set(test.classes) <= {0, 1, 2, 3}
    # any order of positions reads the same rows (rows are read sorted, returned in request order)
    index = np.array([7, 0, 7, 3])
    np.testing.assert_array_equal(test.read(index)[0], test.take(np.arange(10)).image[index])


def test_all_view_store_and_subset_match_the_in_memory_choice(tmp_path):
    _, axial = make_subset(tmp_path, "axial")
    _, coronal = make_subset(tmp_path, "coronal", sizes=(2, 4, 1, 3, 5), seed=1)
    store = SliceStore([axial, coronal], ["test"])
    assert set(store.view) == {"axial", "coronal"} and len(store) == 18
    everything = store.take(np.arange(len(store)))
    chosen = store.subset(7, seed=3)
    expected = everything.take(stratified_subset(everything.case, everything.view, 7, seed=3))
    np.testing.assert_array_equal(chosen.image, expected.image)
    np.testing.assert_array_equal(chosen.view, expected.view)
    assert len(chosen) == 7


def test_multi_store_reads_every_row_image_and_mask_in_request_order(tmp_path):
    """A model on view ``all`` reads three stores at once: any shuffled index (with repeats) must give, at each
    position, the image AND mask of that row's own shard slice, whatever store it lies in."""
    views = {"axial": (5, 0, 3, 4, 6), "coronal": (2, 4, 1, 3, 5), "sagittal": (3, 2, 4, 0, 2)}
    folders, expected = [], []  # expected: (case, view, slice, image, mask) per store row, in store order
    for seed, (view, sizes) in enumerate(views.items()):
        manifest, folder = make_subset(tmp_path, view, sizes=sizes, seed=seed)
        folders.append(folder)
        for row in manifest.itertuples():
            shard = read_shard(row.shard)
            expected += [(row.case, view, int(s), shard.image[j], shard.mask[j]) for j, s in enumerate(shard.slice)]
    store = SliceStore(folders)
    assert len(store) == len(expected) == 18 + 15 + 11 and set(store.view) == set(views)
    rng = np.random.default_rng(7)
    index = np.concatenate([rng.permutation(len(store)), rng.integers(0, len(store), 9)])  # unsorted, repeats
    images, masks = store.read(index)
    for position, row in enumerate(index):
        case, view, slice_, image, mask = expected[row]
        assert (store.case[row], store.view[row], store.slice[row]) == (case, view, slice_)
        np.testing.assert_array_equal(images[position], image, err_msg=f"image at position {position} (row {row})")
        np.testing.assert_array_equal(masks[position], mask, err_msg=f"mask at position {position} (row {row})")
    taken = store.take(index)
    np.testing.assert_array_equal(taken.mask, masks)
    np.testing.assert_array_equal(taken.view, store.view[index])
    # a split selection keeps the pairing too (positions no longer equal store rows)
    test = SliceStore(folders, ["test"])
    order = rng.permutation(len(test))
    images, masks = test.read(order)
    for position, i in enumerate(order):
        j = next(k for k, e in enumerate(expected)
                 if e[:3] == (test.case[i], test.view[i], test.slice[i]))
        np.testing.assert_array_equal(images[position], expected[j][3])
        np.testing.assert_array_equal(masks[position], expected[j][4])


def test_store_refuses_a_foreign_or_mismatched_folder(tmp_path):
    with pytest.raises(InputError, match="not a slice store"):
        SliceStore([tmp_path])
    _, store_dir = make_subset(tmp_path)
    with pytest.raises(InputError, match="no slices in split"):
        SliceStore([store_dir], ["holdout"])
    np.save(store_dir / "image.npy", np.zeros((3, 16, 16), np.float32))
    with pytest.raises(InputError, match="image.npy holds 3 slices, index.tsv 18"):
        SliceStore([store_dir])


def test_a_failing_shard_leaves_no_store(tmp_path):
    manifest, store_dir = make_subset(tmp_path)
    manifest.loc[3, "n_slices"] = 99  # the shard on disk no longer matches its manifest row
    with pytest.raises(InputError, match="re-run the manifest"):
        write_store(manifest, tmp_path / "other")
    assert not (tmp_path / "other").exists() and not list(tmp_path.glob(".other*"))


def test_step_batches_are_a_function_of_seed_and_step():
    full = list(StepBatches(10, 4, seed=5, start=0, stop=6))
    resumed = list(StepBatches(10, 4, seed=5, start=3, stop=6))
    for a, b in zip(full[3:], resumed):
        np.testing.assert_array_equal(a, b)
    # every epoch visits every slice exactly once
    flat = np.concatenate(full)[:20]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))
    assert not np.array_equal(flat[:10], flat[10:])  # a new order each epoch
    assert not np.array_equal(full[0], list(StepBatches(10, 4, seed=6, start=0, stop=1))[0])


def test_loader_with_workers_yields_the_same_batches(tmp_path):
    _, store_dir = make_subset(tmp_path)
    store = SliceStore([store_dir], ["train"])
    pickle.loads(pickle.dumps(store))  # workers get folder names, not array copies
    store.read(np.arange(2))
    assert pickle.loads(pickle.dumps(store))._files is None
    inline = list(step_loader(store, 3, 1, 0, 5))
    workers = list(step_loader(store, 3, 1, 0, 5, LoaderSettings(workers=2, prefetch=2)))
    for (a_img, a_mask), (b_img, b_mask) in zip(inline, workers, strict=True):
        assert a_img.shape == (3, 1, 16, 16) and a_mask.dtype == torch.uint8
        assert torch.equal(a_img, b_img) and torch.equal(a_mask, b_mask)


TINY = dict(num_classes=4, channels=(8, 8), attention_levels=(False, False), norm_num_groups=4, num_head_channels=8)


def _fit(store, checkpoint, loader):
    settings = TrainSettings(steps=6, lr=1e-3, warmup_steps=2, checkpoint_every=2, seed=3, ema_decay=0.9)
    return fit_diffusion(store, DenoiserConfig(**TINY), SchedulerConfig(num_train_timesteps=50, prediction_type="sample"),
                         settings, 4, checkpoint, torch.device("cpu"), loader=loader)


def test_kill_and_resume_from_the_store_with_workers_is_bit_identical(tmp_path, monkeypatch, one_thread):
    _, store_dir = make_subset(tmp_path)
    store = SliceStore([store_dir], ["train", "val"])
    reference = _fit(store, tmp_path / "reference.ckpt", LoaderSettings())

    def kill_at_5(step):
        if step == 5:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(training, "_after_step", kill_at_5)
    with pytest.raises(KeyboardInterrupt):
        _fit(store, tmp_path / "killed.ckpt", LoaderSettings(workers=2))
    monkeypatch.setattr(training, "_after_step", lambda step: None)
    resumed = _fit(store, tmp_path / "killed.ckpt", LoaderSettings(workers=1))
    assert resumed.resumed_from == 4
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in reference.history]
    for (name, a), (_, b) in zip(reference.ema.state_dict().items(), resumed.ema.state_dict().items()):
        assert torch.equal(a, b), name

    # the final checkpoint stays: a job killed after its last step (while writing its files) ends at once
    monkeypatch.setattr(training, "_after_step", kill_at_5)  # would fire if any step ran again
    again = _fit(store, tmp_path / "killed.ckpt", LoaderSettings())
    assert again.resumed_from == 6 and again.history == resumed.history
    assert all(torch.equal(a, b) for a, b in zip(again.ema.state_dict().values(), resumed.ema.state_dict().values()))


def test_remove_finished_deletes_only_checkpoints_of_written_models(tmp_path):
    done, pending = tmp_path / "done.ckpt", tmp_path / "pending.ckpt"
    for path in (done, pending):
        path.write_bytes(b"checkpoint")
    os.utime(done, (1, 1))
    (tmp_path / "done.pt").write_bytes(b"model")
    assert remove_finished([(done, tmp_path / "done.pt"), (pending, tmp_path / "pending.pt")]) == [done]
    assert not done.exists() and pending.exists()


def test_a_failure_at_any_write_position_of_a_subset_leaves_nothing(tmp_path, monkeypatch):
    """write_subset writes the store folder and then the manifest: fail each write, chmod and rename in turn."""
    import os

    import segdiff.core.atomic as atomic
    import segdiff.data.store as store_module

    manifest, store_dir = make_subset(tmp_path / "src")
    rows = manifest[["case", "modality", "split"]]
    calls = {"n": 0, "fail_at": None}

    def counting(real):
        def wrapper(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == calls["fail_at"]:
                raise OSError(f"injected failure at write position {calls['n']}")
            return real(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(atomic.os, "replace", counting(os.replace))
    monkeypatch.setattr(atomic.os, "chmod", counting(os.chmod))
    monkeypatch.setattr(store_module.pd.DataFrame, "to_csv", counting(pd.DataFrame.to_csv))
    out = tmp_path / "out"
    store_module.write_subset(rows, list(manifest["shard"]), "axial", out / "manifest.tsv", out / "store")
    positions = calls["n"]
    assert positions >= 6  # index + manifest writes, two chmods, two renames
    for fail_at in range(1, positions + 1):
        target = tmp_path / f"fail{fail_at}"
        calls.update(n=0, fail_at=fail_at)
        with pytest.raises(OSError, match="injected failure"):
            store_module.write_subset(rows, list(manifest["shard"]), "axial", target / "manifest.tsv", target / "store")
        assert not target.exists() or not any(target.iterdir()), (fail_at, sorted(target.rglob("*")))


def test_store_writer_refuses_a_short_store_and_leaves_nothing(tmp_path):
    from segdiff.core.errors import InputError
    from segdiff.data.store import StoreWriter

    with pytest.raises(InputError, match="1 slices appended, 2 announced"):
        with StoreWriter(tmp_path / "store", 2, (4, 4), views=True) as writer:
            writer.append(np.zeros((1, 4, 4)), np.ones((1, 4, 4)), "c0", "train", [3], "axial")
    with pytest.raises(RuntimeError):
        with StoreWriter(tmp_path / "store", 1, (4, 4)) as writer:
            raise RuntimeError("killed")
    assert not (tmp_path / "store").exists() and not list(tmp_path.iterdir())
