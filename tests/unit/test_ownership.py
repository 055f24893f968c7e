"""ownership: a test directory's name matched to the test that owns it and its parametrized and repeated variants,
through the names sanitizing changed or cut; the targets of links in the golden directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pytest_featviz import goldenpath
from pytest_featviz.goldenpath import sanitize_name
from pytest_featviz.orphans import key
from pytest_featviz.ownership import Owners, link_targets, owns


def test_a_test_owns_its_own_directory_and_its_variants_own_their_function_s() -> None:
    assert owns("test_a", "test_a") and owns("test_a[x]", "test_a") and owns("test_a[x]", "test_a[x]")
    assert owns("test_q[u-1-2]", "test_q[u]") and owns("test_q[u-1-2]", "test_q[u-1]")
    assert not owns("test_q[u-1-2]", "test_q[U]") and not owns("test_a", "test_ab") and not owns("test_b[x]", "test_a")
    assert owns("test_café[1]", sanitize_name("test_café"))  # a name sanitizing changed


def test_an_empty_parameter_list_owns_every_parameter_set_even_of_a_cut_name() -> None:
    assert owns("test_p[NOTSET]", "test_p[cuda0]") and owns("test_p[NOTSET]", "test_p")
    assert not owns("test_p[NOTSET]", "test_q[cuda0]")
    long = "TestAVeryLongDescriptiveClassNameForRegressions.test_resnet_block_feature_maps"
    assert owns(f"{long}[NOTSET]", sanitize_name(f"{long}[1]"))
    assert owns("test_é[NOTSET]", sanitize_name("test_é[1]"))


def test_link_targets_are_the_real_directories_links_lead_to(tmp_path: Path) -> None:
    (tmp_path / "test_m" / "test_a" / "0").mkdir(parents=True)
    (tmp_path / "test_m" / "test_b").symlink_to("test_a", target_is_directory=True)
    (tmp_path / "test_n").symlink_to(tmp_path / "test_m", target_is_directory=True)
    assert sorted(link_targets(tmp_path)) == sorted([key(tmp_path / "test_m" / "test_a"), key(tmp_path / "test_m")])
    assert os.path.isdir(tmp_path / "test_n" / "test_a" / "0")


def test_an_empty_parameter_list_is_told_by_its_values_not_its_id() -> None:
    from types import SimpleNamespace

    from _pytest.compat import NOTSET  # what pytest puts in the parameters of an empty parameter set

    from pytest_featviz.ownership import empty_parameters

    assert empty_parameters(SimpleNamespace(callspec=SimpleNamespace(params={"device": NOTSET})))  # type: ignore[arg-type]
    assert not empty_parameters(SimpleNamespace(callspec=SimpleNamespace(params={"device": "cpu"})))  # type: ignore[arg-type]
    assert not empty_parameters(SimpleNamespace())  # type: ignore[arg-type]


def test_a_module_or_class_holds_a_test_pytest_left_out_when_a_matching_callable_has_no_node() -> None:
    from types import ModuleType, SimpleNamespace

    from pytest_featviz.ownership import left_out

    class Retry:  # a decorator object: callable, no function
        def __call__(self) -> None:
            pass

    class TestHelper:
        __test__ = False

    module = ModuleType("test_m")
    module.test_f = Retry()  # type: ignore[attr-defined]
    module.test_data = [1, 2]  # type: ignore[attr-defined]
    module.TestHelper = TestHelper  # type: ignore[attr-defined]
    collector = SimpleNamespace(
        obj=module, funcnamefilter=lambda n: n.startswith("test"), classnamefilter=lambda n: n.startswith("Test")
    )
    assert left_out(collector, [])  # type: ignore[arg-type]
    assert not left_out(collector, [SimpleNamespace(name="test_f", originalname="test_f")])  # type: ignore[arg-type]


def test_the_owners_of_a_file_s_test_directories_are_found_by_lookup_not_by_comparing_every_test(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # each test directory was compared with every test of its file, sanitizing names each time: stale detection on a
    # file of 3200 parametrized tests took 45 s of every run
    tests = {f"test_p[{i}-x]": [f"t.py::test_p[{i}-x]"] for i in range(1000)}
    tests["test_q[NOTSET]"] = ["t.py::test_q[NOTSET]"]
    owners = Owners(tests)
    calls = []
    monkeypatch.setattr(goldenpath, "sanitize_name", lambda *args: calls.append(args) or "")
    assert owners.of("test_p[7-x]") == ["t.py::test_p[7-x]"]
    assert owners.of("test_p[7]") == ["t.py::test_p[7-x]"]  # the id's first part, as pytest-repeat adds one
    assert len(owners.of("test_p")) == 1000
    assert owners.of("test_q[cuda]") == owners.of("test_q") == ["t.py::test_q[NOTSET]"]
    assert owners.of("test_r") == []
    assert calls == []  # names were made safe once, when the index was built
