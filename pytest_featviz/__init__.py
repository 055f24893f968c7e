"""pytest-featviz: regression tests for what a neural network computes inside.

The public names are the errors a check raises (:class:`FeatureDriftError` on drift, :class:`GoldenMissingError` in
check mode without a golden, :class:`FeatvizError` for a call that cannot be carried out as written) and the result
records a check returns (:class:`SnapshotResult`, one :class:`LayerResult` per layer). Importing this package stays
cheap (no torch, numpy or scikit-image), because pytest loads it at start-up.
"""

from __future__ import annotations

from pytest_featviz.records import FeatureDriftError, FeatvizError, GoldenMissingError, LayerResult, SnapshotResult

__version__ = "0.1.0"

__all__ = ["FeatureDriftError", "FeatvizError", "GoldenMissingError", "LayerResult", "SnapshotResult", "__version__"]
