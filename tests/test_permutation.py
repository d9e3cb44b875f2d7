"""Parsing generated permutations: whatever the model writes, every position comes back once."""

from __future__ import annotations

import random

import pytest

from pipeline.scorers.permutation import MAX_WINDOW, format_permutation, is_clean, labels, parse_permutation


def is_permutation(order: list[int], size: int) -> bool:
    return sorted(order) == list(range(size))


def test_clean_output():
    assert parse_permutation("[C] > [A] > [B] > [D]", 4) == [2, 0, 1, 3]
    assert is_clean("[C] > [A] > [B] > [D]", 4)


def test_generated_text_without_the_opening_bracket():
    # the prompt already holds the first "[": the model writes "C] > [A] > ..."
    assert parse_permutation("C] > [A] > [B]", 3) == [2, 0, 1]


def test_repeats_are_dropped_first_mention_wins():
    assert parse_permutation("[B] > [B] > [A] > [B]", 3) == [1, 0, 2]
    assert not is_clean("[B] > [B] > [A] > [B]", 3)


def test_missing_ids_are_appended_in_input_order():
    assert parse_permutation("[D] > [B]", 5) == [3, 1, 0, 2, 4]


def test_ids_outside_the_window_are_ignored():
    assert parse_permutation("[Z] > [C] > [Q] > [A]", 3) == [2, 0, 1]


def test_lowercase_and_parentheses_and_spaces():
    assert parse_permutation("(b) > [ c ] > [a]", 3) == [1, 2, 0]


def test_bare_letters_when_no_brackets():
    assert parse_permutation("B > C > A", 3) == [1, 2, 0]


@pytest.mark.parametrize("garbage", ["", "   ", "I cannot rank these passages.", "[[[]]]>>>", "\x00\uffff", "[1] > [2]",
                                     "Passage number 4 about topic 1", None])
def test_garbage_gives_a_permutation(garbage):
    order = parse_permutation(garbage, 6)
    assert is_permutation(order, 6)


def test_echoed_passage_keeps_input_order():
    assert parse_permutation("[A] Passage about volcanoes and lava", 4) == [0, 1, 2, 3]


def test_roundtrip_random_permutations():
    rng = random.Random(7)
    for _ in range(200):
        size = rng.randint(1, MAX_WINDOW)
        order = list(range(size))
        rng.shuffle(order)
        text = format_permutation(order)
        assert parse_permutation(text, size) == order
        assert is_clean(text, size)


def test_random_noise_always_gives_a_permutation():
    rng = random.Random(3)
    alphabet = "[]()<> ABCDEFGHIJKLMNOPQRSTUVWXYZabc123\n"
    for _ in range(300):
        size = rng.randint(1, MAX_WINDOW)
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120)))
        assert is_permutation(parse_permutation(text, size), size)


def test_window_size_is_validated():
    with pytest.raises(ValueError, match="1..26"):
        labels(27)
    with pytest.raises(ValueError):
        parse_permutation("[A]", 0)
    assert labels(3) == ["A", "B", "C"]
