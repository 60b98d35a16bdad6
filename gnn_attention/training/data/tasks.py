"""Offline transduction tasks with deterministic, disjoint train / validation / test splits.

Every task is a list of (source text, target text) pairs generated from well-kept libraries
(``num2words`` for numbers, ``babel`` for dates) or from a seeded random generator (copy, reverse,
sort). Nothing is downloaded.

Notation: an *item* is what a pair is made from (a number, a calendar day, a symbol string); its
*key* is a string naming it. ``u(key)`` = the first 64 bits of sha256(task family, key) / 2**64, in
[0, 1), decides the split: ``u < test`` -> test, ``u < test + val`` -> validation, else train.
Because the split is a function of the item alone, the three splits are disjoint by construction
(a held-out item is never seen in training, whatever the seed or size), and all tasks of one
family (en-de, en-fr, ...) hold out the *same* items.

Levels: each side of a task is tokenised at ``"char"`` or ``"word"`` (whitespace) level; the task
says which (see :data:`TASKS`).
"""
from __future__ import annotations

import datetime
import hashlib
import inspect
import random
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Dict, List, Tuple

Pair = Tuple[str, str]
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class TaskSpec:
    """How to generate one task.

    Attributes:
        name: the ``--task`` name.
        family: items of one family share their split (``"numbers"``, ``"dates"``, ``"symbols"``).
        src_level, tgt_level: tokeniser level of each side, ``"char"`` or ``"word"``.
        description: one line for ``--help``.
        make: ``make(**params) -> list of (key, source, target)`` over the whole item universe.
        params: default keyword arguments of ``make`` (overridable per run, saved in the config).
    """

    name: str
    family: str
    src_level: str
    tgt_level: str
    description: str
    make: Callable[..., List[Tuple[str, str, str]]]
    params: Dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskData:
    """The three splits of a task as lists of (source, target) pairs."""

    spec: TaskSpec
    train: List[Pair]
    val: List[Pair]
    test: List[Pair]

    def split(self, name: str) -> List[Pair]:
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        return getattr(self, name)


def split_of(family: str, key: str, val: float = 0.05, test: float = 0.05) -> str:
    """The split an item belongs to: a hash of (family, key), independent of any seed."""
    digest = hashlib.sha256(f"{family}\x00{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    return "test" if u < test else "val" if u < test + val else "train"


# ---------------------------------------------------------------------------------------------
# Numbers (num2words)


def english_words(n: int) -> str:
    """American-style English number words: no "and", no commas ("two thousand three hundred
    forty-two"), so that word tokens are plain vocabulary items and the source reads naturally."""
    from num2words import num2words

    return num2words(n, lang="en").replace(",", "").replace(" and ", " ")


def _numbers(target: str, max_number: int = 9999) -> List[Tuple[str, str, str]]:
    from num2words import num2words

    rows = []
    for n in range(max_number + 1):
        en = english_words(n)
        if target == "digits-en":
            rows.append((str(n), str(n), en))
        else:
            rows.append((str(n), en, num2words(n, lang=target)))
    return rows


# ---------------------------------------------------------------------------------------------
# Dates (babel)

SOURCE_DATE_FORMATS = ("short", "medium", "long", "full")


def _dates(locale: str, first_year: int = 1950, last_year: int = 2049,
           src_locale: str = "en_US") -> List[Tuple[str, str, str]]:
    """Every day of ``first_year..last_year``: source in ``src_locale`` with a format chosen by the
    day's hash (short/medium/long/full), target in ``locale``'s long format.

    The default century keeps two-digit years ("3/3/19") unambiguous.
    """
    from babel.dates import format_date

    if last_year - first_year >= 100:
        raise ValueError("dates span at most 100 years so that short (two-digit) years are unique")
    day, end, rows = datetime.date(first_year, 1, 1), datetime.date(last_year, 12, 31), []
    while day <= end:
        key = day.isoformat()
        pick = int.from_bytes(hashlib.sha256(f"format\x00{key}".encode()).digest()[:4], "big")
        fmt = SOURCE_DATE_FORMATS[pick % len(SOURCE_DATE_FORMATS)]
        rows.append((key, format_date(day, format=fmt, locale=src_locale),
                     format_date(day, format="long", locale=locale)))
        day += datetime.timedelta(days=1)
    return rows


# ---------------------------------------------------------------------------------------------
# Algorithmic tasks


def _symbols(op: str, count: int = 20000, min_len: int = 3, max_len: int = 12,
             alphabet: str = "abcdefghij", seed: int = 0) -> List[Tuple[str, str, str]]:
    """``count`` distinct random strings (lengths uniform in ``min_len..max_len``) and their copy,
    reversal or sorted form. The generator seed fixes the item set; the split still comes from
    the hash of each string, so splits stay disjoint for any seed."""
    if not 1 <= min_len <= max_len:
        raise ValueError(f"need 1 <= min_len <= max_len, got {min_len}, {max_len}")
    rng, seen, rows = random.Random(seed), set(), []
    capacity = sum(len(alphabet) ** k for k in range(min_len, max_len + 1))
    if count > capacity // 2:  # rejection sampling would crawl; the task would also be trivial
        raise ValueError(f"count={count} is too large for {capacity} possible strings")
    while len(rows) < count:
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(min_len, max_len)))
        if s in seen:
            continue
        seen.add(s)
        out = s if op == "copy" else s[::-1] if op == "reverse" else "".join(sorted(s))
        rows.append((s, s, out))
    return rows


