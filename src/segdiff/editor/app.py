"""The mask editor: a local web page to edit a mask and generate from it (``segdiff serve``).

:func:`create_app` serves, for a study's ``results/`` folder, a FastAPI app with the page
(``editor/static/``) and a JSON API:

``GET /api/config``
    label map (ids, names, colours), the diffusion models (``results/models/diffusion/*.pt``) with their
    image size, ``classes_seen`` and number of test slices, k and upload limits, the sampler.
``GET /api/models/{model}/test-masks/{index}``
    a test slice's mask from the study's slice store.
``POST /api/upload``
    a mask from a PNG, ``.npy`` or NIfTI label volume (+ ``slice``, ``view``), see :mod:`segdiff.editor.mask_io`.
``POST /api/generate`` -> 202 ``{"job"}``; ``GET /api/jobs/{job}``
    k generations of the mask with :func:`segdiff.sampling.samplers.generate` (seeds from ``seed``, reproducible),
    in a worker thread; the job reports its denoising steps for the page's progress bar.
``GET /api/jobs/{job}/generations.npy``, ``GET /api/jobs/{job}/generation_{j}.png``, ``POST /api/export/mask.{png,npy}``
    downloads.

Each model is loaded once (``weights_only``) on first use and kept. Bad input is a 4xx with a one-line
``detail``; an unexpected error is a 500 with its one-line message, never a traceback to the client.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from segdiff.core.errors import InputError, SegdiffError
from segdiff.core.labels import LabelMap
from segdiff.editor.mask_io import check_mask, decode_mask, encode_mask, image_png, images_npy, mask_npy, mask_png, read_upload
from segdiff.data.slicing import slice_views
from segdiff.report.tables import run_label

log = logging.getLogger(__name__)

__all__ = ["create_app", "EditorSettings"]

PAGE = resources.files("segdiff.editor") / "static"
STATIC = {"editor.js": "text/javascript", "editor.css": "text/css"}


@dataclass(frozen=True)
class EditorSettings:
    """Limits of the editor server."""

    k_max: int = 8
    max_upload_bytes: int = 32 << 20
    max_jobs: int = 32  # finished jobs kept for download; older ones are dropped

    def __post_init__(self):
        if self.k_max < 1 or self.max_upload_bytes < 1 or self.max_jobs < 1:
            raise ValueError(f"editor limits must be positive, got {self}")


@dataclass
class _Model:
    """A diffusion model file of the study, loaded on first use and kept."""

    id: str
    path: Path
    meta: dict
    image_size: int
    test_stores: list[Path]  # the study's slice stores of the model's views (their test split)
    loaded: tuple | None = None  # (model, scheduler config)
    _test: object | None = None

    def classes_seen(self, labels: LabelMap) -> list[int]:
        """Label ids of its training slices (every id of the map for a file that does not record them)."""
        return [int(c) for c in self.meta.get("classes_seen") or labels.ids]

    def test_set(self):
        from segdiff.data.store import SliceStore

        if self._test is None:
            self._test = SliceStore(self.test_stores, ["test"]) if self.test_stores else None
        return self._test


@dataclass
class _Job:
    total: int
    done: int = 0
    state: str = "running"
    error: str = ""
    result: dict | None = None
    images: np.ndarray | None = None
    created: float = field(default_factory=time.time)


class _Mask(BaseModel):
    height: int
    width: int
    data: str


class _GenerateRequest(BaseModel):
    model: str
    mask: _Mask
    k: int = Field(default=4)
    seed: int = Field(default=0)


class _ExportRequest(BaseModel):
    mask: _Mask


def _read_meta(path: Path) -> dict:
    """A model file's metadata (``weights_only`` loading; the network is built on first use only)."""
    from segdiff.core.checkpoints import MODEL_FORMAT, load_file

    return load_file(path, MODEL_FORMAT, "diffusion")["meta"]


def _discover(results: Path) -> dict[str, _Model]:
    """Every diffusion model of the study with its test slice stores; the image size from the stores."""
    from segdiff.data.store import SliceStore

    models: dict[str, _Model] = {}
    for path in sorted((results / "models" / "diffusion").glob("*.pt")):
        meta = _read_meta(path)
        modality, view = meta.get("modality"), meta.get("view")
        if not modality or not view:
            log.warning("%s: no modality/view in its metadata, skipped", path)
            continue
        stores = [results / "slices" / modality / v / "store" for v in slice_views(view)]
        stores = [s for s in stores if (s / "index.tsv").is_file()]
        if not stores:
            log.warning("%s: no slice store of its %s %s slices (image size, test masks), skipped", path, modality, view)
            continue
        size = SliceStore(stores[:1]).shape[0]
        models[path.stem] = _Model(path.stem, path, meta, size, stores)
    return models


