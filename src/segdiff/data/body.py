"""The body envelope: one more mask class that fixes the outline of the body.

The organs of a label map (AMOS's 15) leave the outline of the body free, so a mask-conditioned model
invents one; MAISI conditions on a body envelope (its label 200) for this reason. With
``preprocess.body.mode`` other than ``off``, the slicing job adds the envelope to the mask as one more
class: pixels that are body and no organ get :attr:`segdiff.core.labels.LabelMap.body_id` (the map's
largest id + 1); organ ids are unchanged and background stays 0.

- ``threshold``: derived from the image (:func:`body_mask`): CT above a threshold in HU (on the raw
  HU, before the window), MRI above a threshold on the normalised [0, 1] intensity; the largest 3D
  connected component, its holes filled slice by slice (lungs, bowel gas), organ voxels always included.
- ``sheet``: the user's body mask of each case (case sheet column ``body``, a NIfTI on the image's grid,
  nonzero = body), for data where no threshold works.

Memory: the envelope is a bool volume; deriving it holds one bool and one int32 volume beside the
case (the connected components), so slicing stays within 3x the float32 volume.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from segdiff.data.slicing import normalise
from segdiff.sources.volumes import Volume

log = logging.getLogger(__name__)

__all__ = ["BODY_MODES", "BodySettings", "body_mask", "add_body", "normalise_with_body"]

BODY_MODES = ("off", "threshold", "sheet")

_COUNT_BLOCK = 1 << 22  # voxels per block when counting component sizes (no int64 copy of the volume)


@dataclass(frozen=True)
class BodySettings:
    """How the envelope of a case is made (``preprocess.body``).

    Attributes:
        mode: ``off`` (no envelope), ``threshold`` (:func:`body_mask`) or ``sheet`` (the case's body mask file).
        ct_threshold_hu: CT voxels above this HU are body candidates.
        mri_threshold: MRI voxels above this normalised intensity (in [0, 1]) are body candidates.
        mri_percentiles: the MRI normalisation the threshold applies to (``preprocess.mri_percentiles``).
    """

    mode: str = "off"
    ct_threshold_hu: float = -500.0
    mri_threshold: float = 0.15
    mri_percentiles: Sequence[float] = (0.5, 99.5)

    def __post_init__(self):
        if self.mode not in BODY_MODES:
            raise ValueError(f"unknown body mode {self.mode!r} (expected one of {BODY_MODES})")

    @property
    def on(self) -> bool:
        """Whether the masks carry the envelope."""
        return self.mode != "off"

    def threshold(self, modality: str) -> float:
        """The threshold of ``modality``: HU for ``ct``, normalised intensity for ``mri``.

        Args:
            modality: ``ct`` or ``mri``.

        Returns:
            The threshold.

        Raises:
            ValueError: an unknown modality.
        """
        if modality == "ct":
            return float(self.ct_threshold_hu)
        if modality == "mri":
            return float(self.mri_threshold)
        raise ValueError(f"unknown modality {modality!r} (expected 'ct' or 'mri')")

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> BodySettings:
        """The settings of a rule's ``preprocess["body"]`` (:func:`segdiff.pipeline.job_params.body_params`).

        Args:
            params: the narrowed ``preprocess.body`` section, or None (absent: the envelope is off); its
                ``modality`` (of the cases) is not a setting and is left out.

        Returns:
            The settings; keys the section leaves out keep their defaults.
        """
        if not params:
            return cls()
        params = {key: value for key, value in params.items() if key != "modality"}
        if "mri_percentiles" in params:
            params["mri_percentiles"] = tuple(params["mri_percentiles"])
        return cls(**params)


def _largest_component(mask: np.ndarray) -> None:
    """Keep only the largest face-connected component of ``mask`` (bool), in place."""
    components, n = ndimage.label(mask)  # int32: the one full-size temporary
    if n <= 1:
        return
    flat = components.reshape(-1)
    sizes = np.zeros(n + 1, np.int64)
    for start in range(0, flat.size, _COUNT_BLOCK):  # bincount would copy the whole volume to int64
        block = np.bincount(flat[start : start + _COUNT_BLOCK], minlength=n + 1)
        sizes += block
    sizes[0] = 0
    np.equal(components, int(np.argmax(sizes)), out=mask)


def body_mask(image: np.ndarray, modality: str, settings: BodySettings = BodySettings(mode="threshold"),
              organs: np.ndarray | None = None) -> np.ndarray:
    """The body envelope of a volume, derived from its intensities.

    Voxels above the modality's threshold (and the organ voxels) -> the largest 3D connected component
    (face connectivity) -> its holes filled in every axial slice (the last axis of a canonical RAS
    volume: lungs and bowel gas inside the body outline become body) -> the organ voxels added.

    Args:
        image: the volume (X, Y, Z): CT in HU (before windowing), MRI normalised to [0, 1]
            (:func:`segdiff.data.slicing.normalise_mri`).
        modality: ``ct`` or ``mri`` (which threshold of ``settings`` applies).
        settings: the thresholds (its ``mode`` is not read).
        organs: the label volume (nonzero = organ), same shape, or None.

    Returns:
        bool (X, Y, Z): True inside the body.

    Raises:
        ValueError: an unknown modality, or ``organs`` of another shape than ``image``.
    """
    threshold = settings.threshold(modality)
    if organs is not None and organs.shape != image.shape:
        raise ValueError(f"organs {organs.shape} and image {image.shape} differ in shape")
    mask = np.greater(image, threshold)
    if organs is not None:
        np.logical_or(mask, organs, out=mask)
    if not mask.any():
        return mask
    _largest_component(mask)
    for z in range(mask.shape[-1]):  # slice by slice: no 3D temporaries
        mask[..., z] = ndimage.binary_fill_holes(mask[..., z])
    if organs is not None:
        np.logical_or(mask, organs, out=mask)
    return mask


def add_body(label: np.ndarray, body: np.ndarray, body_id: int) -> np.ndarray:
    """Write the envelope into a label volume, in place: background voxels inside ``body`` get ``body_id``.

    Args:
        label: uint8 label ids (organs keep theirs).
        body: bool envelope of the same shape.
        body_id: the envelope's id (:attr:`~segdiff.core.labels.LabelMap.body_id`).

    Returns:
        ``label``.

    Raises:
        ValueError: a ``body_id`` a uint8 mask cannot hold, or ``body`` of another shape.
    """
    if not 0 < body_id <= np.iinfo(label.dtype).max:
        raise ValueError(f"body id {body_id} does not fit the {label.dtype} mask")
    if body.shape != label.shape:
        raise ValueError(f"body {body.shape} and label {label.shape} differ in shape")
    for z in range(label.shape[-1]):  # per slice: the temporaries stay small
        np.copyto(label[..., z], label.dtype.type(body_id), where=body[..., z] & (label[..., z] == 0))
    return label


def normalise_with_body(volume: Volume, modality: str, body: BodySettings, body_id: int,
                        ct_window: Sequence[float] = (-175.0, 250.0),
                        mri_percentiles: Sequence[float] = (0.5, 99.5)) -> np.ndarray:
    """Normalise a case's image in place and write its envelope into its label (when ``body`` is on).

    CT thresholds the raw HU, so its envelope is derived before the window; MRI thresholds the
    normalised intensity, so after. Mode ``sheet`` takes ``volume.body`` (the case's body mask file).

    Args:
        volume: the case; ``volume.image`` is normalised in place, ``volume.label`` gets ``body_id``.
        modality: ``ct`` or ``mri``.
        body: the envelope's settings.
        body_id: the envelope's id (:attr:`~segdiff.core.labels.LabelMap.body_id`).
        ct_window: the CT window in HU.
        mri_percentiles: the MRI percentiles.

    Returns:
        The normalised image (``volume.image``).

    Raises:
        ValueError: mode ``sheet`` without ``volume.body``.
    """
    envelope = None
    if body.mode == "sheet":
        if volume.body is None:
            raise ValueError("preprocess.body.mode sheet: the case has no body mask")
        envelope = volume.body
    elif body.mode == "threshold" and modality == "ct":
        envelope = body_mask(volume.image, modality, body, volume.label)
    normalised = normalise(volume.image, modality, ct_window, mri_percentiles, out=volume.image)
    if body.mode == "threshold" and modality != "ct":
        envelope = body_mask(normalised, modality, body, volume.label)
    if envelope is not None:
        add_body(volume.label, envelope, body_id)
        share = np.count_nonzero(envelope) / envelope.size
        log.info("body envelope (%s): %.1f%% of the volume", body.mode, 100.0 * share)
    return normalised
