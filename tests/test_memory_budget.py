import pytest

from rewarddance.backend.memory_budget import Part, check_fits, describe

GB = 2**30


def test_parts_that_fit_pass_and_streamed_weights_count_only_their_minimum():
    check_fits([Part("MODEL", 6 * GB, 6 * GB), Part("the reward model", 16 * GB, 1 * GB)], 8 * GB, "cuda:0", "x")


def test_too_little_memory_is_refused_with_the_numbers():
    parts = [Part("the trainer's copy of MODEL", 7 * GB, 7 * GB), Part("the reward model", 16 * GB, GB // 2)]
    with pytest.raises(ValueError) as err:
        check_fits(parts, 6 * GB, "cuda:0", "model")
    assert str(err.value).startswith(
        "model: needs at least 7.5 GB on cuda:0 (the trainer's copy of MODEL 7.0 GB, the reward model 0.5 GB of "
        "16.0 GB (the rest streams)), but ComfyUI can use 6.0 GB there;"
    )


def test_describe_names_a_fully_loaded_part_by_its_size():
    assert describe(Part("VAE", 3 * GB // 10, 3 * GB // 10)) == "VAE 0.3 GB"
