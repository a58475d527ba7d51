"""The workflow's slicing job (rule ``slice_case``): one case's image and label volumes to the NPZ
shard and the preview folder of each view, as one settings object (:class:`SliceCaseJob`) built by
:func:`segdiff.pipeline.jobs.slice_case_job`."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from segdiff.core.labels import LabelMap, Remap
from segdiff.data.body import BodySettings
from segdiff.data.shards import write_case_shards
from segdiff.sources.volumes import load_case

__all__ = ["SliceCaseJob", "slice_case"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SliceCaseJob:
    """One case sliced in every view (:func:`slice_case`).

    Attributes:
        case: the case id.
        modality: ``ct`` or ``mri`` (which intensity normalisation applies).
        image: the image volume (NIfTI).
        label: the label volume (NIfTI), on the image's grid.
        labels: the label map the label volume is checked against.
        remap: the table from the label volume's ids to the map's (None: the ids are the map's).
        shards: view -> the ``.npz`` shard to write.
        previews: view -> the preview folder to write.
        image_size: slice size in pixels (``preprocess.image_size``).
        min_foreground: organ pixels a slice needs to be kept (``preprocess.min_foreground``).
        ct_window: the CT intensity window (None for an MRI case).
        mri_percentiles: the MRI normalisation percentiles (None for a CT case).
        previews_per_case: preview PNGs per view.
        body: the body envelope (``preprocess.body``; off by default).
        body_mask: the case's body mask (NIfTI, on the image's grid) for ``body.mode`` sheet, else None.
    """

    case: str
    modality: str
    image: str | Path
    label: str | Path
    labels: LabelMap
    remap: Remap | None
    shards: Mapping[str, str | Path]
    previews: Mapping[str, str | Path]
    image_size: int
    min_foreground: int
    ct_window: Sequence[float] | None
    mri_percentiles: Sequence[float] | None
    previews_per_case: int
    body: BodySettings = BodySettings()
    body_mask: str | Path | None = None


def slice_case(job: SliceCaseJob) -> dict[str, int]:
    """Load and check the case's volumes, then write the shard and the previews of each view.

    Args:
        job: the case and its files.

    Returns:
        view -> slices kept.
    """
    volume = load_case(job.image, job.label, job.labels, job.remap,
                       body_path=job.body_mask if job.body.mode == "sheet" else None)
    counts = write_case_shards(volume, job.modality, job.shards, job.previews, image_size=job.image_size,
                               min_foreground=job.min_foreground, ct_window=job.ct_window,
                               mri_percentiles=job.mri_percentiles, previews_per_case=job.previews_per_case,
                               body=job.body, body_id=job.labels.body_id)
    log.info("%s: slices per view %s (spacing %s mm)", job.case, counts, volume.spacing)
    return counts
