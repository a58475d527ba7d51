"""The comparison table: poster layout, n/a cells, formats."""

import json

import pandas as pd

from segdiff.tables import build_tables, run_label, write_tables


def metrics(label, psnr, fid):
    return {"label": label, "psnr": psnr, "ssim": 0.5 if psnr else None, "fid": fid, "dice_orig": 0.9, "dice_gen": 0.85,
            "fd_seg": 1.5, "diversity_inside": 0.01, "diversity_outside": 0.02, "n_slices": 12,
            "per_organ": {"liver": {"dice_orig": 0.95, "dice_gen": 0.9}}}


def test_run_labels_follow_the_poster():
    assert run_label("ct", "axial") == "CT axial"
    assert run_label("mri", "all") == "MRI"
    assert run_label("mri", "axial", "ct") == "CT→MRI axial"


def test_table_layout_and_formats(tmp_path):
    files = []
    for m in (metrics("CT axial", 19.06, None), metrics("CT→MRI axial", None, 75.04)):
        files.append(tmp_path / f"{len(files)}.json")
        files[-1].write_text(json.dumps(m))
    wide, long = build_tables(files)
    assert list(wide.columns) == ["CT axial", "CT→MRI axial"]
    assert list(wide.index[:5]) == ["PSNR ↑", "SSIM ↑", "FID ↓", "Dice_orig ↑", "Dice_gen ↑"]
    assert wide.loc["PSNR ↑", "CT axial"] == "19.06" and wide.loc["PSNR ↑", "CT→MRI axial"] == "n/a"
    assert wide.loc["FID ↓", "CT axial"] == "n/a" and wide.loc["FID ↓", "CT→MRI axial"] == "75.04"
    assert wide.loc["test slices", "CT axial"] == "12"
    assert long.query("run == 'CT axial' and metric == 'dice_gen:liver'")["value"].item() == 0.9
    out = {k: tmp_path / f"t.{k}" for k in ("csv", "md", "tex", "long")}
    write_tables(files, out["csv"], out["md"], out["tex"], out["long"], notes=["FID n/a: no weights"])
    assert pd.read_csv(out["csv"], index_col=0).shape == (9, 2)
    assert "FID n/a: no weights" in out["md"].read_text()
    assert r"$\uparrow$" in out["tex"].read_text() and r"CT$\to$MRI" in out["tex"].read_text()
