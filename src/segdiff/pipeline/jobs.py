"""The settings object of each workflow job, built from the ``snakemake`` object of its script.

Every job's script is one library call, ``run_script(snakemake, lambda: entry(builder(snakemake)))``:
a builder here turns the rule's ``params``, ``input``, ``output`` and ``wildcards`` and the workflow's
``config`` into the typed, frozen settings object of the job's entry point, which takes nothing else.

- :func:`diffusion_train_job` -> :class:`~segdiff.models.jobs.DiffusionTrainJob` -> :func:`segdiff.models.jobs.train_diffusion`;
- :func:`segmentor_train_job` -> :class:`~segdiff.models.jobs.SegmentorTrainJob` -> :func:`segdiff.models.jobs.train_segmentor`;
- :func:`sample_job` -> :class:`~segdiff.sampling.experiments.SampleJob` -> :func:`segdiff.sampling.experiments.sample_chunk`;
- :func:`gather_job` -> :class:`~segdiff.sampling.files.GatherJob` -> :func:`segdiff.sampling.files.gather_run`;
- :func:`evaluation_job` -> :class:`~segdiff.evaluation.run.EvaluationJob` -> :func:`segdiff.evaluation.run.evaluation_job`;
- :func:`oracle_job` -> :class:`~segdiff.data.oracle.OracleJob` -> :func:`segdiff.data.oracle.case_oracle`;
- :func:`slice_case_job` -> :class:`~segdiff.data.jobs.SliceCaseJob` -> :func:`segdiff.data.jobs.slice_case`;
- :func:`evaluation_figures_job` -> :class:`~segdiff.evaluation.figures.EvaluationFiguresJob` ->
  :func:`segdiff.evaluation.figures.evaluation_figures`;
- :func:`trainset_job`, :func:`oracle_trainset_job`, :func:`score_job` -> the usefulness experiment's
  :func:`segdiff.usefulness.trainset.sample_trainset`, :func:`~segdiff.usefulness.trainset.oracle_trainset`,
  :func:`segdiff.usefulness.score.score_segmentor`.

The other scripts pass a few params and files straight to one library function.

What shapes a job's outputs comes from the rule's ``params`` (:mod:`segdiff.pipeline.job_params`:
Snakemake reruns the job when they change); speed and placement (``compute.*``, the sampling batch,
the checkpoint interval, compiling) from ``snakemake.config`` through
:func:`~segdiff.pipeline.job_params.speed_settings`. The builders decide here, once, what depends on
the machine the job runs on: the device (``compute.device``), bf16 (``compute.precision`` on that
device), the batch readers and the number of training processes.

The Snakefile imports this package at every parse: the stage modules (torch models, MONAI,
matplotlib) are imported by the builders, in the job's process, not by this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segdiff.pipeline.job_params import speed_settings

if TYPE_CHECKING:
    import torch

    from segdiff.data.jobs import SliceCaseJob
    from segdiff.data.oracle import OracleJob
    from segdiff.evaluation.run import EvaluationJob
    from segdiff.models.jobs import DiffusionTrainJob, SegmentorTrainJob
    from segdiff.evaluation.figures import EvaluationFiguresJob
    from segdiff.sampling.experiments import SampleJob
    from segdiff.sampling.files import GatherJob
    from segdiff.sampling.samplers import SamplerSettings
    from segdiff.usefulness.score import ScoreJob
    from segdiff.usefulness.trainset import OracleTrainsetJob, TrainsetJob

__all__ = ["sampler_settings", "sample_job", "gather_job", "evaluation_job", "oracle_job", "diffusion_train_job",
           "segmentor_train_job", "slice_case_job", "evaluation_figures_job", "trainset_job", "oracle_trainset_job",
           "score_job"]


def _paths(files: Any) -> tuple[str, ...]:
    """A rule's list of files (a Snakemake ``Namedlist`` or any sequence of paths) as plain strings."""
    return tuple(str(f) for f in files)


def _device(config: Mapping[str, Any]) -> torch.device:
    """The job's device: ``compute.device`` (auto: CUDA where available) on this machine."""
    from segdiff.core.device import pick_device

    return pick_device(speed_settings(config, "compute")["device"])


