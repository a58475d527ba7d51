"""The mask editor's HTTP API (segdiff.editor.app) on a tiny study (tests/editor_fixture.py), good and bad input."""

from __future__ import annotations

import base64
import gzip
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import tracemalloc
import urllib.request

import nibabel as nib
import numpy as np
import pytest
from editor_fixture import IMAGE_SIZE, UNSEEN, build_results
from fastapi.testclient import TestClient
from PIL import Image

import segdiff.editor.mask_io as mask_io
from segdiff.core.checkpoints import MODEL_FORMAT, load_file, save_file
from segdiff.core.labels import load_label_map
from segdiff.editor.app import EditorSettings, create_app
from segdiff.editor.mask_io import encode_mask
from segdiff.data.store import SliceStore


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return build_results(tmp_path_factory.mktemp("editor"))


@pytest.fixture(scope="module")
def client(results):
    app = create_app(results, device="cpu")
    with TestClient(app) as c:
        c.app_state = app.state
        yield c


def first_test_mask(results) -> np.ndarray:
    return SliceStore([results / "slices/ct/axial/store"], ["test"]).take(np.array([0])).mask[0]


def png(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(buffer, format="PNG")
    return buffer.getvalue()


def npy(array: np.ndarray, **kwargs) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, **kwargs)
    return buffer.getvalue()


def decode(payload: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(payload["data"]), np.uint8).reshape(payload["height"], payload["width"])


def generate(client, mask: np.ndarray, k: int = 2, seed: int = 0) -> dict:
    response = client.post("/api/generate", json={"model": "ct_axial", "mask": encode_mask(mask), "k": k, "seed": seed})
    assert response.status_code == 202, response.text
    job = response.json()["job"]
    for _ in range(600):
        status = client.get(f"/api/jobs/{job}").json()
        if status["state"] != "running":
            break
        time.sleep(0.05)
    assert status["state"] == "done", status
    assert status["done"] == status["total"] == 3  # the study's DDIM-3: progress counts its steps
    return {"job": job, **status["result"]}


def test_config_names_models_labels_and_limits(client):
    config = client.get("/api/config").json()
    assert [m["id"] for m in config["models"]] == ["ct_axial"]
    model = config["models"][0]
    assert model["label"] == "CT axial" and model["image_size"] == IMAGE_SIZE and model["test_slices"] > 0
    assert UNSEEN not in model["classes_seen"] and set(model["classes_seen"]) <= set(range(16))  # 0: background
    assert [label["id"] for label in config["labels"]] == list(range(1, 16))
    assert config["labels"][0] == {"id": 1, "name": "spleen", "color": "#1f77b4"}  # tab20, as in the figures
    assert config["sampler"] == "ddim-3 eta 1.0" and config["k_default"] == 2 and config["k_max"] == 8


