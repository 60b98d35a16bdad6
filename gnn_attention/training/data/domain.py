"""The domain of a task: the source strings its generator can produce, and how to say so.

Notation: ``U(task, params)`` = the set of sources ``spec.make(**params)`` yields (every split);
a model trained on the task has only ever seen sources from U, so its answer outside U is a guess.

* Number tasks (``digits-en``, ``en-de``, ``en-fr``): U is exact and small (``max_number + 1``
  strings), so an input outside it is refused (``strict``): ``12345`` for a 0..9999 model, or
  ``forty two`` where the task writes ``forty-two``.
* Dates: U' = every day of ``first_year..last_year`` in any of the four source formats (the task
  picks one format per day; a model that read "March 3, 2019" has seen other days in that
  format); an input outside U' is decoded with a warning.
* Symbol tasks (copy, reverse, sort): U is described by a rule (lengths ``min_len..max_len`` over
  ``alphabet``); longer strings are a fair generalisation test, so they get a warning.
"""
from __future__ import annotations

import datetime
import inspect
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Dict, Optional

from gnn_attention.training.data.tasks import TASKS


@dataclass(frozen=True)
class Domain:
    """What a task's sources are: a description for messages, a membership test, and whether an
    input outside it is an error (``strict``) or only a warning."""

    description: str
    contains: Callable[[str], bool]
    strict: bool


def _params(name: str, params: Dict[str, object]) -> Dict[str, object]:
    """The generator's keyword arguments: its signature defaults, the task's, then the run's."""
    spec = TASKS[name]
    sig = inspect.signature(spec.make).parameters
    return {**{k: p.default for k, p in sig.items() if p.default is not p.empty},
            **spec.params, **params}


@lru_cache(maxsize=8)
def _sources(name: str, frozen_params: tuple) -> frozenset:
    """U(task, params), cached: the number tasks take about a second to enumerate."""
    return frozenset(src for _, src, _ in TASKS[name].make(**dict(frozen_params)))


# strptime patterns that read babel's en_US short/medium/long/full dates ("3/3/19", "Mar 3, 2019",
# "March 3, 2019", "Sunday, March 3, 2019"); the date read is formatted back and compared, so
# only the task's exact spelling counts.
_PATTERNS = {"short": "%m/%d/%y", "medium": "%b %d, %Y", "long": "%B %d, %Y",
             "full": "%A, %B %d, %Y"}


def _is_date(text: str, years: tuple, locale: str) -> bool:
    from babel.dates import format_date

    for fmt, pattern in _PATTERNS.items():
        try:
            day = datetime.datetime.strptime(text, pattern).date()
        except ValueError:
            continue
        if fmt == "short" and day.year > years[1]:  # strptime reads '50' as 2050, not 1950
            day = day.replace(year=day.year - 100)
        if years[0] <= day.year <= years[1] and format_date(day, format=fmt,
                                                            locale=locale) == text:
            return True
    return False


def domain(name: str, params: Optional[Dict[str, object]] = None) -> Domain:
    """The :class:`Domain` of task ``name`` generated with ``params`` (the run's overrides)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}")
    spec, p = TASKS[name], _params(name, params or {})
    frozen = tuple(sorted((params or {}).items()))
    if spec.family == "numbers":
        top = p["max_number"]
        what = (f"whole numbers 0..{top} written in digits" if name == "digits-en" else
                f"English number words for 0..{top} as the task writes them (e.g. 'forty-two', "
                f"'three hundred one')")
        return Domain(what, lambda s: s in _sources(name, frozen), strict=True)
    if spec.family == "dates":
        what = (f"English dates of {p['first_year']}..{p['last_year']} in the four formats of "
                f"the task (e.g. 'March 3, 2019', '3/3/19')")
        years = (p["first_year"], p["last_year"])
        return Domain(what, lambda s: _is_date(s, years, p["src_locale"]), strict=False)
    lo, hi, alphabet = p["min_len"], p["max_len"], p["alphabet"]
    what = f"strings of {lo}..{hi} characters from {alphabet!r}"
    return Domain(what, lambda s: lo <= len(s) <= hi and set(s) <= set(alphabet), strict=False)


def outside_message(text: str, name: str, dom: Domain) -> str:
    """The one line that says ``text`` is outside task ``name``'s domain (error or warning)."""
    shown = repr(text) if len(text) <= 40 else repr(text[:37] + "...")
    tail = "" if dom.strict else "; the output below is a guess"
    return f"{shown} is outside what the {name} model was trained on: {dom.description}{tail}"
