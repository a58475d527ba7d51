"""Scoring generations: metric formulas, feature networks (``features``), the poster authors' protocol,
the oracle-free quality gate, a run's evaluation job and the evaluation figures."""

from segdiff._api import lazy_api

__getattr__, __dir__, __all__ = lazy_api(
    __name__,
    {
        "figures": ["PANEL_ROWS", "LOSS_PANELS", "EvaluationFiguresJob", "loss_panels", "evaluation_figures"],
        "metrics": [
            "PSNR_CAP_DB", "psnr", "ssim", "DiceAccumulator", "dice_counts", "dice_per_slice", "GaussianStats",
            "frechet_distance", "diversity", "diversity_ratio",
        ],
        "poster": [
            "POSTER_DICE_LOSS_ARGS", "to_uint8_generated", "to_uint8_original", "poster_dice",
            "poster_psnr", "poster_ssim",
        ],
        "quality": [
            "HIGHPASS_SIGMA", "EROSION_PX", "TEXTURE_RATIO_MIN", "K_SPREAD_MIN", "DICE_RATIO_MIN", "organ_region",
            "highpass", "quality_numbers", "quality_flags",
        ],
        "run": ["EvaluationJob", "evaluate_run", "recompute_metrics", "evaluation_job", "METRIC_KEYS"],
    },
)
