"""What shapes each job's outputs: the narrow ``params`` of the workflow's rules.

Snakemake reruns a finished job when its ``params`` change (rerun trigger ``params``). A rule
therefore takes only the settings that shape its outputs. The settings of speed and placement
(:data:`SPEED_KEYS`: memory, threads, loader workers, device, precision, the sampling batch, the
number of sampling chunks, compiling, the checkpoint interval) never change what a job computes
beyond floating-point rounding: jobs read them from ``snakemake.config`` at run time, so changing
them reruns nothing. (A training checkpoint is still keyed on the precision and the number of
ranks, see :mod:`segdiff.models.training`: a rerun for another reason never resumes across them.)

A key is a speed key only when :data:`SPEED_KEYS` names it: every other key, a new one included,
shapes the outputs of the jobs that read its section.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

__all__ = ["SPEED_KEYS", "MODALITY_KEYS", "diffusion_params", "preprocess_params", "segmentor_params", "sampling_params", "trainset_params", "body_params", "recorded_config", "speed_settings"]

#: section -> keys of speed and placement (``"*"``: the whole section)
SPEED_KEYS: dict[str, tuple[str, ...] | str] = {
    "compute": "*",
    "diffusion.train": ("checkpoint_every", "compile"),
    "segmentor.train": ("checkpoint_every", "compile"),
    "sampling": ("batch_size", "chunks", "compile"),
    "preprocess": ("keep_shards",),
}


def _section(config: Mapping[str, Any], path: str) -> Any:
    node = config
    for part in path.split("."):
        node = node[part]
    return node


def _without_speed(config: Mapping[str, Any], path: str) -> dict[str, Any]:
    """A deep copy of the section ``path`` of ``config`` without its speed keys (its own and those of its subsections)."""
    section = copy.deepcopy(dict(_section(config, path)))
    for speed_path, keys in SPEED_KEYS.items():
        if speed_path == path or speed_path.startswith(path + "."):
            inner = _section(section, speed_path[len(path) + 1:]) if speed_path != path else section
            for key in list(inner) if keys == "*" else keys:
                inner.pop(key, None)
    return section


def diffusion_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """What shapes a diffusion model: conditioning, ``ablation_p``, network, scheduler and training
    settings. Not the list of runs (adding a run must not retrain the others), nor speed keys.

    Args:
        config: the validated workflow config.
    """
    params = _without_speed(config, "diffusion")
    params.pop("runs", None)
    return params


def segmentor_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """What shapes an auxiliary segmentor: its splits, network and training settings (no speed keys).

    Args:
        config: the validated workflow config.
    """
    return _without_speed(config, "segmentor")


def sampling_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """What shapes a run's generations: sampler, steps, ``eta`` (DDIM's), ``spacing`` (DPM-Solver++'s),
    ``k``. Not the multi-modal experiments (adding one must not resample the others), nor the batch
    or the number of chunks (every generation has its own seed, so neither changes what is drawn),
    nor a setting the sampler ignores.

    Args:
        config: the validated workflow config.
    """
    params = _without_speed(config, "sampling")
    params.pop("multimodal", None)
    if params.get("sampler") not in ("ddim", None):
        params.pop("eta", None)
    if not str(params.get("sampler", "")).startswith("dpmpp"):
        params.pop("spacing", None)
    return params


def trainset_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """What shapes a generated training set: :func:`sampling_params` without ``k`` (one generation per mask).

    Args:
        config: the validated workflow config.
    """
    params = sampling_params(config)
    params.pop("k", None)
    return params


#: preprocess key -> the one modality whose intensities it normalises
MODALITY_KEYS = {"ct_window": "ct", "mri_percentiles": "mri"}


def body_params(config: Mapping[str, Any], modality: str) -> dict[str, Any] | None:
    """What shapes the body envelope of one modality's cases (``preprocess.body``): None when it is off;
    the mode, and in mode ``threshold`` that modality's threshold (the MRI one with the
    ``mri_percentiles`` it applies to), and ``modality``.

    Args:
        config: the validated workflow config.
        modality: ``ct`` or ``mri``: the modality of the cases (not of an oracle render's contrast).
    """
    body = config["preprocess"].get("body") or {}
    mode = body.get("mode", "off")
    if mode == "off":
        return None
    params = {"mode": mode, "modality": modality}
    if mode == "threshold" and modality == "ct":
        params["ct_threshold_hu"] = body["ct_threshold_hu"]
    elif mode == "threshold":
        params.update(mri_threshold=body["mri_threshold"], mri_percentiles=list(config["preprocess"]["mri_percentiles"]))
    return params


def preprocess_params(config: Mapping[str, Any], modality: str, body_modality: str | None = None) -> dict[str, Any]:
    """What shapes the slices (or oracle renders) of one modality: ``preprocess`` without the other
    modality's intensity setting (a new CT window must not re-slice the MRI cases), its ``body`` narrowed
    by :func:`body_params` (absent while the envelope is off: a study sliced before the envelope existed
    keeps its params).

    Args:
        config: the validated workflow config.
        modality: ``ct`` or ``mri``.
        body_modality: the modality of the cases whose envelope applies (an oracle render of a CT case in
            MRI contrast keeps the CT case's envelope); ``modality`` when None.
    """
    params = {key: copy.deepcopy(value) for key, value in _without_speed(config, "preprocess").items()
              if MODALITY_KEYS.get(key, modality) == modality and key != "body"}
    body = body_params(config, body_modality or modality)
    if body is not None:
        params["body"] = body
    return params


def recorded_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config that provenance records: every section without its speed keys (so that changing a
    memory request rewrites nothing).

    Args:
        config: the validated workflow config.
    """
    return {key: _without_speed(config, key) if isinstance(value, Mapping) else copy.deepcopy(value)
            for key, value in config.items() if SPEED_KEYS.get(key) != "*"}


def speed_settings(config: Mapping[str, Any], path: str) -> dict[str, Any]:
    """The speed keys of the section ``path`` (e.g. ``"diffusion.train"``) that jobs read from the config.

    Args:
        config: the validated workflow config.
        path: a dotted section named in :data:`SPEED_KEYS`.
    """
    section, keys = _section(config, path), SPEED_KEYS[path]
    return {key: copy.deepcopy(section[key]) for key in (list(section) if keys == "*" else keys) if key in section}
