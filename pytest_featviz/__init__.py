"""pytest-featviz: regression tests for what a neural network computes inside.

The public names are the errors a check raises (:class:`FeatureDriftError` on drift, :class:`GoldenMissingError` in
check mode without a golden, :class:`FeatvizError` for a call that cannot be carried out as written) and the result
records a check returns (:class:`SnapshotResult`, one :class:`LayerResult` per layer). Importing this package stays
cheap (no torch, numpy or scikit-image, and the records only when first asked for), because pytest loads it at
start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pytest_featviz.outcomes import FeatureDriftError, FeatvizError, GoldenMissingError

if TYPE_CHECKING:
    from pytest_featviz.records import LayerResult, SnapshotResult

__version__ = "0.1.0"

__all__ = ["FeatureDriftError", "FeatvizError", "GoldenMissingError", "LayerResult", "SnapshotResult", "__version__"]


def __getattr__(name: str) -> Any:
    """The result records, imported when first asked for: creating their frozen dataclasses took a third of the
    plugin's start-up."""
    if name in ("LayerResult", "SnapshotResult"):
        from pytest_featviz import records

        return getattr(records, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "LayerResult", "SnapshotResult"})
