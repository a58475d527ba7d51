"""A tiny TotalVibeSegmentator stand-in in the released layout: a real nnU-Net v2 result folder with random weights.

``<root>/Dataset100_TotalVibeSegmentator/nnUNetTrainer__nnUNetPlans__3d_fullres/`` holds an nnU-Net v2
``plans.json`` (3d_fullres, a 3-stage PlainConvUNet of 4-16 features, 64^3 patches, 8 mm voxels),
a ``dataset.json`` with TotalVibeSegmentator's 73 outputs (background, ids 1..72 with 20 "unused") and
``fold_0/checkpoint_final.pth`` with the keys nnU-Net's trainer saves. The network is built by
nnU-Net's own ``get_network_from_plans`` and initialised as nnU-Net does (He init, seeded); only the
output bias of id 20 is set very low, since the released model never predicts that id.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

ARCH = {
    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "arch_kwargs": {
        "n_stages": 3,
        "features_per_stage": [4, 8, 16],
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3]] * 3,
        "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
        "n_conv_per_stage": [1, 1, 1],
        "n_conv_per_stage_decoder": [1, 1],
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    },
    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
}


def plans(spacing_mm: float) -> dict:
    resample = "resample_data_or_seg_to_shape"
    return {
        "dataset_name": "Dataset100_TotalVibeSegmentator",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [spacing_mm] * 3,
        "original_median_shape_after_transp": [40, 40, 40],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {
            "3d_fullres": {
                "data_identifier": "nnUNetPlans_3d_fullres",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 2,
                "patch_size": [64, 64, 64],
                "median_image_size_in_voxels": [40, 40, 40],
                "spacing": [spacing_mm] * 3,
                "normalization_schemes": ["ZScoreNormalization"],
                "use_mask_for_norm": [False],
                "resampling_fn_data": resample,
                "resampling_fn_seg": resample,
                "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
                "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
                "resampling_fn_probabilities": resample,
                "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
                "architecture": ARCH,
                "batch_dice": True,
            }
        },
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {"max": 1000.0, "mean": 100.0, "median": 90.0, "min": 0.0, "percentile_00_5": 1.0,
                  "percentile_99_5": 900.0, "std": 80.0}
        },
    }


def write_tiny_totalvibe_model(root: Path, names: dict[int, str], seed: int = 0, spacing_mm: float = 8.0) -> Path:
    """Write the model under ``root`` (what ``TOTALVIBE_WEIGHTS_PATH`` points at); returns the result folder.

    ``names``: foreground id -> name for ids 1..72 except 20 (the label map ``totalvibe``).
    """
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    folder = root / "Dataset100_TotalVibeSegmentator" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    (folder / "fold_0").mkdir(parents=True)
    labels = {"background": 0, **{names.get(i, "unused"): i for i in range(1, 73)}}
    dataset = {"channel_names": {"0": "MRI"}, "labels": labels, "numTraining": 1, "file_ending": ".nii.gz"}
    plan = plans(spacing_mm)
    torch.manual_seed(seed)
    network = get_network_from_plans(ARCH["network_class_name"], ARCH["arch_kwargs"], ARCH["_kw_requires_import"],
                                      1, len(labels), deep_supervision=True)
    weights = network.state_dict()
    last = max(k for k in weights if k.startswith("decoder.seg_layers.") and k.endswith(".bias"))
    weights[last][20] = -1e4  # like the released model, never id 20
    checkpoint = {
        "network_weights": weights,
        "optimizer_state": None,
        "grad_scaler_state": None,
        "logging": {},
        "_best_ema": None,
        "current_epoch": 1,
        "init_args": {"plans": plan, "configuration": "3d_fullres", "fold": 0, "dataset_json": dataset, "device": "cpu"},
        "trainer_name": "nnUNetTrainer",
        "inference_allowed_mirroring_axes": (0, 1, 2),
    }
    torch.save(checkpoint, folder / "fold_0" / "checkpoint_final.pth")
    (folder / "plans.json").write_text(json.dumps(plan, indent=2))
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    return folder
