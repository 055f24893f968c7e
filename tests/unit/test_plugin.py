"""plugin: the options the printed commands repeat, so that a pasted command finds the test the run found."""

from __future__ import annotations

import pytest

from pytest_featviz.plugin import _collecting_options


@pytest.mark.parametrize(
    ("args", "repeated"),
    [
        (["-p", "featviz", "--disable-plugin-autoload", "-q"], ["-p", "featviz", "--disable-plugin-autoload"]),
        (["-pno:randomly", "-x", "tests"], ["-pno:randomly"]),
        (
            ["--import-mode", "importlib", "--import-mode=append"],
            ["--import-mode", "importlib", "--import-mode=append"],
        ),
        (["--doctest-modules", "tests"], ["--doctest-modules"]),
        (["-v", "--pdb", "--", "-p", "x"], []),  # nothing after --
        (["-p"], []),  # a -p with no value (pytest refuses it anyway)
        (["-o", "python_functions=check_*", "-o", "junit_family=xunit1"], ["-o", "python_functions=check_*"]),
        (
            ["-opython_files=t_*.py", "--override-ini=testpaths=x", "-ojunit_family=x"],
            ["-opython_files=t_*.py", "--override-ini=testpaths=x"],
        ),
        (["--override-ini", "python_classes=Check"], ["--override-ini", "python_classes=Check"]),
    ],
)
def test_the_options_without_which_a_test_is_not_found_are_repeated(args: list[str], repeated: list[str]) -> None:
    assert _collecting_options(args) == repeated
