"""The golden lifecycle through real pytest runs, plain and under pytest-xdist (``-n 2``)."""

from __future__ import annotations

import json

import pytest

from integration.lifecycle import Lifecycle, run_lifecycle

# Two tests: under ``-n 2`` each worker runs one, so the summary only adds up if records travel from both workers.
SOURCE = """
import pytest

SCALE = 1.0


def build():
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 3, padding=1), nn.ReLU())
    with torch.no_grad():
        model[2].weight[:, :3] *= SCALE
    return model, torch.randn(1, 3, 20, 20, generator=torch.Generator().manual_seed(1))


def test_changing(feature_snapshot):
    model, x = build()
    feature_snapshot(model, x, layers=["0", "2"])


def test_stable(feature_snapshot):
    import torch
    from torch import nn

    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Tanh())
    feature_snapshot(model, torch.ones(1, 3, 9, 9), layers=["0"])
"""
# Half of the second conv's weights scaled: the first layer still matches, so the drift starts at layer '2'.
CHANGED = SOURCE.replace("SCALE = 1.0", "SCALE = 1.5")


@pytest.mark.parametrize("args", [(), ("-n", "2")], ids=["plain", "xdist"])
def test_lifecycle(featviz_pytester: pytest.Pytester, args: tuple[str, ...]) -> None:
    # Under xdist every run starts two workers that import torch; the two plain re-checks are left out there
    # (they are walked in the plain variant, and xdist changes nothing in them).
    lifecycle = run_lifecycle(
        featviz_pytester, SOURCE, CHANGED, args=args, tests=2, drifting_tests=1, drift_layer="2", rechecks=not args
    )
    # The one drifted snapshot was rewritten; the stable test's golden was left alone by the accepting update.
    accept = lifecycle.runs["accept"].stdout.str()
    assert "goldens: 0 created, 1 updated, 1 unchanged" in accept
    drift = lifecycle.runs["drift"].stdout.str()
    assert "2 snapshot(s) checked: 1 matched, 1 drifted (1 test(s), 1 layer(s)), 0 missing" in drift
    missing = lifecycle.runs["missing"].stdout.str()
    assert "2 snapshot(s) checked: 0 matched, 0 drifted (0 test(s), 0 layer(s)), 2 missing" in missing
    if args:
        assert "2 workers [2 items]" in missing  # really distributed


def test_single_snapshot_lifecycle_counts_one_created(featviz_pytester: pytest.Pytester) -> None:
    source = SOURCE.split("def test_stable")[0]
    lifecycle = run_lifecycle(featviz_pytester, source, source.replace("SCALE = 1.0", "SCALE = 0.5"), drift_layer="2")
    lifecycle.runs["create"].stdout.fnmatch_lines(["goldens: 1 created, 0 updated, 0 unchanged (in *golden)"])
    assert sorted(lifecycle.golden_files()) == [
        "test_subject/test_changing/0/0.png",
        "test_subject/test_changing/0/2.png",
        "test_subject/test_changing/0/snapshot.json",
    ]


def test_steps_can_be_walked_one_by_one(featviz_pytester: pytest.Pytester) -> None:
    source = SOURCE.split("def test_stable")[0]
    lifecycle = Lifecycle(featviz_pytester, source, source, module="test_other")
    lifecycle.missing()
    lifecycle.create()
    assert [name.split("/")[0] for name in lifecycle.golden_files()] == ["test_other"] * 3
    # A changed source that does not change the model is no drift: the drift step must notice.
    with pytest.raises(AssertionError):
        lifecycle.drift()


def _goldens_then_rerun(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, source: str, tests: int, change: tuple[str, str]
) -> pytest.RunResult:
    """Goldens made for ``source``'s ``tests`` tests, then a check run with the environment variable ``change`` set."""
    pytester.makepyfile(test_suite=source)
    pytester.runpytest("--featviz-update").assert_outcomes(passed=tests)
    monkeypatch.setenv(*change)
    return pytester.runpytest()


BATCH_SIZES = """
import os

import torch
from torch import nn

B = int(os.environ.get("FEATVIZ_BATCH", "1"))


def test_conv(feature_snapshot):
    torch.manual_seed(0)
    x = torch.rand(4, 3, 12, 12, generator=torch.Generator().manual_seed(1))[:B]  # item 0 the same for every B
    feature_snapshot(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), x, layers=["0"])


def test_lstm_hidden_state(feature_snapshot):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(50, 8), nn.LSTM(8, 12, num_layers=2, batch_first=True))
    tokens = torch.randint(0, 50, (4, 10), generator=torch.Generator().manual_seed(1))[:B]
    feature_snapshot(model, tokens, layers=["1+1+0"])  # (layers, B, hidden): batch axis 1


def test_sequence_first_transformer(feature_snapshot):
    torch.manual_seed(0)
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0), 2)
    x = torch.randn(10, 4, 8, generator=torch.Generator().manual_seed(1))[:, :B]  # (S, B, E)
    feature_snapshot(nn.Sequential(encoder), x, layers=["0.layers.0"])
"""


def test_a_check_with_another_batch_size_compares_item_0_whatever_the_batch_axis(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _goldens_then_rerun(featviz_pytester, monkeypatch, BATCH_SIZES, 3, ("FEATVIZ_BATCH", "4"))
    result.assert_outcomes(passed=3)  # not "shape changed from (2, 1, 12) to (2, 4, 12)"


TWO_SNAPSHOTS = """
import os

import torch
from torch import nn


def test_two(feature_snapshot):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    if os.environ.get("FEATVIZ_DRIFT"):
        with torch.no_grad():
            model[0].weight[:2] *= -1
    x = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    feature_snapshot(model, x, layers=["0"], name="first")
    feature_snapshot(model, x, layers=["1"], name="second")
"""


def test_the_summary_names_the_snapshots_a_drifted_test_never_reached(
    featviz_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = featviz_pytester.path / "job-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = _goldens_then_rerun(featviz_pytester, monkeypatch, TWO_SNAPSHOTS, 1, ("FEATVIZ_DRIFT", "1"))
    result.assert_outcomes(failed=1)
    sentence = (
        "1 golden snapshot(s) of the failing tests were not checked: a test stops at its first drifted, missing or"
        " unreadable snapshot (accept that drift, create or repair that golden, then run again)"
    )
    result.stdout.fnmatch_lines(
        [
            "1 snapshot(s) checked: 0 matched, 1 drifted (1 test(s), 1 layer(s)), 0 missing",
            f"{sentence}: golden/test_suite/test_two/second",
        ]
    )
    # the report and the job summary say it too: a reviewer who reads only the CI artifact learns the list of
    # drifts is not the whole change (only the terminal said so)
    report = featviz_pytester.path / "featviz-report"
    assert json.loads((report / "report.json").read_text())["unchecked"] == ["golden/test_suite/test_two/second"]
    assert f'<p class="unchecked">{sentence}: <code>golden/test_suite/test_two/second</code></p>' in (
        (report / "index.html").read_text()
    )
    assert f"{sentence}: `golden/test_suite/test_two/second`." in summary.read_text()
    monkeypatch.delenv("FEATVIZ_DRIFT")
    assert "were not checked" not in featviz_pytester.runpytest().stdout.str()
