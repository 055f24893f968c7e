"""Outcomes and errors: the verdicts of a layer and the outcomes of a snapshot, the errors a check raises, and how
messages write paths, scores and environments. Loaded at pytest start-up (the plugin's settings and session hooks
use these names), so it holds no dataclass: :mod:`pytest_featviz.records`, whose frozen records cost milliseconds
to create, is imported when a snapshot is taken or a report read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_featviz.records import SnapshotResult

# Verdicts of one layer.
MATCH = "match"
DRIFT = "drift"
NEW = "new"  # selected now, absent from the golden
GONE = "gone"  # in the golden, not captured now

# Outcomes of one snapshot.
MATCHED = "matched"
DRIFTED = "drifted"
MISSING = "missing"
CREATED = "created"
UPDATED = "updated"
# a golden that exists and could not be read (damaged, of a newer format, not fetched from Git LFS, refused by the
# OS): its test failed on that error, and the session's summary and report say so beside the drifts
UNREADABLE = "unreadable"
OUTCOMES = (MATCHED, DRIFTED, MISSING, CREATED, UPDATED, UNREADABLE)
FAILING = (DRIFTED, MISSING, UNREADABLE)  # the outcomes that fail a test: each is in the report
# most severe first: the order of the report's snapshots, and the outcome that colours a test's section of the page
SEVERITY = (DRIFTED, UNREADABLE, MISSING, UPDATED, CREATED, MATCHED)

NORMALIZE_MODES = ("minmax", "sigmoid", "percentile")


def printable(text: str) -> str:
    """``text`` as a file, a JSON document or an xdist message can carry it: a lone surrogate (``os.fsdecode`` of a
    name that is not UTF-8) as its backslash escape (``photo_\\udce9.png``); any other text unchanged."""
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode("utf-8")


# A score this large is shown in three significant digits: a statistics change counted in units of a golden std that
# was about 0 (a dead channel come alive) read "statistics change 17970105000.000 > 0.03".
LARGE_SCORE = 1000.0


def broken_score(value: float, limit: float, digits: int, above: bool) -> str:
    """A score that broke its limit, with the limit, read the way the verdict went: ``0.0121 > 0.012`` (``above``: the
    limit is a maximum), ``0.98996 < 0.99``, ``5e+11 > 0.03`` (:data:`LARGE_SCORE`)."""
    if value >= LARGE_SCORE:  # a channel that was constant in the golden: no digits to tell apart from the limit
        return f"{value:.3g} {'>' if above else '<'} {limit:g}"
    score, shown = score_beyond(value, limit, digits)
    return f"{score} {'>' if above else '<'} {shown}"


def score_beyond(value: float, limit: float, digits: int) -> tuple[str, str]:
    """A score that broke its limit and that limit, as text that reads the way the verdict went: ``digits``
    decimals, or as many more as tell the two apart (a score just beyond its tolerance read "0.012 > 0.012", and a
    limit shown rounded could read as broken the other way). The limit is shown as ``:g`` where that is exact."""
    shown = f"{limit:g}"
    exact = float(shown) == limit
    for places in range(digits, 18):
        score, rounded = f"{value:.{places}f}", f"{limit:.{places}f}"
        # a limit rounded by less than half its distance to the score: 0.99996 read "1" beside 0.9999 (< 1)
        # compared as numbers: "-0.0000" is no other value than "0.0000" (a score just below a limit of 0)
        if float(score) != float(rounded) and (exact or abs(float(rounded) - limit) * 2 <= abs(value - limit)):
            return score, shown if exact else (rounded.rstrip("0").rstrip(".") or "0")
    return repr(value), repr(limit)


def display_path(path: str | os.PathLike[str], start: str | os.PathLike[str] | None = None) -> str:
    """A path as messages show it: relative to the working directory (or ``start``: where pytest ran, for a command
    to paste, when a test may have changed the working directory), unless the absolute path is shorter (a path far
    up the tree) or there is no relative path (another drive on Windows)."""
    absolute = os.path.abspath(path) if start is not None else os.fspath(path)
    try:
        relative = os.path.relpath(path, start)
    except ValueError:
        return absolute
    return relative if len(relative) <= len(absolute) else absolute


def shown_below(text: str, root: str | os.PathLike[str], start: str | os.PathLike[str] | None) -> str:
    """``text`` with the directory ``root``, and each path below it, as :func:`display_path` shows it from ``start``
    (where pytest ran): the golden's files in an error as every other line shows paths, not the CI runner's root."""
    whole = os.fspath(root)
    shown = display_path(root, start)
    if shown == whole:
        return text
    # the root itself, or a path below it: not a longer name that starts or ends alike (golden2, /backup/<root>)
    found = r"(?<![^\s'\"(=:])" + re.escape(whole) + r"(?=[\\/\s'\"),:;]|$)"
    return re.sub(found, lambda _: shown, text)


def tf32_in_effect(environment: Mapping[str, Any]) -> bool:
    """Whether TF32 could round the float32 matmuls or convolutions of a run with this ``environment`` (a sidecar's
    record; only CUDA has TF32 units)."""
    return (
        environment.get("device") == "cuda"
        and environment.get("dtype", "float32") == "float32"
        and bool(environment.get("matmul_tf32") or environment.get("cudnn_tf32"))
    )


def environment_words(environment: Mapping[str, Any]) -> str:
    """``cuda with torch 2.14.1, TF32 on``: the facts of an ``environment`` record that can move activations."""
    parts = [f"{environment['device']} with torch {environment['torch']}"]
    dtype = str(environment.get("dtype", "float32"))
    if dtype != "float32":
        parts.append(dtype)
    if tf32_in_effect(environment):
        parts.append("TF32 on")
    if environment.get("autocast"):
        parts.append(f"autocast {environment['autocast']}")
    if environment.get("deterministic"):
        parts.append("deterministic algorithms")
    return ", ".join(parts)


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def raised_outside(excinfo: Any) -> bool:
    """The ``__tracebackhide__`` of the functions through which the plugin runs the model: their frames are hidden
    from an error the model or torch raised (the test's frame, then the model's, tell it), and shown with one raised
    in the plugin's own code, a bug to report with them."""
    frame = excinfo.tb
    while frame.tb_next is not None:
        frame = frame.tb_next
    return not os.path.abspath(frame.tb_frame.f_code.co_filename).startswith(_PACKAGE)


class FeatvizError(Exception):
    """A snapshot call that cannot be carried out as written (bad layer name, bad option, damaged golden)."""


class FeatureDriftError(AssertionError):
    """Raised when the current feature maps drifted from the golden ones.

    ``result`` holds the full :class:`SnapshotResult`, so a test can inspect scores after catching the error.
    """

    def __init__(self, message: str, result: SnapshotResult | None = None) -> None:
        super().__init__(message)
        self.result = result


class GoldenMissingError(AssertionError):
    """Raised in check mode when a snapshot has no golden yet; the message gives the command that creates it."""