def sampler_settings(sampling: Mapping[str, Any], precision: str, device: torch.device) -> SamplerSettings:
    """The sampler of the config's ``sampling`` section, its batch and its precision on ``device``.

    The one place where the config's sampling settings become the
    :class:`~segdiff.sampling.samplers.SamplerSettings` that every sampling function takes.

    Args:
        sampling: ``sampler``, ``steps``, ``eta`` and ``spacing`` (the params, without what the sampler ignores),
            ``batch_size`` and ``compile`` (speed keys).
        precision: ``compute.precision`` (auto | bf16 | fp32).
        device: where the sampling runs (``bf16`` is decided for it).

    Returns:
        The sampler settings, ``bf16`` decided (never None).
    """
    from segdiff.core.device import use_bf16
    from segdiff.sampling.samplers import SamplerSettings

    return SamplerSettings(sampler=sampling["sampler"], steps=sampling["steps"], eta=sampling.get("eta", 0.0),
                           spacing=sampling.get("spacing", "lambda"), batch_size=sampling["batch_size"],
                           bf16=use_bf16(precision, device), compile=sampling.get("compile", False))


def sample_job(snakemake: Any) -> SampleJob:
    """One chunk of a run's sampling (rules ``sample_diffusion``, ``sample_multimodal``).

    Args:
        snakemake: the job's ``snakemake`` object: params ``sampling`` (sampler, steps, eta, k),
            ``mode``, ``max_slices``, ``seed`` and (multi-modal) ``min_foreground``; input ``model``, ``stores``;
            output ``part``; wildcards ``source`` (multi-modal) and
            ``scatteritem`` (``i-of-n``, Snakemake's scattergather; ``n`` follows ``--set-scatter sample=N``);
            config ``sampling.batch_size``, ``compute.device``, ``compute.precision``.

    Returns:
        The :class:`~segdiff.sampling.experiments.SampleJob` of chunk ``i - 1`` of ``n``.
    """
    from segdiff.sampling.chunks import scatter_item
    from segdiff.sampling.experiments import SampleJob

    p, config = snakemake.params, snakemake.config
    chunk, chunks = scatter_item(snakemake.wildcards.scatteritem)
    device = _device(config)
    sampling = {**p.sampling, **speed_settings(config, "sampling")}  # + the batch (speed only)
    return SampleJob(model=str(snakemake.input.model), stores=_paths(snakemake.input.stores), mode=p.mode,
                     sampler=sampler_settings(sampling, speed_settings(config, "compute")["precision"], device),
                     k=p.sampling["k"], max_slices=p.max_slices, seed=p.seed, device=device,
                     out=str(snakemake.output.part), chunk=chunk - 1, chunks=chunks,
                     min_foreground=getattr(p, "min_foreground", 0),  # multi-modal only
                     source=getattr(snakemake.wildcards, "source", ""))


def gather_job(snakemake: Any) -> GatherJob:
    """The merge of a run's chunk files and its PNG grids (rules ``gather_samples``, ``gather_multimodal``).

    Args:
        snakemake: the job's ``snakemake`` object: params ``labels``; input ``parts``; output
            ``samples``, ``grid`` and, for multi-inference, ``reconstruction``, ``reconstruction_grid``;
            wildcards ``modality``, ``view`` and, for multi-modal runs, ``source``.

    Returns:
        The :class:`~segdiff.sampling.files.GatherJob`.
    """
    from segdiff.core.labels import load_label_map
    from segdiff.sampling.files import GatherJob

    o, w = snakemake.output, snakemake.wildcards
    # multi-inference only: the reconstruction taken from it
    optional = {key: str(getattr(o, key)) if hasattr(o, key) else None
                for key in ("reconstruction", "reconstruction_grid")}
    return GatherJob(parts=_paths(snakemake.input.parts), labels=load_label_map(snakemake.params.labels),
                     out=str(o.samples), grid=str(o.grid), **optional,
                     title=f"{getattr(w, 'source', w.modality)} masks -> {w.modality} model ({w.view})")


