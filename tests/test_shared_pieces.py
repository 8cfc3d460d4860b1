"""The shared pieces on the ground floor: one ranking order with its checks, the trained-checkpoint record,
holding a reward model, and the sample photos."""

from __future__ import annotations

import contextlib
import json

import pytest

from rewarddance.backend.holding import holding
from rewarddance.backend.ranking import check_top_k, check_tournament_size, ranking_order
from rewarddance.backend.reward_model import rank_result
from rewarddance.backend.selection import select_top_k
from rewarddance.backend.training_record import (
    TRAINING_RECORD,
    read_training_record,
    trained_scoring,
    write_training_record,
)


def test_ranking_order_is_best_first_with_ties_to_the_lower_index():
    assert ranking_order([0.2, 0.9, 0.2, 0.9, 0.5]) == [1, 3, 4, 0, 2]
    assert ranking_order([]) == []
    assert rank_result([0.2, 0.9, 0.2, 0.9], 3).indices == [1, 3, 0]
    assert select_top_k([0.2, 0.9, 0.2, 0.9], 3).indices == [1, 3, 0]


def test_top_k_check_caps_and_refuses_non_positive_integers():
    assert check_top_k(None, 4) == 4 and check_top_k(2, 4) == 2 and check_top_k(9, 4) == 4
    for bad in (0, -1, True, 1.5, "2"):
        with pytest.raises(ValueError, match="top_k must be a positive integer"):
            check_top_k(bad, 4)
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        select_top_k([0.1, 0.2], 0)


def test_tournament_size_check_names_the_input():
    check_tournament_size(2)
    with pytest.raises(ValueError, match="^images: a tournament needs at least 2 candidates, got 1$"):
        check_tournament_size(1, "images")
    with pytest.raises(ValueError, match="^candidates: a tournament needs at least 2 candidates, got 0$"):
        check_tournament_size(0)


def test_training_record_round_trip_and_unreadable_records(tmp_path):
    data = {"config": {"lr": 1e-4}, "step": 7, "scoring": {"criteria": ["overall"], "normalize": "yes_no"}}
    path = write_training_record(tmp_path, data)
    assert path == tmp_path / TRAINING_RECORD and json.loads(path.read_text()) == data
    assert read_training_record(tmp_path) == data
    assert trained_scoring(str(tmp_path)) == {"criteria": ["overall"], "normalize": "yes_no"}
    assert read_training_record(tmp_path / "missing") == {} and trained_scoring(tmp_path / "missing") == {}
    for text in ("{not json", "[1, 2]", '{"scoring": "vocab"}'):
        path.write_text(text)
        assert trained_scoring(tmp_path) == {}


def test_holding_uses_the_model_hold_or_nothing():
    events = []

    class Local:
        @contextlib.contextmanager
        def use(self):
            events.append("enter")
            yield self
            events.append("exit")

    with holding(Local()):
        events.append("work")
    with holding(object()):  # a remote client has no hold
        events.append("remote")
    assert events == ["enter", "work", "exit", "remote"]


def test_sample_photos_are_colour_uint8_arrays():
    pytest.importorskip("skimage")
    from rewarddance.backend.sample_photos import sample_photos

    photos = sample_photos()
    assert len(photos) >= 3
    assert all(p.dtype.name == "uint8" and p.ndim == 3 and p.shape[2] == 3 and p.flags.c_contiguous for p in photos)


def test_local_models_are_differentiable_and_clients_are_not(reward_models):
    from rewarddance.backend.client import AsyncRewardClient, RewardClient

    assert reward_models("qwen2_5_vl").differentiable is True
    assert RewardClient().differentiable is False and AsyncRewardClient().differentiable is False
