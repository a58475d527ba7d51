"""The prepared GPU benchmarks run end to end on the CPU at a toy scale (the GPU machine is lent only
to some sessions: a script that first fails there wastes its time)."""

import json
import sys

import yaml
from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))


def test_amos_gpu_bench_trains_samples_and_runs_its_sampler_grid(tmp_path):
    import bench_amos_gpu

    config = yaml.safe_load((REPO / "config/amos.yaml").read_text())
    config["preprocess"].update(image_size=32, min_foreground=16)
    config["compute"].update(device="cpu", precision="fp32", loader_workers=0)
    config["diffusion"]["model"] = {"channels": [8, 16], "attention_levels": [False, False], "num_res_blocks": 1,
                                    "norm_num_groups": 8, "num_head_channels": 8, "use_flash_attention": False}
    config["diffusion"]["train"].update(compile=False, batch_size=4)
    config["sampling"].update(k=2, batch_size=8)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "amos_gpu.json"
    figures = bench_amos_gpu.main(["--config", str(path), "--steps", "3", "--cases", "3", "--sample-masks", "2",
                                   "--device", "cpu", "--grid", "ddim:3", "dpmpp_2m_sde:3", "dpmpp_2m:2", "--json", str(out)])
    assert json.loads(out.read_text()) == figures
    assert [(c["sampler"], c["nfe"]) for c in figures["grid"]] == [("ddim", 3), ("dpmpp_2m_sde", 3), ("dpmpp_2m", 2)]
    assert all(c["diversity_ratio"] > 0 and c["images_per_s"] > 0 for c in figures["grid"])
    assert figures["ema_decay"] == config["diffusion"]["train"]["ema_decay"]  # the warm-up ramp, not a shortened decay
    assert "throughput" not in figures  # CUDA only


def test_cost_table_adds_up_the_config_work(tmp_path):
    import bench_cost
    from segdiff.pipeline.config import validate_config

    config = validate_config(yaml.safe_load((REPO / "config/amos.yaml").read_text()), REPO / "config/schemas/config.schema.yaml")
    rates = {"train_img_s": 160.0, "sample_calls_s": 250.0, "frd_cpu_s_per_slice": 0.42, "segmentor_img_s": 1000.0}
    cost = bench_cost.study_cost(config, dict(rates), {"ct": 1000, "mri": 500})
    rows = {r["stage"]: r for r in cost["rows"]}
    steps, batch = config["diffusion"]["train"]["steps"], config["diffusion"]["train"]["batch_size"]
    assert rows["diffusion training"]["gpu_h"] == 4 * steps * batch / 160 / 3600
    assert rows["sampling"]["gpu_h"] == 5 * config["evaluation"]["max_slices"] * 4 * config["sampling"]["steps"] / 250 / 3600
    assert cost["gpu_h"] == sum(r["gpu_h"] for r in cost["rows"])
    fewer = bench_cost.study_cost(config, dict(rates), {"ct": 1000, "mri": 500}, nfe=10)
    assert {r["stage"]: r for r in fewer["rows"]}["sampling"]["gpu_h"] == rows["sampling"]["gpu_h"] / 5
    assert cost["disk"]["store_gb"] == 1500 * 256 * 256 * 5 / 1e9
    assert "| **total** |" in bench_cost.markdown(cost)
    # amos.yaml runs the usefulness experiment in `all`: one generation per train + val slice (80 % of them)
    assert rows["usefulness: generated training sets"]["gpu_h"] == 1500 * 0.8 * config["sampling"]["steps"] / 250 / 3600
    assert cost["disk"]["generated_gb"] == 1500 * 0.8 * 256 * 256 * 5 / 1e9
    off = bench_cost.study_cost({**config, "usefulness": {**config["usefulness"], "in_all": False}}, dict(rates),
                                {"ct": 1000, "mri": 500})
    assert not any(r["stage"].startswith("usefulness") for r in off["rows"])


def test_body_bench_compares_two_studies_run_by_run(tmp_path):
    """bench_body.py on two fake studies: metrics read from metrics.json, the outside-organ diversity recomputed
    from arrays.npz where the file lacks it (the body id 16 counts as outside), a missing run left blank."""
    import numpy as np

    import bench_body

    def run(study, name, metrics, arrays=None):
        folder = tmp_path / study / "results/evaluation" / name
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(metrics))
        if arrays is not None:
            np.savez(folder / "arrays.npz", **arrays)

    full = {"diversity_outside_gen": 0.05, "diversity_outside_oracle": 0.02, "diversity_gen": 0.012, "diversity_oracle": 0.01,
            "diversity_ratio": 1.2, "dice_ratio": 0.95, "frd": 3.0, "frd_oracle": 1.0}
    run("off", "ct_axial", full)
    run("off", "mri_axial", {**full, "frd": None})
    mask = np.zeros((2, 4, 4), np.uint8)
    mask[:, :2] = 6  # an organ in the top half,
    mask[:, 2:, :2] = 16  # the body envelope and background below
    generated = np.zeros((2, 2, 4, 4), np.float32)
    generated[:, 1, 2:] = 0.5  # the generations differ outside the organ only: std 0.25 there
    oracle = np.zeros((2, 2, 4, 4), np.float32)
    oracle[:, 1, 3:] = 0.2  # the oracle on half of that: std 0.1 on half of the outside pixels
    run("on", "ct_axial", {key: value for key, value in full.items() if "outside" not in key} | {"diversity_ratio": None},
        {"generated": generated, "oracle": oracle, "mask": mask})
    out = tmp_path / "table" / "body.md"
    result = bench_body.main([str(tmp_path / "off"), str(tmp_path / "on"), "--out", str(out)])
    on = result["on"]["ct_axial"]
    assert on["diversity_outside_gen"] == 0.25 and abs(on["diversity_outside_oracle"] - 0.05) < 1e-7
    assert abs(on["diversity_outside_ratio"] - 5.0) < 1e-5 and abs(on["diversity_ratio"] - 1.2) < 1e-12  # 0.012 / 0.01
    assert result["off"]["ct_axial"]["diversity_outside_ratio"] == 2.5 and result["off"]["mri_axial"]["frd"] is None
    text = out.read_text()
    assert "### ct_axial" in text and "### mri_axial" in text
    assert "| diversity outside organs, generated | 0.05 | 0.25 | 0.2 |" in text
    assert "| FRD, generated | — | — | — |" in text  # mri_axial: null off, no run on
