"""repeats: the names pytest-repeat and pytest-flakefinder give the runs of a test, taken back to the test's own."""

from __future__ import annotations

import pytest

from pytest_featviz.repeats import node_id_without_repetition, without_repetition

TESTS = """
import pytest


def test_a():
    pass


@pytest.mark.parametrize("x", ["u", "a-b", "1-3"])
def test_p(x):
    pass


@pytest.mark.parametrize("x", [""])
def test_e(x):
    pass


class TestC:
    @pytest.mark.parametrize("x", ["u"])
    def test_q(self, x):
        pass


@pytest.mark.repeat(2)
def test_r():
    pass
"""


def _names(pytester: pytest.Pytester, *args: str) -> dict[str, str]:
    pytester.makepyfile(test_m=TESTS)
    items, _ = pytester.inline_genitems(*args)
    return {item.nodeid: without_repetition(item) for item in items}


def test_pytest_repeat_runs_are_named_as_the_test(pytester: pytest.Pytester) -> None:
    names = _names(pytester, "--count", "3")
    assert names["test_m.py::test_a[1-3]"] == names["test_m.py::test_a[3-3]"] == "test_a"
    assert names["test_m.py::test_p[u-2-3]"] == "test_p[u]"
    assert names["test_m.py::test_p[a-b-3-3]"] == "test_p[a-b]"  # an id of the test's own with a dash
    assert names["test_m.py::test_p[1-3-1-3]"] == "test_p[1-3]"  # one that looks like a run's id
    assert names["test_m.py::TestC::test_q[u-1-3]"] == "test_q[u]"
    assert names["test_m.py::test_r[2-2]"] == "test_r"  # the marker's count wins over --count
    assert names["test_m.py::test_e[-2-3]"] == "test_e[]"  # an empty id of the test's own stays
    assert len(names) == 3 + 9 + 3 + 2 + 3


def test_names_without_a_repeat_option_stay(pytester: pytest.Pytester) -> None:
    names = _names(pytester)
    assert names["test_m.py::test_a"] == "test_a"
    assert names["test_m.py::test_p[1-3]"] == "test_p[1-3]"
    assert names["test_m.py::test_r[1-2]"] == "test_r"  # the repeat marker alone repeats too
    assert names["test_m.py::test_e[]"] == "test_e[]"  # its golden stays where 0.1.0 wrote it


def test_flakefinder_runs_are_named_as_the_test(pytester: pytest.Pytester) -> None:
    names = _names(pytester, "--flake-finder", "--flake-runs", "2")
    assert names["test_m.py::test_a[0]"] == names["test_m.py::test_a[1]"] == "test_a"
    assert names["test_m.py::test_p[1-a-b]"] == "test_p[a-b]"
    assert names["test_m.py::TestC::test_q[0-u]"] == "test_q[u]"
    assert names["test_m.py::test_e[1-]"] == "test_e[]"


def test_both_plugins_at_once(pytester: pytest.Pytester) -> None:
    names = _names(pytester, "--flake-finder", "--flake-runs", "2", "--count", "2")
    assert names["test_m.py::test_p[1-u-2-2]"] == "test_p[u]"
    assert names["test_m.py::test_a[0-1-2]"] == "test_a"


def test_node_ids_keep_their_path_and_class(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_m=TESTS)
    items, _ = pytester.inline_genitems("--count", "2")
    item = next(i for i in items if i.nodeid == "test_m.py::TestC::test_q[u-2-2]")
    assert node_id_without_repetition(item, item.nodeid) == "test_m.py::TestC::test_q[u]"
    assert node_id_without_repetition(item, "sub/test_m.py::TestC::test_q[u-2-2]") == "sub/test_m.py::TestC::test_q[u]"
    plain = next(i for i in items if i.nodeid == "test_m.py::test_p[1-3-1-2]")
    assert node_id_without_repetition(plain, "elsewhere") == "elsewhere"  # a form that does not end with its name
