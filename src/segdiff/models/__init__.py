"""The networks and how they are trained: the segmentation-guided diffusion model, the auxiliary segmentor, the shared training loop."""

from segdiff.models.diffusion import DenoiserConfig, SchedulerConfig, SegGuidedDenoiser, one_hot, ablate_masks, make_scheduler, diffusion_loss, min_snr_weights, to_model_range, from_model_range, fit_diffusion, save_diffusion, load_diffusion
from segdiff.models.segmentor import SegmentorConfig, build_segmentor, augment, batch_dice_ce, fit_segmentor, save_segmentor, load_segmentor, predict
from segdiff.models.training import TrainSettings, TrainResult, train, resume_key, key_differences, warmup_cosine, write_history

__all__ = ["DenoiserConfig", "SchedulerConfig", "SegGuidedDenoiser", "one_hot", "ablate_masks", "make_scheduler", "diffusion_loss", "min_snr_weights", "to_model_range", "from_model_range", "fit_diffusion", "save_diffusion", "load_diffusion", "SegmentorConfig", "build_segmentor", "augment", "batch_dice_ce", "fit_segmentor", "save_segmentor", "load_segmentor", "predict", "TrainSettings", "TrainResult", "train", "resume_key", "key_differences", "warmup_cosine", "write_history"]
