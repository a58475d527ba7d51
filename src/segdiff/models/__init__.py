"""The networks and how they are trained: the segmentation-guided diffusion model, the auxiliary segmentor,
the shared training loop, the training jobs."""

from segdiff._api import lazy_api

__getattr__, __dir__, __all__ = lazy_api(
    __name__,
    {
        "diffusion": [
            "DenoiserConfig", "SchedulerConfig", "SegGuidedDenoiser", "one_hot", "ablate_masks",
            "make_scheduler", "diffusion_loss", "min_snr_weights", "to_model_range", "from_model_range",
            "fit_diffusion", "save_diffusion", "load_diffusion",
        ],
        "jobs": ["DiffusionTrainJob", "SegmentorTrainJob", "train_diffusion", "train_segmentor"],
        "segmentor": [
            "SegmentorConfig", "build_segmentor", "organ_targets", "augment", "batch_dice_ce", "fit_segmentor",
            "save_segmentor", "load_segmentor", "predict",
        ],
        "training": [
            "TrainSettings", "TrainResult", "train", "resume_key", "key_differences", "warmup_cosine",
            "write_history",
        ],
    },
)
