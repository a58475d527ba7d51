"""Shared fixtures: small NIfTI pairs written by the tests themselves, repository paths; the order and threads
of the test processes (pytest-xdist, ``-n auto`` in pyproject.toml)."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CONFIG_SCHEMA = REPO / "config/schemas/config.schema.yaml"
CASES_SCHEMA = REPO / "config/schemas/cases.schema.yaml"
TOTALSEG = REPO / "tests/fixtures/totalsegmentator-ct-example"

#: the slowest modules (end-to-end studies), started first: pytest-xdist (``--dist loadscope``) hands each
#: worker whole modules in this order, so the long ones run side by side instead of last
SLOW_FIRST = ("pipeline/test_slurm.py", "pipeline/test_workflow.py", "evaluation/test_evaluation.py",
              "sources/test_totalvibe.py", "pipeline/test_amos_workflow.py", "data/test_scale.py")


def pytest_collection_modifyitems(items):
    """The modules of :data:`SLOW_FIRST` first, in that order; the others keep their order."""
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    tests = REPO / "tests"
    items.sort(key=lambda item: rank.get(Path(item.fspath).relative_to(tests).as_posix(), len(rank)))


def pytest_configure(config):
    """Each xdist worker's torch uses its share of the cores: spinning intra-op threads of two processes on
    the same cores are many times slower than one thread each."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


#: the tiny study's phantom grid (.test/config/config.yaml): the data tests' phantom volumes
PHANTOM_SHAPE, PHANTOM_SPACING = (48, 40, 24), (8.0, 8.0, 12.0)


@pytest.fixture(scope="module")
def phantom_ct_case(tmp_path_factory):
    """A phantom CT case (amos_0002, seed 3) on :data:`PHANTOM_SHAPE`: a folder with image.nii.gz and label.nii.gz."""
    from segdiff.sources.phantom import generate_case

    folder = tmp_path_factory.mktemp("ct_case")
    image, label = generate_case("amos_0002", "ct", PHANTOM_SHAPE, PHANTOM_SPACING, seed=3)
    nib.save(image, folder / "image.nii.gz")
    nib.save(label, folder / "label.nii.gz")
    return folder


def ras_pair(shape=(20, 16, 12), spacing=(2.0, 1.5, 3.0), seed=0):
    """A random RAS image in HU and a label volume with three organs as boxes."""
    rng = np.random.default_rng(seed)
    image = rng.normal(40, 30, shape).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    x, y, z = shape
    label[2 : x // 2, 3 : y // 2, 1 : z - 2] = 6  # liver
    label[x // 2 + 2 : x - 3, 2 : y // 3, 2 : z // 2] = 1  # spleen
    label[x // 3 : x // 2 + 3, y // 2 + 2 : y - 2, 3 : z - 1] = 7  # stomach
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = (-100.0, -80.0, 20.0)
    return image, label, affine


def save(array, affine, path, dtype=None):
    img = nib.Nifti1Image(array if dtype is None else array.astype(dtype), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, path)
    return Path(path)


def to_lps(array, affine):
    """The same volume stored in LPS voxel order (x and y axes flipped), world coordinates unchanged."""
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3] = array.shape[0] - 1
    flip[1, 3] = array.shape[1] - 1
    return array[::-1, ::-1, :].copy(), affine @ flip


@pytest.fixture
def nifti_pair(tmp_path):
    """(image path, label path, image array, label array, affine) of a small RAS case."""
    image, label, affine = ras_pair()
    return (save(image, affine, tmp_path / "img.nii.gz"), save(label, affine, tmp_path / "lab.nii.gz"), image, label, affine)


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """torch.hub pointed at an empty directory; any torch hub download attempt fails the test."""
    hub = tmp_path / "hub"
    hub.mkdir()
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))

    def no_download(*args, **kwargs):
        raise AssertionError("attempted a download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    return hub


@pytest.fixture
def one_thread():
    """Inception on one intra-op thread: on a shared 2-core machine two spinning threads are ~20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