def _sampler_settings(results: Path, device: torch.device):
    """The study's sampler (``results/provenance.json``: config.sampling), else the default study's, on ``device``."""
    from segdiff.pipeline.jobs import sampler_settings

    sampling = {"sampler": "ddim", "steps": 25, "eta": 1.0, "spacing": "lambda", "batch_size": 64, "k": 4}
    provenance = results / "provenance.json"
    if provenance.is_file():
        try:
            sampling.update(json.loads(provenance.read_text()).get("config", {}).get("sampling", {}))
        except (OSError, ValueError) as err:
            log.warning("%s: not readable (%s); default sampler", provenance, err)
    return sampler_settings(sampling, "auto", device), int(sampling["k"])


def _label_map(models: dict[str, _Model]) -> LabelMap:
    maps = {json.dumps(sorted((int(i), n) for i, n in m.meta.get("labels", {}).items())) for m in models.values()}
    if len(maps) > 1:
        raise InputError("results/models/diffusion", "the models use different label maps: serve one study at a time")
    first = next(iter(models.values()))
    return LabelMap({int(i): str(n) for i, n in first.meta["labels"].items()})


def _colours(labels: LabelMap) -> dict[int, str]:
    from segdiff.report.figures import label_colormap

    colours = label_colormap(labels).colors
    return {i: "#{:02x}{:02x}{:02x}".format(*(int(round(c * 255)) for c in colours[i][:3])) for i in labels.ids}


