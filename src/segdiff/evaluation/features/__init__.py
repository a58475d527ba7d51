"""Feature extractors behind FID, FD and FRD: both Inception networks on one base, and radiomics."""

from segdiff._api import lazy_api

__getattr__, __dir__, __all__ = lazy_api(
    __name__,
    {
        "fid": [
            "FID_WEIGHTS_URL", "FID_WEIGHTS_NAME", "FID_DIMS", "find_inception_weights", "load_inception",
            "InceptionFeatures",
        ],
        "inception": ["InceptionFeatureExtractor", "gray_slices"],
        "poster": [
            "POSTER_WEIGHTS_NAME", "POSTER_INPUT_SIZE", "POSTER_FEATURE_DIMS", "IMAGENET_MEAN",
            "IMAGENET_STD", "POSTER_TRANSFORM", "find_poster_inception_weights", "load_poster_inception",
            "poster_preprocess", "PosterInceptionFeatures",
        ],
        "radiomics": [
            "FRD_VERSION", "FRD_MIN_SIZE", "radiomics_features", "frd_from_features", "frd",
            "dominant_feature",
        ],
    },
)