def evaluation_job(snakemake: Any) -> EvaluationJob:
    """The evaluation of one run (rule ``evaluate``).

    Args:
        snakemake: the job's ``snakemake`` object: params ``label``, ``labels``, ``max_slices``, ``seed``,
            ``inception_weights``, ``poster_inception_weights``; input ``generation``, ``segmentor``,
            ``reference``, ``oracle``; output ``metrics`` (its folder takes the outputs); config
            ``compute.device``.

    Returns:
        The :class:`~segdiff.evaluation.run.EvaluationJob`.
    """
    from segdiff.core.labels import load_label_map
    from segdiff.evaluation.run import EvaluationJob

    p, i = snakemake.params, snakemake.input
    return EvaluationJob(label=p.label, generation=str(i.generation), segmentor=str(i.segmentor),
                         reference=_paths(i.reference), oracle=_paths(i.oracle), labels=load_label_map(p.labels),
                         device=_device(snakemake.config), max_slices=p.max_slices, seed=p.seed,
                         out_dir=str(Path(snakemake.output.metrics).parent), inception_weights=p.inception_weights,
                         poster_inception_weights=p.poster_inception_weights)


def oracle_job(snakemake: Any) -> OracleJob:
    """The oracle renders of one phantom test case in one contrast (rule ``oracle_case``).

    Args:
        snakemake: the job's ``snakemake`` object: params ``phantom``, ``seed``, ``k``, ``labels``,
            ``preprocess`` (that contrast's, with the case's modality's ``body`` while the envelope is on);
            input ``label`` (and ``image``, the case's own, while the envelope is on); output ``renders``;
            wildcards ``case``, ``contrast``.

    Returns:
        The :class:`~segdiff.data.oracle.OracleJob`.
    """
    from segdiff.core.labels import load_label_map
    from segdiff.data.body import BodySettings
    from segdiff.data.oracle import OracleJob

    p, w = snakemake.params, snakemake.wildcards
    pre = p.preprocess
    body = pre.get("body")
    image = getattr(snakemake.input, "image", None)
    return OracleJob(case=w.case, contrast=w.contrast, label_path=str(snakemake.input.label), phantom=p.phantom,
                     seed=p.seed, k=p.k, labels=load_label_map(p.labels), image_size=pre["image_size"],
                     min_foreground=pre["min_foreground"], ct_window=pre.get("ct_window"),
                     mri_percentiles=pre.get("mri_percentiles"), outputs=_paths(snakemake.output.renders),
                     body=BodySettings.from_params(body), case_image=None if image is None else str(image),
                     case_modality=body["modality"] if body else None)


def slice_case_job(snakemake: Any) -> SliceCaseJob:
    """One case sliced in every view (rule ``slice_case``).

    Args:
        snakemake: the job's ``snakemake`` object: params ``labels``, ``remap`` (empty: none),
            ``preprocess`` (that modality's; ``body`` while the envelope is on); input ``image``, ``label``
            (and ``body``, the case's body mask, in envelope mode sheet); output ``shards``,
            ``previews`` (one per view, ``results/slices/{modality}/{view}/...``); wildcards ``case``,
            ``modality``.

    Returns:
        The :class:`~segdiff.data.jobs.SliceCaseJob`.
    """
    from segdiff.core.labels import load_label_map, load_remap
    from segdiff.data.body import BodySettings
    from segdiff.data.jobs import SliceCaseJob

    p, o, w = snakemake.params, snakemake.output, snakemake.wildcards
    labels = load_label_map(p.labels)
    pre = p.preprocess
    views = [Path(shard).parent.name for shard in o.shards]
    body_mask = getattr(snakemake.input, "body", None)
    body_mask = None if body_mask is None else str(body_mask)
    return SliceCaseJob(case=w.case, modality=w.modality, image=str(snakemake.input.image),
                        label=str(snakemake.input.label), labels=labels,
                        remap=load_remap(p.remap, labels) if p.remap else None,
                        shards=dict(zip(views, _paths(o.shards))), previews=dict(zip(views, _paths(o.previews))),
                        image_size=pre["image_size"], min_foreground=pre["min_foreground"], ct_window=pre.get("ct_window"),
                        mri_percentiles=pre.get("mri_percentiles"), previews_per_case=pre["previews_per_case"],
                        body=BodySettings.from_params(pre.get("body")), body_mask=body_mask)


