"""Time expressions resolved against the message time (pure function, exact dates)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from memsvc.skills.when import time_mentions

MONDAY = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
SUNDAY = datetime(2023, 5, 14, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "anchor", "expected"), [
    ("I went there yesterday", MONDAY, [("yesterday", "7 May 2023", "day")]),
    ("the day before yesterday", MONDAY, [("the day before yesterday", "6 May 2023", "day")]),
    ("I ran a race last Saturday", MONDAY, [("last Saturday", "6 May 2023", "day")]),
    ("last Sunday was fun", SUNDAY, [("last Sunday", "7 May 2023", "day")]),
    ("we went camping last weekend", MONDAY, [("last weekend", "the weekend of 6 May 2023", "weekend")]),
    ("we went camping last weekend", SUNDAY, [("last weekend", "the weekend of 6 May 2023", "weekend")]),
    ("I painted it two weeks ago", MONDAY, [("two weeks ago", "the week of 24 April 2023", "week")]),
    ("a few days ago we met", MONDAY, [("a few days ago", "about 5 May 2023", "day")]),
    ("3 months ago", MONDAY, [("3 months ago", "February 2023", "month")]),
    ("last year I went", MONDAY, [("last year", "2022", "year")]),
    ("next month I fly", MONDAY, [("next month", "June 2023", "month")]),
    ("next Tuesday I fly", MONDAY, [("next Tuesday", "9 May 2023", "day")]),
    ("I moved in May 2022", MONDAY, [("in May 2022", "May 2022", "month")]),
    ("on 7 May I saw it", MONDAY, [("on 7 May", "7 May 2023", "day")]),
    ("May 7th, 2022 was great", MONDAY, [("May 7th, 2022", "7 May 2022", "day")]),
    ("I was born in 1990", MONDAY, [("in 1990", "1990", "year")]),
    ("what did she do last June?", MONDAY, [("June", "June 2022", "month")]),  # no year: the latest June
    ("on 20 May we met", MONDAY, [("on 20 May", "20 May 2022", "day")]),
    ("in March I painted", MONDAY, [("in March", "March 2023", "month")]),
    ("I work on Mondays", MONDAY, []),
    ("you may go", MONDAY, []),
    ("I recently moved", MONDAY, []),
])
def test_time_mentions(text: str, anchor: datetime, expected: list[tuple[str, str, str]]) -> None:
    assert [(m.text, m.label, m.granularity) for m in time_mentions(text, anchor)] == expected


def test_a_bare_weekday_is_the_last_one_or_with_prefer_future_the_next() -> None:
    assert [m.label for m in time_mentions("see you on Friday", MONDAY)] == ["5 May 2023"]
    assert [m.label for m in time_mentions("see you on Friday", MONDAY, prefer_future=True)] == ["12 May 2023"]


def test_a_month_without_a_year_is_the_next_one_with_prefer_future() -> None:
    assert [m.label for m in time_mentions("I will go in March", MONDAY, prefer_future=True)] == ["March 2024"]
    assert [m.label for m in time_mentions("I will go in June", MONDAY, prefer_future=True)] == ["June 2023"]
