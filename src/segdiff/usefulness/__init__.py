"""Do the generations help? Segmentors trained on real, generated, real + generated, few real +
generated slices and on oracle renders (phantom), each scored on the real test split."""

from segdiff._api import lazy_api

__getattr__, __dir__, __all__ = lazy_api(
    __name__,
    {
        "sets": ["TRAINSET_GROUP_BATCHES", "TRAINSETS", "TRAINSET_LABELS", "few_real_cases", "uses_real", "uses_generated"],
        "trainset": ["TrainsetJob", "sample_trainset", "trainset_part", "OracleTrainsetJob", "oracle_trainset"],
        "score": ["ScoreJob", "usefulness_metrics", "score_segmentor"],
        "report": ["usefulness_tables", "write_usefulness_report", "usefulness_figure"],
    },
)