def evaluation_figures_job(snakemake: Any) -> EvaluationFiguresJob:
    """The evaluation's figures (rule ``evaluation_figures``).

    Args:
        snakemake: the job's ``snakemake`` object: params ``labels``; input ``metrics``, ``panel``,
            ``losses``; output ``panel``, ``dice``, ``metrics``, ``losses``.

    Returns:
        The :class:`~segdiff.evaluation.figures.EvaluationFiguresJob`.
    """
    from segdiff.core.labels import load_label_map
    from segdiff.evaluation.figures import EvaluationFiguresJob

    i, o = snakemake.input, snakemake.output
    return EvaluationFiguresJob(metrics=_paths(i.metrics), generations=_paths(i.panel), losses=_paths(i.losses),
                                labels=load_label_map(snakemake.params.labels), panel_figure=str(o.panel),
                                dice_figure=str(o.dice), metrics_figure=str(o.metrics), loss_figure=str(o.losses))


def _train_placement(config: Mapping[str, Any]) -> dict[str, Any]:
    """Device, batch readers and number of processes of a training job (``compute.*``)."""
    from segdiff.core.distributed import job_world_size
    from segdiff.data.loader import loader_settings

    compute = speed_settings(config, "compute")
    device = _device(config)
    return {"device": device, "loader": loader_settings(compute, device), "world_size": job_world_size(compute)}


def _train_settings(params_train: Mapping[str, Any], config: Mapping[str, Any], section: str, seed: int,
                    device: torch.device, *extra: str) -> tuple[Any, ...]:
    """``(TrainSettings, batch_size, *extra)`` from a training section's params and the config's speed keys."""
    from segdiff.core.device import use_bf16
    from segdiff.models.training import TrainSettings

    train = {**params_train, **speed_settings(config, f"{section}.train")}
    popped = [train.pop(key) for key in ("batch_size", *extra)]
    bf16 = use_bf16(speed_settings(config, "compute")["precision"], device)
    return TrainSettings(seed=seed, bf16=bf16, **train), *popped


def diffusion_train_job(snakemake: Any) -> DiffusionTrainJob:
    """One diffusion model (rule ``train_diffusion``).

    Args:
        snakemake: the job's ``snakemake`` object: params ``diffusion`` (conditioning, ``ablation_p``,
            model, scheduler, train), ``labels``, ``seed``, ``checkpoint`` (and ``body``: true while the masks
            carry the body envelope, whose id then is one more mask channel); input ``stores``; output
            ``model``, ``loss``, ``figure``; wildcards ``modality``, ``view``; config
            ``diffusion.train.checkpoint_every``, ``diffusion.train.compile`` and ``compute.*``.

    Returns:
        The :class:`~segdiff.models.jobs.DiffusionTrainJob`.
    """
    from segdiff.core.labels import load_label_map
    from segdiff.models.diffusion import DenoiserConfig, SchedulerConfig
    from segdiff.models.jobs import DiffusionTrainJob

    p, w, o, cfg = snakemake.params, snakemake.wildcards, snakemake.output, snakemake.params.diffusion
    labels = load_label_map(p.labels)
    placement = _train_placement(snakemake.config)
    train, batch_size = _train_settings(cfg["train"], snakemake.config, "diffusion", p.seed, placement["device"])
    body_id = labels.body_id if getattr(p, "body", False) else None
    return DiffusionTrainJob(
        modality=w.modality, view=w.view, stores=_paths(snakemake.input.stores), labels=labels,
        denoiser=DenoiserConfig(num_classes=(body_id or labels.max_id) + 1, conditioning=cfg["conditioning"], **cfg["model"]),
        scheduler=SchedulerConfig(**cfg["scheduler"]), train=train, batch_size=batch_size,
        ablation_p=cfg["ablation_p"], checkpoint=p.checkpoint, **placement, model=str(o.model), loss=str(o.loss),
        figure=str(o.figure), body_id=body_id)