def test_page_and_static_files(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="mask-canvas"' in page.text
    assert client.get("/static/editor.js").status_code == 200
    for name in ("../editor.py", "%2e%2e%2fcli.py", "secret.txt"):
        assert client.get(f"/static/{name}").status_code == 404


def test_test_masks_come_from_the_store(client, results):
    response = client.get("/api/models/ct_axial/test-masks/0").json()
    np.testing.assert_array_equal(decode(response["mask"]), first_test_mask(results))
    assert response["view"] == "axial" and response["index"] == 0
    out_of_range = client.get("/api/models/ct_axial/test-masks/100000")
    assert out_of_range.status_code == 404 and "out of range" in out_of_range.json()["detail"]
    unknown = client.get("/api/models/mri_all/test-masks/0")
    assert unknown.status_code == 404 and "unknown model 'mri_all'" in unknown.json()["detail"]


def test_a_model_trained_with_the_body_envelope_serves_organ_masks_and_generates(tmp_path):
    """``preprocess.body``: the editor ignores the envelope (organs only) and the model with its extra mask channel
    generates from an organ mask."""
    results = build_results(tmp_path, body=True)
    body_id = load_label_map("amos15").body_id
    assert body_id in first_test_mask(results)
    with TestClient(create_app(results, device="cpu")) as c:
        mask = decode(c.get("/api/models/ct_axial/test-masks/0").json()["mask"])
        np.testing.assert_array_equal(mask, np.where(first_test_mask(results) == body_id, 0, first_test_mask(results)))
        assert generate(c, mask)["warnings"] == []


def test_generate_is_reproducible_and_downloadable(client, results):
    mask = first_test_mask(results)
    first = generate(client, mask, k=2, seed=5)
    np.testing.assert_array_equal(client.app_state.received_masks[-1], mask)  # what the server used
    assert first["seed"] == 5 and len(first["seeds"]) == 2 and first["warnings"] == []
    images = [np.asarray(Image.open(io.BytesIO(base64.b64decode(i)))) for i in first["images"]]
    assert all(i.shape == (IMAGE_SIZE, IMAGE_SIZE) and i.dtype == np.uint8 for i in images)
    arrays = np.load(io.BytesIO(client.get(f"/api/jobs/{first['job']}/generations.npy").content))
    assert arrays.shape == (2, IMAGE_SIZE, IMAGE_SIZE) and arrays.dtype == np.float32 and 0 <= arrays.min() <= arrays.max() <= 1
    assert not np.array_equal(arrays[0], arrays[1])  # k distinct samples
    np.testing.assert_array_equal(images[1], np.round(arrays[1] * 255).astype(np.uint8))
    single = client.get(f"/api/jobs/{first['job']}/generation_1.png")
    assert single.status_code == 200 and single.headers["content-type"] == "image/png"
    assert client.get(f"/api/jobs/{first['job']}/generation_2.png").status_code == 404
    loaded = client.app_state.models["ct_axial"].loaded
    again = generate(client, mask, k=2, seed=5)
    assert client.app_state.models["ct_axial"].loaded is loaded  # loaded once, kept, not re-read per request
    np.testing.assert_array_equal(np.load(io.BytesIO(client.get(f"/api/jobs/{again['job']}/generations.npy").content)), arrays)
    other = generate(client, mask, k=1, seed=6)
    assert other["images"][0] != first["images"][0]
    assert client.get("/api/jobs/999999").status_code == 404


def test_unseen_label_is_warned(client, results):
    mask = first_test_mask(results).copy()
    mask[:4, :4] = UNSEEN
    result = generate(client, mask, k=1)
    assert len(result["warnings"]) == 1 and f"{UNSEEN} prostate/uterus" in result["warnings"][0]


@pytest.mark.parametrize("change,status,message", [
    (lambda m: {"model": "ct_axial", "mask": encode_mask(m[:16, :16]), "k": 1}, 422, "this model takes 32 x 32"),
    (lambda m: {"model": "ct_axial", "mask": encode_mask(np.full_like(m, 99)), "k": 1}, 422, "label ids [99] are not in the label map"),
    (lambda m: {"model": "ct_axial", "mask": {**encode_mask(m), "data": "%%%"}, "k": 1}, 422, "data is not base64"),
    (lambda m: {"model": "ct_axial", "mask": {**encode_mask(m), "height": 31}, "k": 1}, 422, "expected height x width"),
    (lambda m: {"model": "ct_axial", "mask": encode_mask(m), "k": 0}, 422, "k must be in 1..8"),
    (lambda m: {"model": "ct_axial", "mask": encode_mask(m), "k": 9}, 422, "k must be in 1..8"),
    (lambda m: {"model": "ct_axial", "mask": encode_mask(m), "seed": -1}, 422, "seed must be in"),
    (lambda m: {"model": "nope", "mask": encode_mask(m)}, 404, "unknown model 'nope'"),
    (lambda m: {"model": "ct_axial"}, 422, "mask"),
])
def test_generate_refuses_bad_input(client, results, change, status, message):
    before = len(client.app_state.received_masks)
    response = client.post("/api/generate", json=change(first_test_mask(results)))
    assert response.status_code == status and message in str(response.json()["detail"]), response.text
    assert "Traceback" not in response.text and len(client.app_state.received_masks) == before


def upload(client, data: bytes, **form):
    return client.post("/api/upload", files={"file": ("../../etc/passwd", data)}, data={"model": "ct_axial", **form})


def test_uploads_of_each_format(client, results):
    mask = first_test_mask(results)
    for data in (png(mask), png(mask, "P"), npy(mask), npy(mask.astype(np.int64)), npy(mask.astype(np.float32)), npy(mask[None])):
        response = upload(client, data)
        assert response.status_code == 200, response.text
        np.testing.assert_array_equal(decode(response.json()["mask"]), mask)
    warned = mask.copy()
    warned[0, 0] = UNSEEN
    assert "never saw in training" in upload(client, png(warned)).json()["warnings"][0]


def test_nifti_upload_is_sliced_like_the_study(client, results):
    """The test case's own label volume, slice and view of test mask 0: the study's mask comes back."""
    test = SliceStore([results / "slices/ct/axial/store"], ["test"]).take(np.array([0]))
    label_file = results / "work/phantom" / next((results / "work/phantom").rglob(f"labelsT*/{test.case[0]}.nii.gz")).relative_to(results / "work/phantom")
    for data in (label_file.read_bytes(), gzip.decompress(label_file.read_bytes())):  # .nii.gz and .nii
        response = upload(client, data, slice=str(test.slice[0]), view="axial")
        assert response.status_code == 200, response.text
        got = decode(response.json()["mask"]).copy()
        got[got == UNSEEN] = 0  # the fixture's study mapped this label to background
        np.testing.assert_array_equal(got, test.mask[0])
    out_of_range = upload(client, label_file.read_bytes(), slice="999", view="axial")
    assert out_of_range.status_code == 422 and "slice 999 is out of range" in out_of_range.json()["detail"]
    no_slice = upload(client, label_file.read_bytes())
    assert no_slice.status_code == 422 and "needs a slice index" in no_slice.json()["detail"]
    bad_view = upload(client, label_file.read_bytes(), slice="1", view="oblique")
    assert bad_view.status_code == 422 and "view must be one of" in bad_view.json()["detail"]


def test_bad_uploads_are_4xx_with_a_message(client, results, tmp_path):
    mask = first_test_mask(results)
    image = nib.Nifti1Image(np.random.default_rng(0).random((8, 8, 4)).astype(np.float32), np.eye(4))
    nib.save(image, tmp_path / "scan.nii.gz")
    cases = [
        (png(np.stack([mask] * 3, -1)), "a colour PNG (mode RGB) is not a label map"),
        (png(np.zeros((16, 16), np.uint8)), "the mask is 16 x 16 pixels; this model takes 32 x 32"),
        (png(np.full_like(mask, 200)), "label ids [200] are not in the label map"),
        (npy(mask.astype(np.float32) + 0.5), "non-integer values"),
        (npy(np.array([{"a": 1}], dtype=object), allow_pickle=True), "not a readable .npy"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "not a readable PNG"),
        (b"hello world", "not a PNG, .npy or NIfTI"),
        (gzip.compress(b"\x5c\x01\x00\x00" + b"\0" * 100), "not a readable NIfTI"),
        ((tmp_path / "scan.nii.gz").read_bytes(), "non-integer values"),  # an image volume, not labels
    ]
    for data, message in cases:
        response = upload(client, data, slice="1", view="axial")
        assert response.status_code == 422 and message in response.json()["detail"], (message, response.text)
        assert "Traceback" not in response.text
    huge = TestClient(create_app(results, "cpu", EditorSettings(max_upload_bytes=1000)))
    response = huge.post("/api/upload", files={"file": ("m.npy", npy(mask))}, data={"model": "ct_axial"})
    assert response.status_code == 413 and "larger than" in response.json()["detail"]
    assert client.get("/api/config").status_code == 200  # the server is still up


def zero_volume_nii_gz(shape: tuple[int, int, int]) -> bytes:
    """A ``.nii.gz`` of a uint8 zero volume of ``shape``, about 1 KiB per MiB of voxels: a gzip bomb.

    Built from concatenated gzip members (one per MiB of zeros) so that the test never holds the volume.
    """
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.uint8)
    header.set_data_offset(352)
    voxels = int(np.prod(shape))
    mib = gzip.compress(bytes(1 << 20))
    return (gzip.compress(header.binaryblock + bytes(4)) + mib * (voxels >> 20)
            + gzip.compress(bytes(voxels & ((1 << 20) - 1))))


