"""pytest-featviz: regression tests for what a neural network computes inside.

The public names are the drift error raised by a failing check and the result record that a check returns.
Importing this package stays cheap (no torch, numpy or scikit-image), because pytest loads it at start-up.
"""

from __future__ import annotations

from pytest_featviz.records import FeatureDriftError, LayerResult, SnapshotResult

__version__ = "0.1.0"

__all__ = ["FeatureDriftError", "LayerResult", "SnapshotResult", "__version__"]
