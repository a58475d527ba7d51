"""Feature extractors behind FID, FD and FRD: the two Inception networks and radiomics."""

from segdiff.evaluation.features.fid import FID_WEIGHTS_URL, FID_WEIGHTS_NAME, FID_DIMS, find_inception_weights, load_inception, InceptionFeatures
from segdiff.evaluation.features.poster import POSTER_WEIGHTS_NAME, POSTER_INPUT_SIZE, POSTER_FEATURE_DIMS, IMAGENET_MEAN, IMAGENET_STD, POSTER_TRANSFORM, find_poster_inception_weights, load_poster_inception, poster_preprocess, PosterInceptionFeatures
from segdiff.evaluation.features.radiomics import FRD_VERSION, FRD_MIN_SIZE, radiomics_features, frd_from_features, frd, dominant_feature

__all__ = ["FID_WEIGHTS_URL", "FID_WEIGHTS_NAME", "FID_DIMS", "find_inception_weights", "load_inception", "InceptionFeatures", "POSTER_WEIGHTS_NAME", "POSTER_INPUT_SIZE", "POSTER_FEATURE_DIMS", "IMAGENET_MEAN", "IMAGENET_STD", "POSTER_TRANSFORM", "find_poster_inception_weights", "load_poster_inception", "poster_preprocess", "PosterInceptionFeatures", "FRD_VERSION", "FRD_MIN_SIZE", "radiomics_features", "frd_from_features", "frd", "dominant_feature"]
