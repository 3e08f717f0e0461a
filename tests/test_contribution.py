"""Shapley values of modalities and the imbalance degree, on games whose values are known."""

from __future__ import annotations

import pytest

from dan.metrics.contribution import imbalance_degree, modality_subsets, shapley_values


def test_subsets_are_all_two_to_the_m() -> None:
    subsets = modality_subsets(["a", "b", "c"])
    assert len(subsets) == 8 and len(set(subsets)) == 8
    assert frozenset() in subsets and frozenset("abc") in subsets


def test_two_modalities_by_hand() -> None:
    v = {frozenset(): 0.1, frozenset({"audio"}): 0.9, frozenset({"image"}): 0.5, frozenset({"audio", "image"}): 1.0}
    phi = shapley_values(v.__getitem__, ["image", "audio"])
    # audio: ½ (0.9 - 0.1) + ½ (1.0 - 0.5); image: ½ (0.5 - 0.1) + ½ (1.0 - 0.9)
    assert phi == pytest.approx({"audio": 0.65, "image": 0.25})
    assert sum(phi.values()) == pytest.approx(1.0 - 0.1)  # efficiency: v(M) - v(∅)
    assert imbalance_degree(phi) == pytest.approx(0.4 / 0.9)


def test_additive_game_gives_each_modality_its_own_worth() -> None:
    worth = {"a": 0.1, "b": 0.3, "c": 0.6}
    calls: list[frozenset[str]] = []

    def value(s: frozenset[str]) -> float:
        calls.append(s)
        return sum(worth[m] for m in s)

    assert shapley_values(value, list(worth)) == pytest.approx(worth)
    assert len(calls) == 8  # each subset evaluated once


def test_a_modality_that_adds_nothing_gets_zero_and_full_imbalance() -> None:
    phi = shapley_values(lambda s: 0.9 if "image" in s else 0.1, ["audio", "image"])
    assert phi == pytest.approx({"audio": 0.0, "image": 0.8})
    assert imbalance_degree(phi) == pytest.approx(1.0)
    assert imbalance_degree({"a": 0.4, "b": 0.4}) == 0.0
    assert imbalance_degree({"a": 0.4}) == 0.0 and imbalance_degree({"a": 0.0, "b": 0.0}) == 0.0
