"""The training sets the usefulness segmentors learn from, written as slice stores.

- :func:`sample_trainset`: one generation of the study's diffusion model for every train + val mask of
  one slice view (a part of them per chunk job), written batch by batch into a store
  (:class:`~segdiff.data.store.StoreWriter`: memory O(batch) at any scale). Each row keeps the real
  slice's case, split, slice index and view, so the segmentor reads it like the real stores; its seed is
  its own (``sample_seed(seed, "trainset/{case}/{view}", slice, 0)``), so the images do not depend on the
  batch, the chunk count or the job order.
- :func:`oracle_trainset` (phantom only): one oracle render of every train + val case
  (:func:`segdiff.data.oracle.render_oracle`, render 1), written with the real store's masks into one
  store per view: the set a perfect generator would give.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from segdiff.core.errors import InputError
from segdiff.core.labels import LabelMap
from segdiff.data.oracle import render_oracle
from segdiff.data.store import SliceStore, StoreWriter
from segdiff.models.diffusion import load_diffusion
from segdiff.sampling.samplers import SamplerSettings, generate, sample_seed
from segdiff.usefulness.sets import TRAINSET_GROUP_BATCHES

__all__ = ["TrainsetJob", "sample_trainset", "trainset_part", "OracleTrainsetJob", "oracle_trainset"]

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class TrainsetJob:
    """One part of the generated training set of a modality x slice view (rule ``sample_trainset``).

    Attributes:
        model: the diffusion model that draws the view's slices (the view's own, else the modality's
            all-views model).
        store: the real slice store of the view (its masks are the conditions).
        splits: the splits generated (the segmentor's, e.g. ``["train", "val"]``).
        sampler: the study's sampler settings.
        seed: the study seed.
        device: where the model runs.
        out: the store folder to write.
        chunk: this part's number, from 0.
        chunks: the number of parts.
    """

    model: str | Path
    store: str | Path
    splits: Sequence[str]
    sampler: SamplerSettings
    seed: int
    device: torch.device
    out: str | Path
    chunk: int = 0
    chunks: int = 1


def trainset_part(n: int, chunk: int, chunks: int) -> np.ndarray:
    """Positions of part ``chunk`` of ``chunks`` of a set of ``n`` slices (contiguous; parts in order make the whole).

    Args:
        n: slices in the set.
        chunk: the part, from 0.
        chunks: the number of parts.

    Returns:
        The positions, ascending.
    """
    if not 0 <= chunk < chunks:
        raise ValueError(f"chunk {chunk} of {chunks}")
    return np.array_split(np.arange(n), chunks)[chunk]


def sample_trainset(job: TrainsetJob) -> None:
    """Generate one image for every mask of the job's part and write them, with their masks, as a store.

    Args:
        job: the part to generate.

    Raises:
        InputError: masks that hold an id the model does not know.
    """
    store = SliceStore([job.store], job.splits)
    positions = trainset_part(len(store), job.chunk, job.chunks)
    model, scheduler_config, meta = load_diffusion(job.model, job.device)
    num_classes = model.config.num_classes
    group = job.sampler.batch_size * TRAINSET_GROUP_BATCHES
    log.info("%d of %d %s slices (%s) from %s", len(positions), len(store), "+".join(job.splits), Path(job.store).parent.name,
             job.model)
    with StoreWriter(job.out, len(positions), store.shape, views=True) as writer:
        for start in tqdm(range(0, len(positions), group), desc="generated training set", unit="group", mininterval=5.0):
            index = positions[start : start + group]
            _, masks = store.read(index)
            if len(masks) and int(masks.max()) >= num_classes:
                raise InputError(job.model, f"model knows {num_classes - 1} classes, masks of {job.store} hold id "
                                            f"{int(masks.max())}")
            seeds = [sample_seed(job.seed, f"trainset/{c}/{v}", s, 0)
                     for c, v, s in zip(store.case[index], store.view[index], store.slice[index])]
            images = generate(model, scheduler_config, masks, seeds, num_classes, job.sampler, job.device,
                              desc=f"trainset {Path(job.model).stem}")
            writer.append(images, masks, store.case[index], store.split[index], store.slice[index], store.view[index])


@dataclass(frozen=True)
class OracleTrainsetJob:
    """Oracle renders of a modality's train + val cases as stores, one per view (rule ``oracle_trainset``).

    Attributes:
        modality: the cases' modality (the renders' contrast).
        cases: case id -> its label volume, for every case of the stores' ``splits``.
        stores: view -> the real store of that view (its masks and slice order are kept).
        splits: the splits rendered.
        phantom: the config's ``phantom`` section.
        seed: the study seed the phantom was drawn with.
        labels: the label map.
        image_size: ``preprocess.image_size``.
        min_foreground: ``preprocess.min_foreground``.
        ct_window: ``preprocess.ct_window``.
        mri_percentiles: ``preprocess.mri_percentiles``.
        outputs: view -> the store folder to write.
    """

    modality: str
    cases: Mapping[str, str | Path]
    stores: Mapping[str, str | Path]
    splits: Sequence[str]
    phantom: Mapping
    seed: int
    labels: LabelMap
    image_size: int
    min_foreground: int
    ct_window: Sequence[float]
    mri_percentiles: Sequence[float]
    outputs: Mapping[str, str | Path]


def oracle_trainset(job: OracleTrainsetJob) -> None:
    """Render every case once and write the renders, with the real stores' masks, one case at a time.

    Args:
        job: the renders to write.

    Raises:
        InputError: a case whose render is sliced differently from its real slices (other slices or
            other organ masks).
    """
    views = list(job.outputs)
    stores = {v: SliceStore([job.stores[v]], job.splits) for v in views}
    cases = list(dict.fromkeys(c for v in views for c in stores[v].case))  # store order
    with contextlib.ExitStack() as pending:
        writers = {v: pending.enter_context(StoreWriter(job.outputs[v], len(stores[v]), stores[v].shape, views=True))
                   for v in views}
        for case in tqdm(cases, desc=f"oracle training set {job.modality}", unit="case", mininterval=5.0):
            renders = render_oracle(case, job.modality, job.cases[case], job.phantom, job.seed, 1, job.labels, views,
                                    image_size=job.image_size, min_foreground=job.min_foreground,
                                    ct_window=job.ct_window, mri_percentiles=job.mri_percentiles)
            for v in views:
                store, rows = stores[v], np.flatnonzero(stores[v].case == case)
                _, masks = store.read(rows)
                render = renders[v]
                organs = np.isin(masks, job.labels.ids)
                if not np.array_equal(render["slice"], store.slice[rows]) or not np.array_equal(
                        np.where(organs, masks, 0), np.where(np.isin(render["mask"], job.labels.ids), render["mask"], 0)):
                    raise InputError(job.stores[v], f"the oracle render of {case} ({v}) is sliced differently from its "
                                                    "real slices (re-run the slicing?)")
                writers[v].append(render["image"][:, 0], masks, case, store.split[rows], store.slice[rows], v)
