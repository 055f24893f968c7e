"""golden: where goldens live, sanitized names, the sidecar, byte-identical and atomic writes, data only."""

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
from pytest_featviz.golden import MAX_NAME_LENGTH, SIDECAR, sanitize_name, snapshot_dir
from unit import snapshotter

SAFE = re.compile(r"^[A-Za-z0-9._\-\[\]+=,@]+$")
RESERVED = {"CON", "PRN", "AUX", "NUL"} | {f"{p}{i}" for p in ("COM", "LPT") for i in range(1, 10)}
NASTY = [
    "a/b",
    "a\\b",
    "..",
    ".",
    "../../etc/passwd",
    ".hidden",
    "CON",
    "con.txt",
    "Nul",
    "LPT1.png",
    "trailing. ",
    "x" * 500,
    "Ünïcödé 日本語 🚀",
    "<script>alert('x')</script>",
    'a:b*c?d"e|f',
    "tab\there\nnewline",
    "",
]


@pytest.mark.parametrize("name", NASTY)
def test_sanitized_names_are_safe_everywhere(name: str) -> None:
    safe = sanitize_name(name)
    assert SAFE.match(safe), safe
    assert len(safe) <= MAX_NAME_LENGTH
    assert not safe.startswith(".") and not safe.endswith((".", " "))
    assert safe.split(".")[0].upper() not in RESERVED
    assert sanitize_name(name) == safe  # stable


def test_plain_names_are_kept_and_different_names_stay_different() -> None:
    for plain in ("layer1.0.conv1", "test_x[1-a]", "block@1", "features.3"):
        assert sanitize_name(plain) == plain
    # names that sanitize to the same characters keep apart through a hash of the original
    variants = ["a/b", "a\\b", "a:b", "a_b", "a b", "A/B"]
    assert len({sanitize_name(v) for v in variants}) == len(variants)
    long_names = ["x" * 200 + "1", "x" * 200 + "2"]
    assert len({sanitize_name(v) for v in long_names}) == 2


@pytest.mark.parametrize(
    ("existing", "clash"),
    [
        ("tests/test_Model/test_a/0", "tests/test_model/test_b/0"),  # test file
        ("tests/test_m/test_a[RGB]/0", "tests/test_m/test_a[rgb]/0"),  # parametrize id
        ("tests/test_m/test_a/Stem", "tests/test_m/test_a/stem"),  # snapshot name
    ],
)
def test_a_path_that_differs_only_in_case_from_one_on_disk_is_named(tmp_path: Path, existing: str, clash: str) -> None:
    (tmp_path / existing).mkdir(parents=True)
    reason = golden.case_collision(tmp_path, tmp_path / clash)
    assert reason is not None and "differs only in letter case" in reason
    first = next(a for a, b in zip(Path(existing).parts, Path(clash).parts, strict=True) if a != b)
    assert f"from {tmp_path}" in reason and reason.split(" which already exists")[0].endswith(f"{first},")
    # the same path, paths that differ in more than case, and paths not yet on disk are fine
    assert golden.case_collision(tmp_path, tmp_path / existing) is None
    assert golden.case_collision(tmp_path, tmp_path / existing.replace("test_a", "test_z")) is None
    assert golden.case_collision(tmp_path / "absent", tmp_path / "absent" / clash) is None


def test_snapshot_dir_layout_and_containment(tmp_path: Path) -> None:
    root = tmp_path / "golden"
    path = snapshot_dir(root, "tests/models/test_vision.py", "TestResNet.test_stages[cpu-64]", "0")
    assert path == root / "tests" / "models" / "test_vision" / "TestResNet.test_stages[cpu-64]" / "0"
    for file_part, test_name, snap in [
        ("../../outside.py", "..", ".."),
        ("/abs/test_a.py", "../x", "a/../../b"),
        ("tests\\win\\test_b.py", "CON", "NUL"),
    ]:
        escaped = snapshot_dir(root, file_part, test_name, snap)
        assert escaped.resolve().is_relative_to(root.resolve()), escaped
        assert ".." not in escaped.relative_to(root).parts


LAYOUT_SUITE = """
import pytest
import torch
from torch import nn


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3))


class TestGroup:
    @pytest.mark.parametrize("tag", ["a/b", "<b>"])
    def test_param(self, feature_snapshot, tag):
        feature_snapshot(model(), torch.ones(1, 1, 6, 6), layers="0", name="named/../x")


def test_plain(feature_snapshot):
    feature_snapshot(model(), torch.ones(1, 1, 6, 6), layers="0")
    feature_snapshot(model(), torch.zeros(1, 1, 6, 6), layers="0")
"""


def test_layout_on_disk_for_a_real_suite(featviz_pytester: pytest.Pytester) -> None:
    featviz_pytester.mkpydir("tests")
    featviz_pytester.path.joinpath("tests", "test_suite.py").write_text(LAYOUT_SUITE)
    result = featviz_pytester.runpytest("--featviz-update")
    result.assert_outcomes(passed=3)
    root = featviz_pytester.path / "golden"
    sidecars = sorted(p.relative_to(root).as_posix() for p in root.rglob(SIDECAR))
    assert len(sidecars) == 4
    assert "tests/test_suite/test_plain/0/snapshot.json" in sidecars
    assert "tests/test_suite/test_plain/1/snapshot.json" in sidecars
    params = [s for s in sidecars if s.startswith("tests/test_suite/TestGroup.test_param")]
    assert len(params) == 2 and len({s.split("/")[2] for s in params}) == 2
    for sidecar in params:
        assert SAFE.match(sidecar.split("/")[2]) and SAFE.match(sidecar.split("/")[3])
    everything = [p for p in featviz_pytester.path.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    outside = [p for p in everything if not p.is_relative_to(root) and p.suffix not in (".py", ".ini")]
    assert outside == []


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
