"""Figures: each is written as a PNG of some size, with the panels and columns it promises."""

from __future__ import annotations

import matplotlib.figure
import numpy as np
import pandas as pd
import pytest

from segdiff.report.figures import (generation_grid_figure, generations_panel_figure, label_colormap, loss_panels_figure,
                             oracle_vs_generated_figure, show_overlay)
from segdiff.core.labels import LabelMap

LABELS = LabelMap({i: f"organ{i}" for i in range(1, 16)})


@pytest.fixture
def figures(monkeypatch):
    """The Figure objects saved while the test runs (savefig still writes the file)."""
    saved = []
    original = matplotlib.figure.Figure.savefig

    def record(self, *args, **kwargs):
        saved.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    return saved


def phantom_slices(n: int, k: int, size: int = 32, seed: int = 0):
    """``n`` masks with a few box organs (more foreground at higher index), images in [0, 1]."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        r = 3 + i % 10
        mask[i, 4 : 4 + r, 5 : 5 + r] = 6
        mask[i, size // 2 : size // 2 + r // 2, 4 : 20] = 1 + i % 15
    image = np.clip(mask / 15 + rng.normal(0, 0.05, mask.shape), 0, 1).astype(np.float32)
    generated = np.clip(image[:, None] + rng.normal(0, 0.1, (n, k, size, size)), 0, 1).astype(np.float32)
    return image, mask, generated


def image_axes(fig):
    return [ax for ax in fig.axes if ax.images]


def columns(axes) -> int:
    return len({round(ax.get_position().x0, 4) for ax in axes})


def test_generations_panel_shows_all_generations_with_aligned_titles(tmp_path, figures):
    image, mask, generated = phantom_slices(6, 4)
    panels = [("Reconstruction", {"original": image, "mask": mask, "generated": generated[:, :1]}),
              ("Multi-inference", {"original": image, "mask": mask, "generated": generated}),
              ("Multi-modal", {"original": image, "mask": mask, "generated": generated[:, :2]})]
    out = tmp_path / "generations.png"
    in_cell = generations_panel_figure(panels, LABELS, out, first_titles=["Original", "Original", "CT (source)"])
    assert out.stat().st_size > 20_000
    assert in_cell == ["", "", "CT (source)"]
    (fig,) = figures
    assert columns(fig.axes) == 2 + 4 and len(fig.axes) == 3 * 6
    rows = {}
    for ax in image_axes(fig):
        rows.setdefault(round(ax.get_position().y0, 4), []).append(ax)
    assert sorted(len(r) for r in rows.values()) == [2 + 1, 2 + 2, 2 + 4]  # extra cells stay blank
    titles = {t.get_text(): t.get_position()[1] for t in fig.texts}
    assert set(titles) == {"Original", "Segmentation", "Generation 1", "Generation 2", "Generation 3", "Generation 4"}
    assert len(set(titles.values())) == 1  # one baseline for every column title
    # the multi-modal row's first cell is the CT source, not an original: it says so, in its own cell
    (source_cell,) = [ax for ax in fig.axes if [t.get_text() for t in ax.texts] == ["CT (source)"]]
    assert source_cell.get_ylabel() == "Multi-modal"


def test_oracle_vs_generated_has_segmentation_renders_and_generations(tmp_path, figures):
    image, mask, generated = phantom_slices(20, 3)
    oracle = np.clip(generated[:, ::-1] * 0.9, 0, 1)
    out = tmp_path / "oracle.png"
    oracle_vs_generated_figure(oracle, generated, mask, LABELS, out, "CT axial: oracle vs generations", rows=3)
    assert out.stat().st_size > 20_000 and not list(tmp_path.glob(".*tmp*"))
    (fig,) = figures
    axes = image_axes(fig)
    assert columns(axes) == 1 + 2 * 3 and len(axes) == 3 * 7
    texts = [t.get_text() for t in fig.texts]
    assert "oracle renders (same anatomy, fresh noise/contrast)" in texts and "generations" in texts
    for ax in axes:  # gray images on a fixed [0, 1] scale
        assert ax.images[0].get_clim() == (0, 1)
    with pytest.raises(ValueError, match="do not match"):
        oracle_vs_generated_figure(oracle[:5], generated, mask, LABELS, out, "x")


def test_loss_panels_one_subplot_per_model_kind(tmp_path, figures):
    steps = np.arange(1, 201)
    csvs = {}
    for name, scale in (("ct_axial", 0.1), ("mri_axial", 0.2), ("seg_ct", 1.5)):
        csvs[name] = tmp_path / f"{name}_loss.csv"
        pd.DataFrame({"step": steps, "loss": scale * (1 + 5 / steps)}).to_csv(csvs[name], index=False)
    panels = {
        "diffusion models (MSE of the prediction target)": {"CT axial": csvs["ct_axial"], "MRI axial": csvs["mri_axial"]},
        "auxiliary segmentors (Dice + CE)": {"CT": csvs["seg_ct"]},
    }
    out = tmp_path / "loss_curves.png"
    loss_panels_figure(panels, out)
    assert out.stat().st_size > 20_000
    (fig,) = figures
    assert [ax.get_title() for ax in fig.axes] == list(panels)
    assert [[t.get_text() for t in ax.get_legend().get_texts()] for ax in fig.axes] == [["CT axial", "MRI axial"], ["CT"]]
    assert fig.axes[0].get_ylim() != fig.axes[1].get_ylim()  # each panel its own scale


def test_label_colormap_distinct_for_72_labels():
    cmap = label_colormap(LabelMap({i: f"l{i}" for i in range(1, 73)}))
    colours = np.asarray(cmap.colors)
    assert colours.shape == (73, 4) and colours[0, 3] == 0 and (colours[1:, 3] == 1).all()
    assert len({tuple(np.round(c, 3)) for c in colours[1:]}) == 72
    amos = np.asarray(label_colormap(LABELS).colors)
    assert np.allclose(amos[1:16], colours[1:16])  # the first ids keep their colours as the label count grows


def test_overlay_draws_the_organs_not_the_body_envelope():
    """A mask with the body envelope (``preprocess.body``: id 16 = the largest organ id + 1) draws its organs only."""
    ax = matplotlib.figure.Figure().subplots()
    show_overlay(ax, np.zeros((2, 3)), np.array([[0, 1, 16], [15, 16, 0]], np.uint8), LABELS)
    assert ax.get_images()[1].get_array().mask.tolist() == [[True, False, True], [False, True, True]]


def test_generation_grid_shows_the_source_slices_of_a_multimodal_run(tmp_path, figures):
    image, mask, generated = phantom_slices(8, 2)
    titles = generation_grid_figure(image, mask, generated, LABELS, tmp_path / "cross.png", "multimodal: t",
                                    original_title="CT (source)")
    blank = generation_grid_figure(None, mask, generated, LABELS, tmp_path / "blank.png", "multimodal: t")
    assert titles == ["CT (source)", "Segmentation", "Generation 1", "Generation 2"] and blank[0] == "Original"
    filled, empty = figures
    assert "CT (source)" in [t.get_text() for t in filled.texts]
    first = lambda fig: min(round(ax.get_position().x0, 4) for ax in fig.axes)
    assert len([ax for ax in image_axes(filled) if round(ax.get_position().x0, 4) == first(filled)]) == 6  # 6 rows
    assert not [ax for ax in image_axes(empty) if round(ax.get_position().x0, 4) == first(empty)]
    assert columns(image_axes(filled)) == 4 and columns(image_axes(empty)) == 3
