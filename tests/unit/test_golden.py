"""golden: the sidecar, byte-identical and atomic writes of whole snapshots, data only (where goldens live:
test_goldenpath)."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest
import torch
from torch import nn

import pytest_featviz
from pytest_featviz import golden
from pytest_featviz.golden import SIDECAR
from unit import snapshotter


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU(), nn.Conv2d(5, 3, 3))


def _x() -> torch.Tensor:
    return torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("normalize", ["minmax", "sigmoid", "percentile"])
def test_same_activations_give_byte_identical_files_in_fresh_directories(tmp_path: Path, normalize: str) -> None:
    for run in ("one", "two"):
        snapshotter(tmp_path / run, update=True, normalize=normalize)(_model(), _x(), layers=["0", "2"])
    one, two = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert sorted(one) == [
        "tests/test_model/test_features/0/0.png",
        "tests/test_model/test_features/0/2.png",
        "tests/test_model/test_features/0/snapshot.json",
    ]
    assert one == two


def _png_chunks(data: bytes) -> list[str]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        chunks.append(data[offset + 4 : offset + 8].decode("ascii"))
        offset += 12 + length
    return chunks


def test_goldens_are_png_and_json_with_no_time_or_text(tmp_path: Path) -> None:
    snapshotter(tmp_path, update=True)(_model(), _x(), layers=["0", "2"], channels=[0, 2])
    files = _files(tmp_path)
    for name, data in files.items():
        if name.endswith(".png"):
            assert set(_png_chunks(data)) <= {"IHDR", "IDAT", "IEND"}, name
        else:
            assert name.endswith("/snapshot.json")
            sidecar = json.loads(data)
    # the sidecar holds what the issue lists: format, normalization, layers, shapes, channels, ranges, statistics
    assert sidecar["format"] == golden.FORMAT_VERSION and sidecar["normalize"] == "minmax"
    first = sidecar["layers"][0]
    assert [layer["name"] for layer in sidecar["layers"]] == ["0", "2"]
    assert first["shape"] == [1, 5, 10, 10] and first["tile"] == [10, 10]
    assert [c["index"] for c in first["channels"]] == [0, 2]
    assert set(first["channels"][0]) >= {"index", "range", "mean", "std", "min", "max"}
    text = files["tests/test_model/test_features/0/snapshot.json"].decode()
    assert not re.search(r"20\d\d-\d\d-\d\d", text)


def test_package_never_unpickles() -> None:
    source = Path(pytest_featviz.__file__).parent
    for path in source.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for banned in ("import pickle", "torch.load", "np.load(", "numpy.load(", "allow_pickle=True", "marshal"):
            assert banned not in text, f"{path.name} uses {banned}"


def test_update_leaves_no_temporary_files(tmp_path: Path) -> None:
    snap = snapshotter(tmp_path, update=True)
    snap(_model(), _x(), layers=["0"])
    with torch.no_grad():
        changed = _model()
        changed[0].bias += 1.0
    assert snapshotter(tmp_path, update=True)(changed, _x(), layers=["0"]).outcome == "updated"
    hidden = [p for p in tmp_path.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert hidden == []


def test_a_damaged_golden_is_a_clear_error_not_a_pass(tmp_path: Path) -> None:
    snapshotter(tmp_path, update=True)(_model(), _x(), layers=["0"])
    picture = next(tmp_path.rglob("0.png"))
    picture.write_bytes(picture.read_bytes()[:-20])
    with pytest.raises(golden.GoldenError, match="does not match its sidecar"):
        snapshotter(tmp_path)(_model(), _x(), layers=["0"])
    sidecar = next(tmp_path.rglob(SIDECAR))
    sidecar.write_text("{not json")
    with pytest.raises(golden.GoldenError, match="is not valid JSON"):
        snapshotter(tmp_path)(_model(), _x(), layers=["0"])
    # update mode re-creates it: an update of a golden that was there, not a new one
    assert snapshotter(tmp_path, update=True)(_model(), _x(), layers=["0"]).outcome == "updated"
    assert snapshotter(tmp_path)(_model(), _x(), layers=["0"]).outcome == "matched"
