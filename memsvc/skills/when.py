"""Time expressions in a sentence, resolved against the moment the message was written.

"yesterday", "last Saturday", "two weeks ago", "next month", "in May 2022", "on 7 May": each
becomes a `TimeMention` with the resolved start, its granularity and a label a reader can check
("7 May 2023", "the week of 24 April 2023", "April 2023"). Pure functions, no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september",
          "october", "november", "december")
_MONTH_ABBR = {m[:3]: i + 1 for i, m in enumerate(MONTHS)} | {"sept": 9}
_NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
            "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "a couple of": 2, "a couple": 2,
            "couple of": 2, "a few": 3, "few": 3, "several": 3}
_NUM = r"(?P<n>\d{1,2}|a couple(?: of)?|couple of|a few|few|several|an?|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve)"
_MONTH = r"(?P<month>jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sept?(?:ember)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
_WEEKDAY = r"(?P<weekday>monday|tuesday|wednesday|thursday|friday|saturday|sunday)"

Granularity = str  # "day" | "weekend" | "week" | "month" | "year"


@dataclass(frozen=True)
class TimeMention:
    text: str  # the expression as written
    start: datetime  # first moment of the resolved period (UTC, like the anchor)
    granularity: Granularity
    label: str  # "7 May 2023", "the week of 1 May 2023", "April 2023", "2022"

    @property
    def phrase(self) -> str:
        """How a memory states it: "on 7 May 2023", "in April 2023", "in 2022"."""
        if self.label.startswith("about "):
            return self.label
        return f"on {self.label}" if self.granularity in ("day", "weekend") else f"in {self.label}"


def _day(dt: datetime) -> datetime:
    return dt.replace(hour=0, minute=0, second=0, microsecond=0)


def _add_months(dt: datetime, months: int) -> datetime:
    total = dt.year * 12 + dt.month - 1 + months
    return dt.replace(year=total // 12, month=total % 12 + 1, day=1)


def _label(start: datetime, granularity: Granularity) -> str:
    if granularity == "day":
        return f"{start.day} {MONTHS[start.month - 1].capitalize()} {start.year}"
    if granularity == "week":
        return f"the week of {_label(start, 'day')}"
    if granularity == "weekend":
        return f"the weekend of {_label(start, 'day')}"
    if granularity == "month":
        return f"{MONTHS[start.month - 1].capitalize()} {start.year}"
    return str(start.year)


def _mention(text: str, start: datetime, granularity: Granularity) -> TimeMention:
    if granularity == "month":
        start = start.replace(day=1)
    elif granularity == "year":
        start = start.replace(month=1, day=1)
    start = _day(start)
    return TimeMention(text, start, granularity, _label(start, granularity))


def _count(word: str) -> int:
    word = word.lower()
    return int(word) if word.isdigit() else _NUMBERS.get(word, 1)


def _week_start(dt: datetime) -> datetime:
    return _day(dt) - timedelta(days=dt.weekday())


def _relative(m: re.Match[str], anchor: datetime, prefer_future: bool = False) -> TimeMention | None:
    text = m.group(0)
    day = _day(anchor)
    g = m.groupdict()
    if g.get("simple"):
        word = g["simple"].lower()
        if word in ("yesterday", "last night"):
            return _mention(text, day - timedelta(days=1), "day")
        if word in ("today", "tonight", "this morning", "this afternoon", "this evening", "earlier today"):
            return _mention(text, day, "day")
        if word == "tomorrow":
            return _mention(text, day + timedelta(days=1), "day")
        if word == "the day before yesterday":
            return _mention(text, day - timedelta(days=2), "day")
    if g.get("weekday"):
        target = WEEKDAYS.index(g["weekday"].lower())
        if (g.get("which") or "").lower() == "next" or (prefer_future and not g.get("which")):
            delta = (target - anchor.weekday()) % 7 or 7
            return _mention(text, day + timedelta(days=delta), "day")
        delta = (anchor.weekday() - target) % 7 or 7  # "last Saturday" / "this past Saturday": the latest one before today
        return _mention(text, day - timedelta(days=delta), "day")
    if g.get("unit") and g.get("which"):
        which, unit = g["which"].lower(), g["unit"].lower()
        step = {"last": -1, "past": -1, "this past": -1, "this": 0, "next": 1}[which]
        if unit == "week":
            return _mention(text, _week_start(anchor) + timedelta(weeks=step), "week")
        if unit == "weekend":  # the Saturday of the week `step` weeks from this one
            return _mention(text, _week_start(anchor) + timedelta(days=5, weeks=step), "weekend")
        if unit == "month":
            return _mention(text, _add_months(anchor, step), "month")
        if unit == "year":
            return _mention(text, anchor.replace(year=anchor.year + step), "year")
    if g.get("ago_unit"):
        n = _count(g["n"])
        vague = g["n"].lower() in ("a couple", "a couple of", "couple of", "a few", "few", "several")
        unit = g["ago_unit"].lower().rstrip("s")
        mention: TimeMention | None = None
        if unit == "day":
            mention = _mention(text, day - timedelta(days=n), "day")
        elif unit == "week":
            mention = _mention(text, _week_start(anchor - timedelta(weeks=n)), "week")
        elif unit == "month":
            mention = _mention(text, _add_months(anchor, -n), "month")
        elif unit == "year":
            mention = _mention(text, anchor.replace(year=anchor.year - n), "year")
        if mention is not None and vague:
            mention = TimeMention(mention.text, mention.start, mention.granularity, f"about {mention.label}")
        return mention
    if g.get("month"):
        month = _MONTH_ABBR[g["month"].lower()[:4] if g["month"].lower().startswith("sept") else g["month"].lower()[:3]]
        dom = int(g.get("dom") or g.get("dom2") or 0)
        year = int(g["year"]) if g.get("year") else anchor.year
        if not g.get("year"):
            # No year: the latest such month (or day) up to the anchor ("last June" said in May 2023 is
            # June 2022), or with `prefer_future` the next one from it.
            here, there = (anchor.month, anchor.day), (month, dom or 1)
            if not prefer_future and (there[0], there[1] if dom else 1) > (here[0], here[1] if dom else 1):
                year -= 1
            elif prefer_future and (there[0], there[1] if dom else 31) < (here[0], here[1] if dom else 1):
                year += 1
        try:
            if dom:
                return _mention(text, anchor.replace(year=year, month=month, day=dom), "day")
            return _mention(text, anchor.replace(year=year, month=month, day=1), "month")
        except ValueError:
            return None
    if g.get("only_year"):
        return _mention(text, anchor.replace(year=int(g["only_year"]), month=1, day=1), "year")
    return None


_PATTERNS = [
    re.compile(r"\b(?P<simple>the day before yesterday|yesterday|last night|today|tonight|this morning|this afternoon|this evening|earlier today|tomorrow)\b", re.I),
    re.compile(rf"\b(?:(?P<which>last|this past|next|this) )?{_WEEKDAY}\b", re.I),
    re.compile(r"\b(?P<which>last|this past|past|next|this) (?P<unit>weekend|week|month|year)\b", re.I),
    re.compile(rf"\b{_NUM} (?P<ago_unit>days?|weeks?|months?|years?) ago\b", re.I),
    re.compile(rf"\b(?:on |in )?(?:(?P<dom>\d{{1,2}})(?:st|nd|rd|th)? (?:of )?)?{_MONTH}(?: (?P<dom2>\d{{1,2}})(?:st|nd|rd|th)?)?(?:,? (?P<year>(?:19|20)\d\d))?\b", re.I),
    re.compile(r"\bin (?P<only_year>(?:19|20)\d\d)\b", re.I),
]
# Bare weekdays ("I work on Mondays") and "may" the verb are too ambiguous to date on their own.
_PLURAL_WEEKDAY = re.compile(r"^(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)s", re.I)


def time_mentions(text: str, anchor: datetime, *, prefer_future: bool = False) -> list[TimeMention]:
    """Every resolvable time expression in `text`, in reading order, dated from `anchor`; a bare
    weekday ("on Friday") is the latest one before the anchor, or with `prefer_future` the next."""
    found: list[tuple[int, int, TimeMention]] = []
    for pattern in _PATTERNS:
        for m in pattern.finditer(text):
            if any(s <= m.start() < e or s < m.end() <= e for s, e, _ in found):
                continue
            g = m.groupdict()
            if g.get("weekday") and not g.get("which") and (
                    _PLURAL_WEEKDAY.match(text[m.start(): m.end() + 1]) or not re.search(r"\bon $", text[: m.start()], re.I)):
                continue
            if g.get("month") and g["month"].lower() == "may" and not (g.get("dom") or g.get("dom2") or g.get("year")) \
                    and not re.search(r"\bin $", text[: m.start()], re.I):
                continue  # "may" the verb
            if g.get("month") and len(g["month"]) <= 3 and g["month"].lower() != "may" and not (g.get("dom") or g.get("dom2")):
                continue  # "mar", "jan" alone: too often not a month
            mention = _relative(m, anchor, prefer_future)
            if mention is not None:
                found.append((m.start(), m.end(), mention))
    return [t for _, _, t in sorted(found, key=lambda x: x[0])]
