"""The comparison table: poster layout, n/a cells, formats."""

import json

import pandas as pd

from segdiff.report.tables import QUALITY_ROW, ROWS, build_tables, flag_name, quality_cell, run_label, table_notes, write_tables


def metrics(label, psnr, fid):
    # a distinct value per row, so a row that shows another key's number is caught
    values = {key: 0.001 * (i + 1) + 0.1 for i, (key, _, decimals) in enumerate(ROWS) if decimals is not None}
    return {**values, "quality_flags": [], "label": label, "psnr": psnr, "ssim": 0.5 if psnr else None, "fid": fid, "n_slices": 12, "k": 4,
            "oracle": True, "per_organ": {"liver": {"dice_orig": 0.95, "dice_gen": 0.9}}}


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
    assert list(wide.index[:5]) == ["PSNR ↑", "SSIM ↑", "FID ↓", "FRD ↓", "FD_seg ↓ (segmentor features; not FID)"]
    reference = metrics("x", 1.0, 1.0)
    for key, name, decimals in ROWS:
        if key not in ("psnr", "ssim", "fid", "n_slices", "k", "quality_flags"):
            assert wide.loc[name, "CT axial"] == f"{reference[key]:.{decimals}f}", name
    assert wide.loc["PSNR ↑", "CT axial"] == "19.06" and wide.loc["PSNR ↑", "CT→MRI axial"] == "n/a"
    assert wide.loc["FID ↓", "CT axial"] == "n/a" and wide.loc["FID ↓", "CT→MRI axial"] == "75.04"
    assert wide.loc["test slices", "CT axial"] == "12"
    assert (wide.loc[QUALITY_ROW] == "ok").all()
    assert long.query("run == 'CT axial' and metric == 'dice_gen:liver'")["value"].item() == 0.9
    out = {k: tmp_path / f"t.{k}" for k in ("csv", "md", "tex", "long")}
    write_tables(files, out["csv"], out["md"], out["tex"], out["long"], notes=["FID n/a: no weights"])
    assert pd.read_csv(out["csv"], index_col=0).shape == (len(ROWS), 2)
    assert "FID n/a: no weights" in out["md"].read_text()
    assert r"$\uparrow$" in out["tex"].read_text() and r"CT$\to$MRI" in out["tex"].read_text()


def test_notes_say_why_cells_are_missing_and_how_slices_were_chosen(tmp_path):
    runs = [{**metrics("CT axial", 19.0, None), "fid_note": "weights not found", "fid_poster_note": None, "oracle": False}]
    files = [tmp_path / "m.json"]
    files[0].write_text(json.dumps(runs[0]))
    notes = "\n".join(table_notes(files, max_slices=48))
    assert "FID n/a: weights not found" in notes and "Oracle rows n/a" in notes
    assert "at most 48 test slices per run" in notes and "stratified by case and view" in notes


def test_quality_flags_cell_names_the_failed_checks(tmp_path):
    flags = ["texture ratio 0.03 < 0.1: the generations lack the real slices' fine texture",
             "k-spread 0.00 < 0.1: the k generations of a mask are (nearly) identical",
             "Dice ratio 0.41 < 0.8: the generations do not follow their masks"]
    assert [flag_name(f) for f in flags] == ["texture ratio", "k-spread", "Dice ratio"]
    assert quality_cell(flags[1:]) == "⚠ k-spread, Dice ratio" and quality_cell([]) == "ok" and quality_cell(None) == "n/a"
    old = {**metrics("CT axial", 19.0, None)}
    del old["quality_flags"]  # a metrics file from before the quality gate
    flagged = {**metrics("CT→MRI axial", None, None), "quality_flags": flags[:1]}
    files = [tmp_path / "old.json", tmp_path / "flagged.json"]
    for f, m in zip(files, (old, flagged)):
        f.write_text(json.dumps(m))
    out = {k: tmp_path / f"t.{k}" for k in ("csv", "md", "tex", "long")}
    wide = write_tables(files, out["csv"], out["md"], out["tex"], out["long"], notes=table_notes(files))
    assert list(wide.loc[QUALITY_ROW]) == ["n/a", "⚠ texture ratio"]
    md = out["md"].read_text()
    assert "| Quality flags | n/a | ⚠ texture ratio |" in md and f"Quality flags, CT→MRI axial: {flags[0]}." in md
    assert r"$\triangle$ texture ratio" in out["tex"].read_text()