def create_app(results: str | Path = "results", device: str = "auto", settings: EditorSettings | None = None) -> FastAPI:
    """The editor app for a study.

    Args:
        results: the study's ``results/`` folder (its models, slice stores and provenance).
        device: where to generate: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ...
        settings: the server's limits (defaults of :class:`EditorSettings` when None).

    Returns:
        The FastAPI app.

    Raises:
        InputError: no diffusion model with a slice store in ``results``, or models with different label maps.
    """
    from segdiff.core.device import pick_device

    results = Path(results)
    settings = settings or EditorSettings()
    models = _discover(results)
    if not models:
        raise InputError(results / "models" / "diffusion", "no diffusion model (*.pt) with a slice store: run the study first")
    labels = _label_map(models)
    colours = _colours(labels)
    torch_device = pick_device(device)
    sampler, k_default = _sampler_settings(results, torch_device)
    jobs: OrderedDict[str, _Job] = OrderedDict()
    job_ids = itertools.count(1)
    load_lock = threading.Lock()
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segdiff-generate")

    app = FastAPI(title="segdiff mask editor", docs_url=None, redoc_url=None)
    app.state.received_masks = []  # every generate request's mask, as the server decoded it (for tests and logs)
    app.state.models = models

    def model_entry(model_id: str) -> _Model:
        if model_id not in models:
            raise HTTPException(404, f"unknown model {model_id!r} (known: {', '.join(models)})")
        return models[model_id]

    def loaded(entry: _Model) -> tuple:
        from segdiff.models.diffusion import load_diffusion

        with load_lock:
            if entry.loaded is None:
                model, scheduler, _ = load_diffusion(entry.path, torch_device)
                entry.loaded = (model, scheduler)
                log.info("loaded %s on %s", entry.path, torch_device)
        return entry.loaded

    def unseen_warning(entry: _Model, mask: np.ndarray) -> list[str]:
        seen = set(entry.classes_seen(labels))
        unseen = sorted(set(np.unique(mask).tolist()) - {0} - seen)
        if not unseen:
            return []
        names = ", ".join(f"{i} {labels.names.get(i, '?')}" for i in unseen)
        return [f"labels the model never saw in training: {names}; what it draws there is unconstrained"]

    @app.exception_handler(SegdiffError)
    async def bad_input(request: Request, err: SegdiffError):
        return JSONResponse({"detail": str(err)}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception):
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse({"detail": f"internal error: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"},
                            status_code=500)

    @app.get("/", include_in_schema=False)
    def page():
        return Response((PAGE / "index.html").read_bytes(), media_type="text/html")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        if name not in STATIC:  # a fixed list: no client path reaches the filesystem
            raise HTTPException(404, f"no static file {name!r}")
        return Response((PAGE / name).read_bytes(), media_type=STATIC[name])

    @app.get("/api/config")
    def config():
        return {
            "labels": [{"id": i, "name": labels.names[i], "color": colours[i]} for i in labels.ids],
            "models": [{"id": m.id, "label": run_label(m.meta["modality"], m.meta["view"]), "modality": m.meta["modality"],
                        "view": m.meta["view"], "image_size": m.image_size,
                        "classes_seen": m.classes_seen(labels),
                        "test_slices": len(m.test_set()) if m.test_set() is not None else 0} for m in models.values()],
            "k_default": min(k_default, settings.k_max), "k_max": settings.k_max,
            "max_upload_bytes": settings.max_upload_bytes,
            "sampler": f"{sampler.sampler}-{sampler.steps} eta {sampler.eta}",
        }

    @app.get("/api/models/{model_id}/test-masks/{index}")
    def test_mask(model_id: str, index: int):
        entry = model_entry(model_id)
        test = entry.test_set()
        if test is None or len(test) == 0:
            raise HTTPException(404, f"model {model_id!r} has no test slices in results/slices")
        if not 0 <= index < len(test):
            raise HTTPException(404, f"test slice {index} is out of range: 0..{len(test) - 1}")
        one = test.take(np.array([index]))
        mask = np.where(one.mask[0] > labels.max_id, 0, one.mask[0]).astype(np.uint8)  # organs only: no body envelope
        return {"mask": encode_mask(mask), "case": str(one.case[0]), "view": str(one.view[0]),
                "slice": int(one.slice[0]), "index": index}

    @app.post("/api/upload")
    async def upload(file: UploadFile = File(...), model: str = Form(...), slice: int | None = Form(None),
                     view: str = Form("axial")):
        entry = model_entry(model)
        data = await file.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise HTTPException(413, f"upload larger than {settings.max_upload_bytes >> 20} MiB")
        mask = read_upload(data, entry.image_size, labels, view=view, slice_index=slice, source="upload")
        return {"mask": encode_mask(mask), "warnings": unseen_warning(entry, mask)}

    def run_job(job: _Job, entry: _Model, mask: np.ndarray, k: int, seed: int) -> None:
        from segdiff.sampling.samplers import generate, sample_seed

        def progress(done: int, total: int) -> None:
            job.done, job.total = done, total

        try:
            model, scheduler = loaded(entry)
            seeds = [sample_seed(seed, "editor", 0, j) for j in range(k)]
            t0 = time.perf_counter()
            images = generate(model, scheduler, np.repeat(mask[None], k, axis=0), seeds, model.config.num_classes,
                              sampler, torch_device, desc=f"editor {entry.id}", progress=progress)
            seconds = time.perf_counter() - t0
            job.images = images
            job.result = {"seed": seed, "seeds": [str(s) for s in seeds], "seconds": round(seconds, 3), "k": k,
                          "warnings": unseen_warning(entry, mask),
                          "images": [base64.b64encode(image_png(i)).decode() for i in images]}
            job.state = "done"
            log.info("%s: %d generations of a %s mask in %.2f s (seed %d)", entry.id, k, mask.shape, seconds, seed)
        except Exception as err:  # reported to the page through the job, never raised into the server
            log.exception("generation failed")
            job.state, job.error = "error", f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"

    @app.post("/api/generate", status_code=202)
    def generate_request(request: _GenerateRequest):
        entry = model_entry(request.model)
        if not 1 <= request.k <= settings.k_max:
            raise HTTPException(422, f"k must be in 1..{settings.k_max}, got {request.k}")
        if not 0 <= request.seed < 2**31:
            raise HTTPException(422, f"seed must be in 0..{2**31 - 1}, got {request.seed}")
        mask = check_mask(decode_mask(request.mask.model_dump()), entry.image_size, labels)
        app.state.received_masks.append(mask)
        job_id = str(next(job_ids))
        job = jobs[job_id] = _Job(total=sampler.steps)
        while len(jobs) > settings.max_jobs:
            jobs.popitem(last=False)
        worker.submit(run_job, job, entry, mask, request.k, request.seed)
        return {"job": job_id}

    def job_entry(job_id: str) -> _Job:
        if job_id not in jobs:
            raise HTTPException(404, f"unknown job {job_id!r} (finished jobs are kept for the last {settings.max_jobs} requests)")
        return jobs[job_id]

    @app.get("/api/jobs/{job_id}")
    def job_status(job_id: str):
        job = job_entry(job_id)
        out = {"state": job.state, "done": job.done, "total": job.total}
        if job.state == "error":
            out["error"] = job.error
        if job.state == "done":
            out["result"] = job.result
        return out

    def finished(job_id: str) -> _Job:
        job = job_entry(job_id)
        if job.state != "done":
            raise HTTPException(409, f"job {job_id} is {job.state}")
        return job

    @app.get("/api/jobs/{job_id}/generations.npy")
    def generations_npy(job_id: str):
        return Response(images_npy(finished(job_id).images), media_type="application/octet-stream",
                        headers={"Content-Disposition": f'attachment; filename="generations_{job_id}.npy"'})

    @app.get("/api/jobs/{job_id}/generation_{j}.png")
    def generation_png(job_id: str, j: int):
        images = finished(job_id).images
        if not 0 <= j < len(images):
            raise HTTPException(404, f"generation {j} is out of range: 0..{len(images) - 1}")
        return Response(image_png(images[j]), media_type="image/png",
                        headers={"Content-Disposition": f'attachment; filename="generation_{job_id}_{j}.png"'})

    @app.post("/api/export/mask.png")
    def export_png(request: _ExportRequest):
        return Response(mask_png(decode_mask(request.mask.model_dump())), media_type="image/png",
                        headers={"Content-Disposition": 'attachment; filename="mask.png"'})

    @app.post("/api/export/mask.npy")
    def export_npy(request: _ExportRequest):
        return Response(mask_npy(decode_mask(request.mask.model_dump())), media_type="application/octet-stream",
                        headers={"Content-Disposition": 'attachment; filename="mask.npy"'})

    return app
