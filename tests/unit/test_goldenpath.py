"""goldenpath: where goldens live: sanitized names, snapshot directories inside the golden directory, case-only
twins, environment-keyed directories."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

# Kept in sys.modules: in-process pytester runs drop the modules they import, and importing torch afresh in one
# process breaks it.
import torch
from torch import nn

from pytest_featviz import goldenpath
from pytest_featviz.golden import SIDECAR
from pytest_featviz.goldenpath import MAX_NAME_LENGTH, sanitize_name, snapshot_dir

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


def test_a_name_in_either_unicode_form_gets_one_file_name() -> None:
    """A test file checked out with its name decomposed (NFD: macOS, a name committed from a Mac) looked for its
    goldens elsewhere, and --featviz-create wrote a second tree: the hash was of the name as given."""
    composed = "test_\u00fc"  # ü
    decomposed = unicodedata.normalize("NFD", composed)
    assert decomposed != composed
    assert sanitize_name(decomposed) == sanitize_name(composed) == "test__-12e88243da"  # as goldens have it


@pytest.mark.parametrize(
    ("existing", "clash", "rename"),
    [
        ("tests/test_Model/test_a/0", "tests/test_model/test_b/0", "the test file or the folder it is in"),
        ("Sub2/test_m/test_a/0", "sub2/test_m/test_a/0", "the test file or the folder it is in"),
        ("tests/test_m/test_a[RGB]/0", "tests/test_m/test_a[rgb]/0", "the test or its parametrize id"),
        ("tests/test_m/test_a/Stem", "tests/test_m/test_a/stem", "the snapshot (name=)"),
    ],
)
def test_a_path_that_differs_only_in_case_from_one_on_disk_is_named(
    tmp_path: Path, existing: str, clash: str, rename: str
) -> None:
    (tmp_path / existing).mkdir(parents=True)
    assert goldenpath.case_collision(tmp_path, tmp_path / clash) is None  # empty folders merge no golden
    (tmp_path / existing / "snapshot.json").write_text("{}")
    reason = goldenpath.case_collision(tmp_path, tmp_path / clash)
    assert reason is not None and "differs only in letter case" in reason
    assert f"goldens; rename {rename} so that the two differ in more than case;" in reason  # what to rename
    first = next(a for a, b in zip(Path(existing).parts, Path(clash).parts, strict=True) if a != b)
    assert f"from {tmp_path}" in reason and reason.split(" which already exists")[0].endswith(f"{first},")
    # the same path, paths that differ in more than case, and paths not yet on disk are fine
    assert goldenpath.case_collision(tmp_path, tmp_path / existing) is None
    assert goldenpath.case_collision(tmp_path, tmp_path / existing.replace("test_a", "test_z")) is None
    assert goldenpath.case_collision(tmp_path / "absent", tmp_path / "absent" / clash) is None


def test_a_case_only_twin_without_goldens_is_no_collision(tmp_path: Path) -> None:
    # a stray golden/Tests with a .gitkeep beside golden/tests failed every test below it, each of which matched
    (tmp_path / "Tests").mkdir()
    (tmp_path / "Tests" / ".gitkeep").write_text("")
    (tmp_path / "tests" / "test_m" / "TEST_A").parent.mkdir(parents=True)
    (tmp_path / "tests" / "test_m" / "TEST_A").write_text("a file, not a golden")
    assert goldenpath.case_collision(tmp_path, tmp_path / "tests" / "test_m" / "test_a" / "0") is None
    (tmp_path / "Tests" / ".0.featviz-new-1a2b").mkdir()  # what a killed write left hidden: no golden of a test
    (tmp_path / "Tests" / ".0.featviz-new-1a2b" / "snapshot.json").write_text("{}")
    assert goldenpath.case_collision(tmp_path, tmp_path / "tests" / "test_m" / "test_a" / "0") is None
    # a picture alone (its sidecar lost) is a golden's: two such folders would merge on macOS and Windows
    (tmp_path / "Tests" / "test_m" / "test_a" / "0").mkdir(parents=True)
    (tmp_path / "Tests" / "test_m" / "test_a" / "0" / "stem.png").write_bytes(b"")
    reason = goldenpath.case_collision(tmp_path, tmp_path / "tests" / "test_m" / "test_a" / "0")
    assert reason is not None and f"from {tmp_path / 'Tests'}," in reason
    assert "move its goldens to the new name to keep them (git mv, through a temporary name on macOS" in reason


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


HOSTILE = [
    "../../../etc/passwd",
    "..",
    ".",
    "a/b\\c",
    "/absolute",
    "C:\\windows",
    "ctl\x00\x01\n\t",
    "é" * 300,
    "\U0001f600" * 100,
    "<script>alert('x')</script>",
    "CON",
    "nul.txt",
    "x" * 1000,
    "",
    " . ",
]


def test_hostile_names_stay_inside_the_golden_dir(tmp_path: Path) -> None:
    root = tmp_path / "golden"
    seen: set[Path] = set()
    for test_file in ["../up.py", "tests/test_m.py", "/abs/test_x.py"]:
        for name in HOSTILE:
            directory = snapshot_dir(root, test_file, name, name)
            assert directory.resolve().is_relative_to(root.resolve())
            for part in directory.relative_to(root).parts:
                assert len(part.encode("utf-8")) <= 255 and part not in (".", "..") and not part.startswith(".")
                assert part.isascii() and part.isprintable() and "<" not in part
            seen.add(directory)
    assert len(seen) == 3 * len(HOSTILE)  # no two names share a directory


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


def test_keyed_directories_sit_beside_the_shared_one_and_map_back(tmp_path: Path) -> None:
    shared = tmp_path / "golden/test_m/test_a/0"
    keyed = goldenpath.keyed_dir(shared, "cuda")
    assert keyed == tmp_path / "golden/test_m/test_a/0@cuda"
    assert goldenpath.keyed_dir(shared, "../x") == shared.with_name(f"0@{sanitize_name('../x')}")
    keyed.mkdir(parents=True)
    (keyed / SIDECAR).write_text('{"format": 1, "environment": {"device": "cuda"}}')
    assert goldenpath.shared_dir(keyed) == shared  # made on the device its name ends with
    assert goldenpath.shared_dir(shared) == shared
    named = shared.with_name("enc@fp16")  # a snapshot the test named so: its sidecar was made on cpu
    named.mkdir()
    (named / SIDECAR).write_text('{"format": 1, "environment": {"device": "cpu"}}')
    assert goldenpath.shared_dir(named) == named
    assert goldenpath.shared_dir(shared.with_name("block@1")) == shared.with_name("block@1")  # not a device key


def test_a_keyed_directory_whose_sidecar_cannot_be_read_is_a_snapshot_of_its_own(tmp_path: Path) -> None:
    keyed = tmp_path / "0@cuda"
    keyed.mkdir()
    (keyed / SIDECAR).write_text("[" * 200000 + "]" * 200000)  # nested too deep for json
    assert goldenpath.shared_dir(keyed) == keyed
    (keyed / SIDECAR).write_text('{"environment": {"device": "cuda"}}')
    assert goldenpath.shared_dir(keyed) == tmp_path / "0"


def test_layer_files_that_differ_only_in_case_get_the_digest_of_their_layer() -> None:
    files = goldenpath.case_unique_files(
        [("d.Conv", "d.Conv.png", False), ("d.conv", "d.conv.png", False), ("d.CONV", "d.CONV.png", False)]
    )
    assert files[0] == "d.Conv.png" and re.fullmatch(r"d\.conv-[0-9a-f]{10}\.png", files[1])
    assert len({f.lower() for f in files}) == 3 and files[2].startswith("d.CONV-")
    # a file on disk that the rewrite keeps keeps its name: the new picture beside it is the one renamed
    kept = goldenpath.case_unique_files([("d.conv", "d.conv.png", False), ("d.Conv", "d.Conv.png", True)])
    assert kept[1] == "d.Conv.png" and kept[0] == files[1]
    assert goldenpath.case_unique_files([("a", "a.png", False), ("b", "b.png", True)]) == ["a.png", "b.png"]


def test_a_snapshot_of_layers_named_alike_but_for_case_stays_portable(tmp_path: Path) -> None:
    """``ModuleDict({"Conv": ..., "conv": ...})`` wrote d.Conv.png and d.conv.png: one file on macOS and Windows,
    where every clone then failed as a damaged golden."""
    from unit import snapshotter

    torch.manual_seed(0)
    model = nn.Sequential(nn.ModuleDict({"Conv": nn.Conv2d(3, 4, 1), "conv": nn.Conv2d(3, 4, 1)}))
    model.forward = lambda x: model[0]["conv"](x) + model[0]["Conv"](x)  # type: ignore[method-assign]
    inputs = torch.rand(1, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    layers = ["0.Conv", "0.conv"]
    snapshotter(tmp_path, update=True)(model, inputs, layers=layers)
    (directory,) = {p.parent for p in tmp_path.rglob("*.png")}
    first = sorted(p.name for p in directory.glob("*.png"))
    assert len({name.lower() for name in first}) == 2 and "0.conv.png" in first  # the first in forward order
    assert snapshotter(tmp_path)(model, inputs, layers=layers).outcome == "matched"
    for name in ("Conv", "conv"):  # one layer drifts and is rewritten beside the other's file, kept as it was
        with torch.no_grad():
            model[0][name].weight.mul_(-1)
        assert snapshotter(tmp_path, update=True)(model, inputs, layers=layers).outcome == "updated"
        assert sorted(p.name for p in directory.glob("*.png")) == first
        assert snapshotter(tmp_path)(model, inputs, layers=layers).outcome == "matched"
