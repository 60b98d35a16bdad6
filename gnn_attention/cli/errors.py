"""User mistakes at the command line: the one error type, output paths checked up front, and the
one place (:func:`report`) that turns any failure a user can cause into one line.

Notation: ``args`` = the parsed ``argparse.Namespace`` of one command; an *output option* is one of
:data:`OUTPUTS` (a file the command writes) or a name a command lists in ``output_dirs``.

Why check outputs before running: ``bench --json`` or ``translate --plot`` under a path that is a
file used to fail with a traceback *after* the work was done; the check costs a few ``stat`` calls.
"""
from __future__ import annotations

import errno
from pathlib import Path

OUTPUTS = ("json", "plot", "html", "out", "heatmap")
MAX_LINE = 300  # a longer message (e.g. an OS error quoting a long path) is cut, never wrapped


class UserError(Exception):
    """A mistake in the command line or its inputs: printed as one line, exit status 2."""


def check_output(path: str, flag: str, is_dir: bool = False) -> None:
    """Raise :class:`UserError` when ``path`` cannot become the output named ``flag``: a folder
    on its way is a file, or a file output is an existing directory (or a folder output a file)."""
    p = Path(path)
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{flag} {path}: {parent} is a file, not a folder")
            break
    if is_dir and p.exists() and not p.is_dir():
        raise UserError(f"{flag} {path} is a file; give a folder")
    if not is_dir and p.is_dir():
        raise UserError(f"{flag} {path} is a folder; give a file name")


def check_outputs(args) -> None:
    """:func:`check_output` for every output option the command was given."""
    dirs = set(getattr(args, "output_dirs", ()))
    for name in OUTPUTS + tuple(dirs - set(OUTPUTS)):
        value = getattr(args, name, None)
        if isinstance(value, str) and value:
            check_output(value, f"--{name.replace('_', '-')}", is_dir=name in dirs)


def report(err: BaseException) -> str:
    """The one line for an error a user's input or environment can cause (``OSError`` with its
    file name, ``MemoryError``), as ``UserError`` messages are."""
    if isinstance(err, MemoryError):
        text = ("out of memory: the inputs are too large for this machine "
                f"({str(err) or 'MemoryError'}); try smaller sizes")
    elif isinstance(err, OSError):
        what = err.strerror or errno.errorcode.get(err.errno or 0, type(err).__name__)
        where = f": {err.filename}" if err.filename else ""
        text = f"{what}{where}"
    else:
        text = str(err) or type(err).__name__
    text = " ".join(text.split())  # one line, whatever the message held
    return text if len(text) <= MAX_LINE else text[:MAX_LINE - 3] + "..."