def segmentor_train_job(snakemake: Any) -> SegmentorTrainJob:
    """The auxiliary segmentor of one modality (rule ``train_segmentor``).

    Args:
        snakemake: the job's ``snakemake`` object: params ``segmentor`` (splits, model, train with
            ``augment``), ``labels``, ``seed``, ``checkpoint`` and (usefulness segmentors) ``cases``, the
            cases kept of each store; input ``stores``; output ``model``,
            ``loss``; wildcard ``modality``; config ``segmentor.train.checkpoint_every``,
            ``segmentor.train.compile`` and ``compute.*``.

    Returns:
        The :class:`~segdiff.models.jobs.SegmentorTrainJob`.
    """
    from segdiff.core.labels import load_label_map
    from segdiff.models.jobs import SegmentorTrainJob
    from segdiff.models.segmentor import SegmentorConfig

    p, o, cfg = snakemake.params, snakemake.output, snakemake.params.segmentor
    labels = load_label_map(p.labels)
    placement = _train_placement(snakemake.config)
    train, batch_size, augmentation = _train_settings(cfg["train"], snakemake.config, "segmentor", p.seed,
                                                      placement["device"], "augment")
    return SegmentorTrainJob(
        modality=snakemake.wildcards.modality, stores=_paths(snakemake.input.stores), splits=cfg["splits"],
        cases=getattr(p, "cases", None),
        labels=labels, config=SegmentorConfig(num_classes=labels.max_id + 1, **cfg["model"]), train=train,
        batch_size=batch_size, augmentation=augmentation, checkpoint=p.checkpoint, **placement, model=str(o.model),
        loss=str(o.loss))


def trainset_job(snakemake: Any) -> TrainsetJob:
    """One part of a generated training set (rule ``sample_trainset``).

    Args:
        snakemake: the job's ``snakemake`` object: params ``sampling`` (sampler, steps, eta, spacing),
            ``splits``, ``seed``; input ``model``, ``store``; output ``store``; wildcard ``part``
            (``i-of-n``); config ``sampling.batch_size``, ``compute.*``.

    Returns:
        The :class:`~segdiff.usefulness.trainset.TrainsetJob`.
    """
    from segdiff.sampling.chunks import scatter_item
    from segdiff.usefulness.trainset import TrainsetJob

    p, config = snakemake.params, snakemake.config
    chunk, chunks = scatter_item(snakemake.wildcards.part)
    device = _device(config)
    sampling = {**p.sampling, **speed_settings(config, "sampling")}
    return TrainsetJob(model=str(snakemake.input.model), store=str(snakemake.input.store), splits=list(p.splits),
                       sampler=sampler_settings(sampling, speed_settings(config, "compute")["precision"], device),
                       seed=p.seed, device=device, out=str(snakemake.output.store), chunk=chunk - 1, chunks=chunks)


def oracle_trainset_job(snakemake: Any) -> OracleTrainsetJob:
    """Oracle renders of a modality's train + val cases as stores (rule ``oracle_trainset``).

    Args:
        snakemake: the job's ``snakemake`` object: params ``phantom``, ``seed``, ``labels``, ``splits``,
            ``preprocess`` (the modality's), ``label_files`` (case -> label volume); input ``stores``;
            output ``stores``; wildcard ``modality``.

    Returns:
        The :class:`~segdiff.usefulness.trainset.OracleTrainsetJob`.
    """
    from segdiff.core.labels import load_label_map
    from segdiff.usefulness.trainset import OracleTrainsetJob

    p = snakemake.params
    pre = p.preprocess  # its body is not read: the set keeps the store's masks, envelope included
    views = [Path(s).parent.name for s in snakemake.input.stores]
    return OracleTrainsetJob(modality=snakemake.wildcards.modality, cases=dict(p.label_files),
                             stores=dict(zip(views, _paths(snakemake.input.stores))), splits=list(p.splits),
                             phantom=p.phantom, seed=p.seed, labels=load_label_map(p.labels),
                             image_size=pre["image_size"], min_foreground=pre["min_foreground"],
                             ct_window=pre.get("ct_window"), mri_percentiles=pre.get("mri_percentiles"),
                             outputs=dict(zip(views, _paths(snakemake.output.stores))))


def score_job(snakemake: Any) -> ScoreJob:
    """One usefulness segmentor scored on the real test split (rule ``score_usefulness``).

    Args:
        snakemake: the job's ``snakemake`` object: params ``labels``; input ``segmentor``, ``stores``;
            output ``metrics``; wildcards ``modality``, ``trainset``; config ``compute.device``.

    Returns:
        The :class:`~segdiff.usefulness.score.ScoreJob`.
    """
    from segdiff.core.labels import load_label_map
    from segdiff.usefulness.score import ScoreJob

    w = snakemake.wildcards
    return ScoreJob(trainset=w.trainset, modality=w.modality, segmentor=str(snakemake.input.segmentor),
                    stores=_paths(snakemake.input.stores), labels=load_label_map(snakemake.params.labels),
                    device=_device(snakemake.config), out_dir=str(Path(snakemake.output.metrics).parent))