def test_a_nifti_gzip_bomb_is_refused_without_decompressing_it(client, monkeypatch):
    assert mask_io.MAX_NIFTI_BYTES <= 1 << 30
    monkeypatch.setattr(mask_io, "MAX_NIFTI_BYTES", 64 << 20)  # the same check at a size a test can afford
    bomb = zero_volume_nii_gz((512, 512, 257))  # 64.25 MiB of zeros
    assert len(bomb) < 1 << 20
    tracemalloc.start()
    try:
        response = upload(client, bomb, slice="1", view="axial")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail.startswith("upload: ") and "512 x 512 x 257" in detail and "more than the 64 MiB limit" in detail, detail
    assert peak < 16 << 20, f"{peak >> 20} MiB allocated while refusing a {len(bomb) >> 10} KiB upload"
    # a volume within the limit is read (the check is on the size, not on the format)
    small = upload(client, zero_volume_nii_gz((64, 64, 8)), slice="1", view="axial")
    assert small.status_code == 200 and not decode(small.json()["mask"]).any(), small.text
    corrupt = bytearray(zero_volume_nii_gz((64, 64, 8)))
    corrupt[12:14] = bytes([corrupt[12] ^ 0xFF, corrupt[13] ^ 0x55])  # a broken deflate stream
    response = upload(client, bytes(corrupt), slice="1", view="axial")
    assert response.status_code == 422 and "corrupt gzip data" in response.json()["detail"], response.text
    assert client.get("/api/config").status_code == 200  # the server is still up


