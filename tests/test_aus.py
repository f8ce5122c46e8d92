"""AU string parsing: separators, laterality and intensity marks, blanks."""

from __future__ import annotations

import math

import pytest

from microexp.data.aus import format_aus, invalid_au_tokens, normalise_aus, parse_au_token, parse_aus


@pytest.mark.parametrize(
    "token, expected",
    [("12", "12"), ("R12", "12"), ("L14", "14"), ("12L", "12"), ("15A", "15"), ("4R", "4"), ("AU1", "1"),
     ("au 2", "2"), (" 7 ", "7"), ("r12", "12"), ("14AL", "14"), ("R14A", "14"), ("(4)", "4"), ("04", "4")],
)
def test_token_strips_laterality_and_intensity(token: str, expected: str) -> None:
    assert parse_au_token(token) == expected


@pytest.mark.parametrize("token, expected", [("R12", "R12"), ("12L", "L12"), ("4r", "R4"), ("15A", "15"),
                                             ("R14A", "R14"), ("14AL", "L14"), ("6", "6")])
def test_token_keeps_laterality_as_prefix(token: str, expected: str) -> None:
    assert parse_au_token(token, keep_laterality=True) == expected


@pytest.mark.parametrize("token", ["", " ", "/", "-"])
def test_blank_tokens_are_none(token: str) -> None:
    assert parse_au_token(token) is None


@pytest.mark.parametrize("token", ["x", "?", "12?", "AUX", "1.5", "R"])
def test_bad_token_raises_naming_it(token: str) -> None:
    with pytest.raises(ValueError, match="not an AU code"):
        parse_au_token(token)


@pytest.mark.parametrize(
    "cell, expected",
    [("4+7", "4+7"), ("R12", "12"), ("4+L10", "4+10"), ("12+1+2", "1+2+12"), ("12L+R12+12", "12"),
     ("1,2，12", "1+2+12"), ("1 + 2", "1+2"), ("AU1+AU2", "1+2"), ("15A+4R", "4+15"), ("1+2+", "1+2"),
     (12, "12"), (12.0, "12"), (None, ""), (math.nan, ""), ("", ""), ("/", ""), ("  ", ""), ("-", "")],
)
def test_normalise_aus(cell: object, expected: str) -> None:
    assert normalise_aus(cell) == expected


def test_keep_laterality_sorts_by_number_and_keeps_sides_apart() -> None:
    assert parse_aus("R12+4+L12+12", keep_laterality=True) == ["4", "12", "L12", "R12"]
    assert normalise_aus("12L，15A,4R", keep_laterality=True) == "R4+L12+15"


def test_strict_and_lenient() -> None:
    with pytest.raises(ValueError, match="'x'"):
        parse_aus("1+x+2")
    assert parse_aus("1+x+2", strict=False) == ["1", "2"]
    assert invalid_au_tokens("1+x+?+2") == ["x", "?"]
    assert invalid_au_tokens("R12+4") == []
    assert invalid_au_tokens(None) == []


def test_format_aus() -> None:
    assert format_aus(["1", "2"]) == "1+2"
    assert format_aus([]) == ""
