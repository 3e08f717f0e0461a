"""Which modality a model relies on: exact Shapley values of the modalities over the fused accuracy, and an
imbalance degree.

``v(S)`` is the fused accuracy with only the modalities of ``S`` given (the others removed from the input,
as ``dan eval``'s "without" ablation does). The Shapley value of modality ``m`` over ``M`` modalities is

``φ_m = Σ_{S ⊆ M \\ {m}} |S|! (M - |S| - 1)! / M! · (v(S ∪ {m}) - v(S))``

computed exactly over all ``2^M`` subsets, as BalanceBenchmark's ``Calculate_Shapley``
(``balancemm/evaluation/modalitys.py``) does; ``v(∅)`` is the chance accuracy ``1 / C`` (a model given no
input), so ``Σ_m φ_m = v(M) - 1 / C``.

The imbalance degree is ``(max_m φ_m - min_m φ_m) / Σ_m |φ_m|``: 0 when every modality contributes the
same, 1 when one modality carries everything (for two modalities ``|φ_1 - φ_2| / (|φ_1| + |φ_2|)``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def modality_subsets(modalities: Sequence[str]) -> list[frozenset[str]]:
    """Every subset of ``modalities``, the empty one and the full one included (``2^M``)."""
    mods = list(modalities)
    return [frozenset(c) for r in range(len(mods) + 1) for c in itertools.combinations(mods, r)]


def shapley_values(value: Callable[[frozenset[str]], Any], modalities: Sequence[str]) -> dict[str, Any]:
    """``{m: φ_m}`` from ``value(S)``, the accuracy with only the modalities of ``S``, called once per subset.

    ``value`` may return floats or tensors of one shape (e.g. logits ``[B, C]``: AGM decomposes the fused
    output this way); ``φ_m`` then has that shape."""
    mods = sorted(modalities)
    n = len(mods)
    v = {s: value(s) for s in modality_subsets(mods)}
    phi = {}
    for m in mods:
        total: Any = 0.0
        for s, vs in v.items():
            if m in s:
                continue
            weight = math.factorial(len(s)) * math.factorial(n - len(s) - 1) / math.factorial(n)
            total += weight * (v[s | {m}] - vs)
        phi[m] = total
    return phi


def imbalance_degree(shapley: Mapping[str, float]) -> float:
    """``(max φ - min φ) / Σ |φ|`` in ``[0, 1]``; 0 for a single modality or when nothing contributes."""
    values = list(shapley.values())
    scale = sum(abs(x) for x in values)
    if len(values) < 2 or scale == 0:
        return 0.0
    return (max(values) - min(values)) / scale
