"""Scoring generations: metric formulas, feature networks (Inception, radiomics), the poster authors' protocol, a run's evaluation."""

from segdiff.evaluation.metrics import PSNR_CAP_DB, psnr, ssim, DiceAccumulator, dice_per_slice, GaussianStats, frechet_distance, diversity, diversity_ratio
from segdiff.evaluation.poster import POSTER_DICE_LOSS_ARGS, to_uint8_generated, to_uint8_original, poster_dice, poster_psnr, poster_ssim
from segdiff.evaluation.run import evaluate_run, recompute_metrics, evaluation_job, METRIC_KEYS

__all__ = ["PSNR_CAP_DB", "psnr", "ssim", "DiceAccumulator", "dice_per_slice", "GaussianStats", "frechet_distance", "diversity", "diversity_ratio", "POSTER_DICE_LOSS_ARGS", "to_uint8_generated", "to_uint8_original", "poster_dice", "poster_psnr", "poster_ssim", "evaluate_run", "recompute_metrics", "evaluation_job", "METRIC_KEYS"]
