"""The run planning of the workflow: the runs a config asks for, the files of the study and each job's requests.

``workflow/rules/common.smk`` builds one :class:`StudyPlan` from the validated config and the case
table; the rules take their targets, their inputs of whole runs, their ``threads`` and their
``resources`` from it. Nothing here imports Snakemake, so the plan is unit tested on its own
(``tests/pipeline/test_plan.py``) and a config's mistakes are caught before any job runs.

Runs are named as the files and the table name them: ``{modality}_{view}`` for a diffusion model's
runs (reconstruction and multi-inference), ``{source}2{target}_{view}`` for a multi-modal one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from segdiff.core.errors import ConfigError
from segdiff.data.slicing import slice_views
from segdiff.pipeline.config import parse_run
from segdiff.pipeline.job_memory import (
    GATHER_MEM_MB,
    cpu_activations_mb,
    evaluate_mem_mb,
    sample_mem_mb,
    slices_bound,
    train_mem_mb,
)
from segdiff.report.tables import run_label
from segdiff.sampling.chunks import largest_chunk, scatter_item
from segdiff.usefulness.sets import TRAINSET_GROUP_BATCHES, few_real_cases, uses_generated, uses_real

__all__ = ["StudyPlan", "MODALITIES_BEFORE_DOWNLOAD", "TEST_CASES_BEFORE_DOWNLOAD"]

#: modalities of a study whose case table is not known yet: AMOS22 holds both (ids < 500 are CT, the rest MRI)
MODALITIES_BEFORE_DOWNLOAD = ("ct", "mri")
#: test cases of a modality before the AMOS22 download: its 500 CT cases stand for either modality (a bound)
TEST_CASES_BEFORE_DOWNLOAD = 500


class StudyPlan:
    """The runs, files and resource requests of one study.

    Attributes:
        config: the validated workflow config (defaults filled in).
        cases: the case table (columns ``case``, ``modality``, ``split``, ...); None while AMOS22 is
            not downloaded yet. The workflow sets it once the download has run.
        modalities: modalities of the dataset (both before the AMOS22 download).
        views: the slice views of the study (``views``).
        model_runs: ``(modality, view)`` of every diffusion model (``diffusion.runs``), in config order.
        multimodal_runs: ``(source, target, view)`` of every multi-modal run (``sampling.multimodal``).
        evaluation_runs: run id -> ``(source modality or None, target modality, view)``, in the
            poster's order (model runs first).
        run_labels: run id -> the table's column name (``CT axial``, ``CT``, ``CT→MRI axial``).
        oracle: whether oracle renders exist (the phantom with its own labels only).
        oracle_figure_runs: modality -> the run (its first model) shown in its oracle figure; empty
            without oracle.
        usefulness_sets: the usefulness experiment's training sets (``real`` first; ``oracle`` only with
            oracle renders).
        usefulness_modalities: modalities with a usefulness experiment: a segmentor, and a diffusion model
            for every slice view (the view's own, else the modality's all-views model).
        train_processes: processes of a training job: one per GPU, data-parallel, when
            ``compute.gpus`` > 1 (as ``segdiff.core.distributed.job_world_size`` decides inside the
            job; the planning node may have no GPU).
        job_gpus: GPUs of a job that runs on one device (sampling, evaluation, masks): more GPUs
            mean more chunk jobs side by side.
        train_threads: CPUs of a training job: ``compute.train_threads`` for each of its processes.
        cpu_channels: network (``diffusion``, ``segmentor``) -> the width of its first level when it
            runs on the CPU (its activations are host memory); 0 on a GPU.
    """

    def __init__(self, config: Mapping[str, Any], cases: pd.DataFrame | None) -> None:
        """Plan the study; a run the data or the views cannot serve stops it before any job.

        Args:
            config: the validated workflow config.
            cases: the case table, or None before the AMOS22 download.

        Raises:
            ConfigError: a run names a modality without cases or a view not in ``views``, a
                multi-modal run lacks its model, or a training batch does not split over the GPUs.
        """
        self.config = config
        self.cases = cases
        self.modalities = sorted(cases["modality"].unique()) if cases is not None else list(MODALITIES_BEFORE_DOWNLOAD)
        self.views = list(config["views"])
        self.model_runs = self._model_runs()
        self.multimodal_runs = self._multimodal_runs()
        self.evaluation_runs: dict[str, tuple[str | None, str, str]] = {f"{m}_{v}": (None, m, v) for m, v in self.model_runs}
        self.evaluation_runs.update({f"{s}2{t}_{v}": (s, t, v) for s, t, v in self.multimodal_runs})
        self.run_labels = {run: run_label(m, v, s) for run, (s, m, v) in self.evaluation_runs.items()}
        dataset = config["dataset"]
        self.oracle = dataset["source"] == "phantom" and dataset["mask_source"] != "totalvibe"
        self.oracle_figure_runs = {m: f"{m}_{v}" for m, v in reversed(self.model_runs)} if self.oracle else {}
        useful = config["usefulness"]
        self.usefulness_sets = ["real", *[s for s in useful["sets"] if s != "oracle" or self.oracle]]
        self.usefulness_modalities = [m for m in self.segmentor_modalities()
                                      if all(self._generator(m, v) for v in self.views)]
        if useful["in_all"] and self.usefulness_modalities != self.segmentor_modalities():
            missing = sorted(set(self.segmentor_modalities()) - set(self.usefulness_modalities))
            raise ConfigError("usefulness.in_all", f"{missing}: the generated training set needs a diffusion model of "
                              "every view in 'views' (or of view all) in diffusion.runs")

        compute = config["compute"]
        self.train_processes = compute["gpus"] if compute["gpus"] > 1 and compute["device"] != "cpu" else 1
        self.job_gpus = min(compute["gpus"], 1)
        self.train_threads = compute["train_threads"] * self.train_processes
        on_cpu = compute["gpus"] == 0 and compute["device"] != "cuda"
        self.cpu_channels = {net: config[net]["model"]["channels"][0] if on_cpu else 0 for net in ("diffusion", "segmentor")}
        for net in ("diffusion", "segmentor"):
            batch = config[net]["train"]["batch_size"]
            if batch % self.train_processes:
                raise ConfigError(f"{net}.train.batch_size", f"{batch} is the global batch of {self.train_processes} "
                                  f"data-parallel processes (compute.gpus): make it a multiple of {self.train_processes}")

    def _model_runs(self) -> list[tuple[str, str]]:
        """``diffusion.runs`` as (modality, view), each checked against the modalities and the views."""
        runs = [parse_run(spec)[1:] for spec in self.config["diffusion"]["runs"]]
        for i, (modality, view) in enumerate(runs):
            if modality not in self.modalities:
                raise ConfigError(f"diffusion.runs.{i}", f"no {modality} case in the dataset")
            missing = sorted(set(slice_views(view)) - set(self.views))
            if missing:
                raise ConfigError(f"diffusion.runs.{i}", f"view {view} needs {missing} in 'views'")
        return runs

    def _multimodal_runs(self) -> list[tuple[str, str, str]]:
        """``sampling.multimodal`` as (source, target, view), each checked against the models and the modalities."""
        runs = []
        for i, spec in enumerate(self.config["sampling"]["multimodal"]):
            source, target, view = parse_run(spec)
            if (target, view) not in self.model_runs:
                raise ConfigError(f"sampling.multimodal.{i}", f"needs the model {target}/{view} in diffusion.runs")
            if source not in self.modalities:
                raise ConfigError(f"sampling.multimodal.{i}", f"no {source} case in the dataset")
            runs.append((source, target, view))
        return runs

    def _generator(self, modality: str, view: str) -> str | None:
        """The diffusion model that draws the generated training slices of a slice view: the view's own,
        else the modality's all-views model (None: neither is in ``diffusion.runs``)."""
        for run in ((modality, view), (modality, "all")):
            if run in self.model_runs:
                return "results/models/diffusion/{}_{}.pt".format(*run)
        return None

    # ---- files

    def manifests(self) -> list[str]:
        """Manifests of every modality x slice view (modality-major).

        Returns:
            Paths ``results/slices/{modality}/{view}/manifest.tsv``.
        """
        return [f"results/slices/{m}/{v}/manifest.tsv" for m in self.modalities for v in self.views]

    @staticmethod
    def stores(modality: str, view: str) -> list[str]:
        """Slice stores of the slice views behind a model view (``all``: the three).

        Args:
            modality: the modality of the slices.
            view: a model view (``axial``, ``coronal``, ``sagittal`` or ``all``).

        Returns:
            Paths ``results/slices/{modality}/{view}/store``.
        """
        return [f"results/slices/{modality}/{v}/store" for v in slice_views(view)]

    def segmentor_modalities(self) -> list[str]:
        """Modalities with an auxiliary segmentor: those of the model runs, sorted.

        Returns:
            Modality names.
        """
        return sorted({m for m, _ in self.model_runs})

    def oracle_files(self, source: str, modality: str, view: str) -> list[str]:
        """Oracle renders in ``modality``'s contrast of the test anatomy of ``source`` (phantom only).

        Args:
            source: the modality whose test masks were sampled.
            modality: the contrast rendered (the run's target modality).
            view: the run's model view.

        Returns:
            Paths ``results/oracle/{contrast}/{view}/{case}.npz`` (view-major); none without oracle.
        """
        if not self.oracle:
            return []
        cases = self.cases[self.cases["modality"] == source]
        test = cases[cases["split"] == "test"]["case"]
        return [f"results/oracle/{modality}/{v}/{case}.npz" for v in slice_views(view) for case in test]

    def evaluation_inputs(self, run: str) -> dict[str, Any]:
        """Inputs of one evaluation job: generations, segmentor, real test slices of the target
        modality and the oracle renders.

        Args:
            run: an evaluation run id (a key of :attr:`evaluation_runs`).

        Returns:
            Named inputs ``segmentor``, ``reference``, ``generation``, ``oracle``.
        """
        source, modality, view = self.evaluation_runs[run]
        return {
            "segmentor": f"results/models/segmentor/{modality}.pt",
            "reference": self.stores(modality, view),
            "generation": f"results/samples/{run}/{'multimodal' if source else 'multi_inference'}.npz",
            "oracle": self.oracle_files(source or modality, modality, view),
        }

    def generations_panel_inputs(self) -> list[str]:
        """Reconstruction and multi-inference of the first model run, and the first multi-modal run.

        Returns:
            Sample files of the generations figure; none without a model run.
        """
        if not self.model_runs:
            return []
        run = "{}_{}".format(*self.model_runs[0])
        files = [f"results/samples/{run}/reconstruction.npz", f"results/samples/{run}/multi_inference.npz"]
        return files + [f"results/samples/{s}2{t}_{v}/multimodal.npz" for s, t, v in self.multimodal_runs[:1]]

    def checkpoint_pairs(self) -> list[tuple[str, str]]:
        """(training checkpoint, model file) of every model of the study.

        Returns:
            Diffusion models first, then the segmentors.
        """
        pairs = [(f"checkpoints/diffusion/{m}_{v}.ckpt", f"results/models/diffusion/{m}_{v}.pt") for m, v in self.model_runs]
        pairs += [(f"checkpoints/segmentor/{m}.ckpt", f"results/models/segmentor/{m}.pt") for m in self.segmentor_modalities()]
        return pairs + [(f"checkpoints/usefulness/{m}_{s}.ckpt", self.usefulness_segmentor(m, s))
                        for m in self.usefulness_modalities for s in self.usefulness_sets if s != "real"]

    def loss_logs(self) -> list[str]:
        """Loss logs of every model (diffusion first).

        Returns:
            Paths of the ``_loss.csv`` files.
        """
        return [f"results/models/diffusion/{m}_{v}_loss.csv" for m, v in self.model_runs] + [
            f"results/models/segmentor/{m}_loss.csv" for m in self.segmentor_modalities()]

    def metrics_files(self) -> list[str]:
        """Metrics of every evaluation run, in the poster's order.

        Returns:
            Paths ``results/evaluation/{run}/metrics.json``.
        """
        return [f"results/evaluation/{run}/metrics.json" for run in self.run_labels]

    def diffusion_outputs(self) -> list[str]:
        """Models, loss figures and samples of every diffusion run.

        Returns:
            Paths, run by run, the multi-modal samples last.
        """
        out = []
        for modality, view in self.model_runs:
            run = f"{modality}_{view}"
            out += [f"results/models/diffusion/{run}.pt", f"results/figures/loss/diffusion_{run}.png",
                    f"results/samples/{run}/reconstruction.npz", f"results/samples/{run}/multi_inference.npz"]
        return out + [f"results/samples/{s}2{t}_{v}/multimodal.npz" for s, t, v in self.multimodal_runs]

    def evaluation_outputs(self) -> list[str]:
        """The table, the figures and the metrics of every run; none without a model run.

        Returns:
            Paths.
        """
        if not self.model_runs:
            return []
        return ["results/table.csv", "results/figures/generations.png", *self.metrics_files(),
                *[f"results/figures/oracle_vs_generated_{m}.png" for m in sorted(self.oracle_figure_runs)]]

    def all_outputs(self) -> list[str]:
        """The targets of ``rule all``: the whole study (the usefulness experiment with ``usefulness.in_all``).

        Returns:
            Paths.
        """
        useful = self.usefulness_outputs() if self.config["usefulness"]["in_all"] else []
        return ["results/data/cases.tsv", *self.manifests(), "results/figures/slices_preview.png",
                *self.diffusion_outputs(), *self.evaluation_outputs(), *useful, "results/provenance.json"]

    # ---- the usefulness experiment (train on generated, test on real)

    def generator_model(self, modality: str, view: str) -> str:
        """The diffusion model file that draws the generated training slices of a slice view.

        Args:
            modality: the modality.
            view: a slice view.

        Returns:
            ``results/models/diffusion/{modality}_{view or all}.pt``.

        Raises:
            ConfigError: no model of that view nor of view ``all`` in ``diffusion.runs``.
        """
        model = self._generator(modality, view)
        if model is None:
            raise ConfigError("diffusion.runs", f"the usefulness experiment needs a {modality} model of view {view} or all")
        return model

    def trainset_parts(self) -> list[str]:
        """The chunk jobs of a generated training set of one view (``sampling.chunks``): ``i-of-n``."""
        n = self.config["sampling"]["chunks"]
        return [f"{i}-of-{n}" for i in range(1, n + 1)]

    def usefulness_stores(self, modality: str, trainset: str) -> list[str]:
        """The store folders a usefulness segmentor learns from (its ``splits`` of each).

        Args:
            modality: the modality.
            trainset: a training set of :attr:`usefulness_sets`.

        Returns:
            Real stores of every view, then the generated parts (view-major), or the oracle stores.
        """
        if trainset == "oracle":
            return [f"results/usefulness/{modality}/oracle/{v}" for v in self.views]
        real = [f"results/slices/{modality}/{v}/store" for v in self.views] if uses_real(trainset) else []
        generated = [f"results/usefulness/{modality}/generated/{v}/{part}" for v in self.views
                     for part in self.trainset_parts()] if uses_generated(trainset) else []
        return real + generated

    def few_real(self, modality: str) -> list[str]:
        """The real cases of ``few_real_generated`` (:func:`~segdiff.usefulness.sets.few_real_cases`).

        Args:
            modality: the modality.

        Returns:
            Case ids among the modality's cases of ``segmentor.splits``.
        """
        cases = self.cases[(self.cases["modality"] == modality) & self.cases["split"].isin(self.config["segmentor"]["splits"])]
        return few_real_cases(cases["case"], self.config["usefulness"]["few_real_fraction"], self.config["seed"])

    def usefulness_cases(self, modality: str, trainset: str) -> list[list[str] | None] | None:
        """Per store of :meth:`usefulness_stores`, the cases kept (None: all): the few real cases in the real
        stores of ``few_real`` and ``few_real_generated``; None for the other sets.

        Args:
            modality: the modality.
            trainset: a training set.
        """
        if trainset not in ("few_real", "few_real_generated"):
            return None
        few = self.few_real(modality)
        return [few if store.startswith("results/slices/") else None for store in self.usefulness_stores(modality, trainset)]

    @staticmethod
    def usefulness_segmentor(modality: str, trainset: str) -> str:
        """The segmentor of a training set: the study's own for ``real``."""
        if trainset == "real":
            return f"results/models/segmentor/{modality}.pt"
        return f"results/usefulness/{modality}/segmentor_{trainset}.pt"

    def usefulness_metrics_files(self) -> list[str]:
        """``results/usefulness/{modality}/{trainset}/metrics.json`` of every modality x training set."""
        return [f"results/usefulness/{m}/{s}/metrics.json" for m in self.usefulness_modalities for s in self.usefulness_sets]

    def usefulness_outputs(self) -> list[str]:
        """The target ``usefulness``: its table, its figure and the runs' metrics; none without a modality."""
        if not self.usefulness_modalities:
            return []
        return ["results/usefulness/table.csv", "results/figures/usefulness_dice_per_organ.png",
                *self.usefulness_metrics_files()]

    def usefulness_notes(self) -> list[str]:
        """The usefulness table's footnotes: where each training set comes from."""
        useful, sampling = self.config["usefulness"], self.config["sampling"]
        notes = ["Dice: pooled over every real test slice of every view, per organ, then the mean over the organs present; "
                 "'/ real' is the ratio to the study's own segmentor (trained on real train + val slices). Every "
                 "segmentor has the study's network, recipe, steps and seed."]
        for m in self.usefulness_modalities:
            models = ", ".join(f"{v}: {self.generator_model(m, v).rsplit('/', 1)[1]}" for v in self.views)
            notes.append(f"{m.upper()} generated set: one generation per {'+'.join(self.config['segmentor']['splits'])} "
                         f"mask ({sampling['sampler']}, {sampling['steps']} steps), drawn by {models}.")
            if {"few_real", "few_real_generated"} & set(self.usefulness_sets) and self.cases is not None:
                few = self.few_real(m)
                notes.append(f"{m.upper()} few real: {len(few)} real case(s) (usefulness.few_real_fraction "
                             f"{useful['few_real_fraction']}): {', '.join(few)}.")
        if "oracle" in useful["sets"] and "oracle" not in self.usefulness_sets:
            notes.append("Oracle renders exist only for the embedded phantom: no oracle row.")
        elif "oracle" in self.usefulness_sets:
            notes.append("Oracle renders: one fresh render of each train + val case's anatomy (phantom), the real "
                         "masks kept: what a perfect generator would give, the ceiling of 'generated only'.")
        return notes

    def trainset_mem(self) -> int:
        """``mem_mb`` of a generated-training-set job: one group of masks in flight
        (``TRAINSET_GROUP_BATCHES x sampling.batch_size``).

        Returns:
            Megabytes.
        """
        batch, size = self.config["sampling"]["batch_size"], self.config["preprocess"]["image_size"]
        return sample_mem_mb(self.config["compute"]["sample_mem_mb"], TRAINSET_GROUP_BATCHES * batch, 1, size) \
            + cpu_activations_mb(batch, size, self.cpu_channels["diffusion"], training=False)

    # ---- resource requests

    def test_slices(self, modality: str, view: str) -> int:
        """Test slices a sampling or evaluation job of this modality x view holds (a bound).

        Args:
            modality: the modality of the test masks.
            view: the run's model view.

        Returns:
            ``evaluation.max_slices``, or a bound of the whole test set when it is 0.
        """
        if self.cases is None:
            test_cases = TEST_CASES_BEFORE_DOWNLOAD
        else:
            test_cases = int(((self.cases["modality"] == modality) & (self.cases["split"] == "test")).sum())
        return slices_bound(self.config["evaluation"]["max_slices"], test_cases, len(slice_views(view)))

    def train_mem(self, net: str) -> int:
        """``mem_mb`` of a training job: each process holds its share of the global batch, its loader
        workers and (on the CPU) its activations.

        Args:
            net: ``diffusion`` or ``segmentor``.

        Returns:
            Megabytes.
        """
        compute, size = self.config["compute"], self.config["preprocess"]["image_size"]
        local = self.config[net]["train"]["batch_size"] // self.train_processes
        return self.train_processes * (
            train_mem_mb(compute["train_mem_mb"], local, size, compute["loader_workers"], compute["prefetch"])
            + cpu_activations_mb(local, size, self.cpu_channels[net], training=True))

    def sample_mem(self, modality: str, view: str, scatteritem: str) -> int:
        """``mem_mb`` of a sampling job: its chunk of the test subset, k generations each.

        Args:
            modality: the modality of the test masks (a multi-modal run's source).
            view: the run's model view.
            scatteritem: Snakemake's scatter item ``i-of-n``.

        Returns:
            Megabytes.
        """
        sampling, size = self.config["sampling"], self.config["preprocess"]["image_size"]
        k, batch = sampling["k"], sampling["batch_size"]
        n = largest_chunk(self.test_slices(modality, view), scatter_item(scatteritem)[1], k, batch)
        return sample_mem_mb(self.config["compute"]["sample_mem_mb"], n, k, size) \
            + cpu_activations_mb(min(batch, n * k), size, self.cpu_channels["diffusion"], training=False)

    def gather_mem(self, modality: str, view: str) -> int:
        """``mem_mb`` of a gather job: the merged generations of the run (and one part while it copies it in).

        Args:
            modality: the modality of the test masks (a multi-modal run's source).
            view: the run's model view.

        Returns:
            Megabytes.
        """
        k, size = self.config["sampling"]["k"], self.config["preprocess"]["image_size"]
        return sample_mem_mb(GATHER_MEM_MB, self.test_slices(modality, view), k, size)

    def evaluate_mem(self, run: str) -> int:
        """``mem_mb`` of an evaluation job: generations, oracle renders, references and predictions.

        Args:
            run: an evaluation run id.

        Returns:
            Megabytes.
        """
        source, modality, view = self.evaluation_runs[run]
        k, size = self.config["sampling"]["k"], self.config["preprocess"]["image_size"]
        return evaluate_mem_mb(self.config["compute"]["sample_mem_mb"], self.test_slices(source or modality, view), k, size)