TASKS: Dict[str, TaskSpec] = {t.name: t for t in [
    TaskSpec("digits-en", "numbers", "char", "word", "digits -> English words (342 -> three "
             "hundred forty-two)", partial(_numbers, "digits-en"), {"max_number": 9999}),
    TaskSpec("en-de", "numbers", "word", "char", "English number words -> German (forty-two -> "
             "zweiundvierzig)", partial(_numbers, "de"), {"max_number": 9999}),
    TaskSpec("en-fr", "numbers", "word", "word", "English number words -> French (ninety-nine -> "
             "quatre-vingt-dix-neuf)", partial(_numbers, "fr"), {"max_number": 9999}),
    TaskSpec("dates-de", "dates", "char", "char", "English dates, four formats -> German long "
             "format (March 3, 2019 -> 3. März 2019)", partial(_dates, "de_DE"), {}),
    TaskSpec("dates-fr", "dates", "char", "char", "English dates, four formats -> French long "
             "format (March 3, 2019 -> 3 mars 2019)", partial(_dates, "fr_FR"), {}),
    TaskSpec("copy", "symbols", "char", "char", "copy a random string",
             partial(_symbols, "copy"), {"count": 20000}),
    TaskSpec("reverse", "symbols", "char", "char", "reverse a random string",
             partial(_symbols, "reverse"), {"count": 20000}),
    TaskSpec("sort", "symbols", "char", "char", "sort the characters of a random string",
             partial(_symbols, "sort"), {"count": 20000}),
]}
DEFAULT_TASK = "en-de"


def load_task(name: str, val: float = 0.05, test: float = 0.05, **params) -> TaskData:
    """Generate a task and split it.

    Args:
        name: a key of :data:`TASKS`.
        val, test: expected fractions of items held out for validation and test.
        **params: overrides of the task's generator parameters (e.g. ``max_number=999``).

    Returns:
        :class:`TaskData` whose splits are disjoint in items (and hence in source strings).
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    if not (0 < val < 1 and 0 < test < 1 and val + test < 1):
        raise ValueError(f"need 0 < val, test and val + test < 1, got val={val}, test={test}")
    spec = TASKS[name]
    unknown = set(params) - set(inspect.signature(spec.make).parameters)
    if unknown:
        raise ValueError(f"task {name!r} has no parameter(s) {sorted(unknown)}")
    splits: Dict[str, List[Pair]] = {s: [] for s in SPLITS}
    for key, src, tgt in spec.make(**{**spec.params, **params}):
        splits[split_of(spec.family, key, val, test)].append((src, tgt))
    for s in SPLITS:
        if not splits[s]:
            raise ValueError(f"task {name!r} with {params or 'default parameters'} leaves the "
                             f"{s} split empty; generate more items")
    return TaskData(spec, splits["train"], splits["val"], splits["test"])