def test_an_id_in_a_gap_of_the_label_map_is_refused(results, tmp_path):
    """TotalVibeSegmentator's map has no id 20: 20 lies below max_id but is no label, in every way a mask arrives."""
    labels = load_label_map("totalvibe")
    assert 20 not in labels.ids and {19, 21} <= set(labels.ids) and labels.max_id > 20
    study = tmp_path / "study"
    shutil.copytree(results, study)
    model_file = study / "models/diffusion/ct_axial.pt"
    payload = load_file(model_file, MODEL_FORMAT, "diffusion")
    payload["meta"]["labels"] = labels.names
    save_file(model_file, {k: v for k, v in payload.items() if k not in ("format", "kind")}, MODEL_FORMAT, "diffusion")
    app = create_app(study, device="cpu")
    with TestClient(app) as gap_client:
        assert [label["id"] for label in gap_client.get("/api/config").json()["labels"]] == labels.ids
        neighbours = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint8)
        neighbours[:4, :4], neighbours[4:8, :4] = 19, 21
        accepted = upload(gap_client, png(neighbours))
        assert accepted.status_code == 200, accepted.text  # the ids either side of the gap are labels
        gap = neighbours.copy()
        gap[8:12, :4] = 20
        volume = np.zeros((8, 8, 4), np.uint8)
        volume[2:6, 2:6, :] = 20
        nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "gap.nii.gz")
        for data, form in ((png(gap), {}), (npy(gap), {}), ((tmp_path / "gap.nii.gz").read_bytes(), {"slice": "1"})):
            response = upload(gap_client, data, **form)
            assert response.status_code == 422, response.text
            detail = response.json()["detail"]
            assert "label ids [20] are not in the label map" in detail and "known ids: 1..19, 21..72" in detail, detail
        response = gap_client.post("/api/generate", json={"model": "ct_axial", "mask": encode_mask(gap), "k": 1})
        assert response.status_code == 422 and "label ids [20]" in response.json()["detail"], response.text
        assert app.state.received_masks == []  # refused before any generation


def test_mask_exports_are_exact(client, results):
    mask = first_test_mask(results)
    as_png = client.post("/api/export/mask.png", json={"mask": encode_mask(mask)})
    assert as_png.status_code == 200 and as_png.headers["content-type"] == "image/png"
    decoded = Image.open(io.BytesIO(as_png.content))
    assert decoded.mode == "L"
    np.testing.assert_array_equal(np.asarray(decoded), mask)  # pixel values are the ids
    as_npy = np.load(io.BytesIO(client.post("/api/export/mask.npy", json={"mask": encode_mask(mask)}).content))
    assert as_npy.dtype == np.uint8
    np.testing.assert_array_equal(as_npy, mask)
    assert client.post("/api/export/mask.png", json={"mask": {"height": 2, "width": 2, "data": "AA=="}}).status_code == 422


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_segdiff_serve_command(results, tmp_path):
    missing = subprocess.run([sys.executable, "-m", "segdiff.cli", "serve", "--results", str(tmp_path / "none")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "no diffusion model (*.pt)" in missing.stderr and "Traceback" not in missing.stderr
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "segdiff.cli", "serve", "--results", str(results), "--port", str(port),
                               "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert server.stdout.readline().strip() == f"segdiff mask editor: http://127.0.0.1:{port}/  (Ctrl+C stops it)"
        for _ in range(200):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/config", timeout=2) as response:
                    assert response.status == 200
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError("segdiff serve did not answer")
    finally:
        server.terminate()
        server.wait(timeout=30)
