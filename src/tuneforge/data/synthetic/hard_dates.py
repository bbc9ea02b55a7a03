"""Harder ISO-date prompts: the same skill as iso_dates, written in ways the shipped training set never shows.

The reinforcement fine-tuning study (docs/rl.md) needs a task where SFT alone leaves headroom and a checker
exists: SFT on the plain iso_dates set, then GRPO on these prompts with the exact-date reward, scored on a
held-out set of the same kind. Each prompt has one right answer (weekdays are computed, so they are true):

- the day spelled out ("the twenty-first of June 1999", "June twenty-first, 1999"),
- a weekday in front ("Tuesday, 4 May 1980"), always inside a sentence with the question after it,
- abbreviated months with a dot ("Sept. 4, 1980", "4 Sep. 1980"),
- day / month / year named field by field ("day 14, month 3, year 2021"),
- a numeric date whose order the prompt states ("14.03.2021 (day.month.year)").
"""

from __future__ import annotations

import datetime
import random

MONTHS = [
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
]  # fmt: skip
# the usual English abbreviations (September's is four letters)
MONTH_ABBR = ["Jan.", "Feb.", "Mar.", "Apr.", "May", "Jun.", "Jul.", "Aug.", "Sept.", "Oct.", "Nov.", "Dec."]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_UNITS = [
    "", "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
    "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth", "eighteenth",
    "nineteenth",
]  # fmt: skip

EVENTS = [
    "The contract was signed on {date} in Leeds.",
    "Our office moved to the new building on {date}.",
    "The invoice is dated {date}.",
    "She was born on {date}, a little before midnight.",
    "The bridge reopened to traffic on {date}.",
    "The last backup ran on {date} without errors.",
]
QUESTIONS = [
    "Give that date as YYYY-MM-DD.",
    "Write the date in ISO 8601 format.",
    "What is the date in YYYY-MM-DD form?",
]
PLAIN = [
    "Convert this date to ISO 8601 format (YYYY-MM-DD): {date}",
    "Rewrite in ISO format: {date}",
    "{date} — what is that in YYYY-MM-DD?",
]


def ordinal_word(day: int) -> str:
    """1 → "first", 21 → "twenty-first", 30 → "thirtieth"."""
    if day < 20:
        return _UNITS[day]
    tens, unit = divmod(day, 10)
    stem = {2: "twent", 3: "thirt"}[tens]
    return f"{stem}ieth" if unit == 0 else f"{stem}y-{_UNITS[unit]}"


def spell_hard(y: int, m: int, d: int, style: int) -> str:
    """The date in words, in one of the six hard styles (0-5); each has exactly one ISO reading."""
    month = MONTHS[m - 1]
    if style == 0:
        return f"the {ordinal_word(d)} of {month} {y}"
    if style == 1:
        return f"{month} {ordinal_word(d)}, {y}"
    if style == 2:
        return f"{WEEKDAYS[datetime.date(y, m, d).weekday()]}, {d} {month} {y}"
    if style == 3:
        return f"{MONTH_ABBR[m - 1]} {d}, {y}" if d % 2 else f"{d} {MONTH_ABBR[m - 1]} {y}"
    if style == 4:
        return f"day {d}, month {m}, year {y}"
    return f"{d:02d}.{m:02d}.{y} (day.month.year)"


def hard_date_records(rng: random.Random, dates: list[tuple[int, int, int]]) -> list[dict[str, str]]:
    """Alpaca rows: a hard prompt for each date, the ISO date as the output; styles cycle so every style is
    equally common, and the weekday style always comes inside a sentence (an event on that day)."""
    rows = []
    for i, (y, m, d) in enumerate(dates):
        date = spell_hard(y, m, d, i % 6)
        if i % 6 == 2:
            instruction = f"{rng.choice(EVENTS).format(date=date)} {rng.choice(QUESTIONS)}"
        else:
            instruction = rng.choice(PLAIN).format(date=date)
        rows.append({"instruction": instruction, "input": "", "output": f"{y:04d}-{m:02d}-{d:02d}"})
    return rows
