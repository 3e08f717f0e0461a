"""Retrieval metrics through pytorch-metric-learning's AccuracyCalculator."""

from __future__ import annotations

from pytorch_metric_learning.distances import CosineSimilarity
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import CustomKNN
from torch import Tensor

RETRIEVAL_METRICS = ("precision_at_1", "r_precision", "mean_average_precision_at_r")


def retrieval_metrics(
    query: Tensor, query_labels: Tensor, reference: Tensor, reference_labels: Tensor
) -> dict[str, float]:
    """Precision@1, R-precision and MAP@R of ``query [Q, D]`` against a disjoint ``reference [R, D]`` set.

    Embeddings should be L2-normalised; neighbours are found by cosine similarity.
    """
    calc = AccuracyCalculator(
        include=RETRIEVAL_METRICS,
        k="max_bin_count",
        device=query.device,
        knn_func=CustomKNN(CosineSimilarity()),
    )
    out = calc.get_accuracy(query, query_labels, reference, reference_labels, ref_includes_query=False)
    return {k: float(v) for k, v in out.items()}
