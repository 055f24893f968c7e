"""promote: a drift report's current renders copied into the golden directories (the report's own checks of what
it may read and write are tested end to end in tests/integration/test_promote.py)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pytest_featviz import golden, png, promote
from pytest_featviz.golden import LayerGolden, SnapshotGolden
from pytest_featviz.records import display_path
from pytest_featviz.render import build_mosaic
from pytest_featviz.reportcheck import Refused, current_render

TILE = (4, 5)
CHANNELS = 3
CURRENT = "snapshots/t/current"


def _render(seed: int, names: tuple[str, ...] = ("conv",)) -> tuple[str, dict[str, bytes]]:
    """A sound render of one snapshot: its sidecar text and its pictures by file name, as a run writes them."""
    layers, pictures = [], {}
    for offset, name in enumerate(names):
        tiles = np.random.default_rng(seed + offset).integers(0, 255, size=(CHANNELS, *TILE), dtype=np.uint8)
        pictures[f"{name}.png"] = png.encode(build_mosaic(tiles))
        layers.append(
            LayerGolden(
                name=name,
                file=f"{name}.png",
                shape=(1, CHANNELS, *TILE),
                tile_shape=TILE,
                channels=tuple(range(CHANNELS)),
                frames=((0.0, 1.0),) * CHANNELS,
                stats=((0.5, 0.1, 0.0, 1.0),) * CHANNELS,
                sha256=golden.sha256_hex(pictures[f"{name}.png"]),
            )
        )
    return golden.sidecar_text(SnapshotGolden("minmax", 8, tuple(layers))), pictures


def _report(tmp_path: Path, sidecar: str | bytes, pictures: dict[str, bytes]) -> Path:
    """A report directory in ``tmp_path`` whose one snapshot (``t.py::a``, golden ``golden/t/a/0``) has this render."""
    report_dir = tmp_path / "report"
    current = report_dir / CURRENT
    current.mkdir(parents=True)
    data = sidecar if isinstance(sidecar, bytes) else sidecar.encode("utf-8")
    (current / "snapshot.json").write_bytes(data)
    for name, picture in pictures.items():
        (current / name).write_bytes(picture)
    entry = {"test_id": "t.py::a", "current": CURRENT, "golden_dir": "golden/t/a/0"}
    (report_dir / "report.json").write_text(json.dumps({"snapshots": [entry]}))
    return report_dir


def _promoted(report_dir: Path, root: Path) -> list[tuple[Path, bool]]:
    """What :func:`promote.promote` wrote, as absolute paths: it gives them as its messages show them, relative to the
    working directory where that is shorter (so where the checkout lies would decide what a test sees)."""
    return [(Path(os.path.abspath(path)), changed) for path, changed in promote.promote(report_dir, root)]


def test_promote_copies_the_current_render_into_the_golden_dir(tmp_path: Path) -> None:
    sidecar, pictures = _render(1)
    report_dir = _report(tmp_path, sidecar, pictures)
    old = tmp_path / "golden" / "t" / "a" / "0"
    old.mkdir(parents=True)
    gone_sidecar, gone = _render(2, ("gone",))
    (old / "gone.png").write_bytes(gone["gone.png"])
    (old / "snapshot.json").write_text(gone_sidecar)
    assert promote.promote(report_dir, tmp_path, select="nothing") == []
    assert _promoted(report_dir, tmp_path) == [(old, True)]
    assert (old / "conv.png").read_bytes() == pictures["conv.png"] and (old / "snapshot.json").read_text() == sidecar
    assert not (old / "gone.png").exists()
    assert _promoted(report_dir, tmp_path) == [(old, False)]  # again: nothing changes
    assert golden.read_sidecar(old) is not None  # what promote wrote reads back as a golden


def test_promote_never_writes_over_a_git_lfs_pointer(tmp_path: Path) -> None:
    report_dir = _report(tmp_path, *_render(1))
    old = tmp_path / "golden" / "t" / "a" / "0"
    old.mkdir(parents=True)
    pointer = b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 12\n"
    (old / "conv.png").write_bytes(pointer)
    with pytest.raises(ValueError, match=r"conv\.png is a Git LFS pointer, not the file"):
        promote.promote(report_dir, tmp_path)
    assert (old / "conv.png").read_bytes() == pointer


def _layers(sidecar: str, change: Callable[[list[dict[str, object]]], None]) -> str:
    data = json.loads(sidecar)
    change(data["layers"])
    return json.dumps(data)


def _swap_files(layers: list[dict[str, object]]) -> None:
    layers[0]["file"], layers[1]["file"] = layers[1]["file"], layers[0]["file"]


# A current render whose sidecar or pictures a golden's read refuses: promote wrote it over a sound golden, which
# every later check then refused (and --featviz-update would not write over one of format 2).
DAMAGED_RENDERS: list[tuple[str, Callable[[str], str], str]] = [
    (
        "format 2",
        lambda text: text.replace('"format": 1', '"format": 2'),
        "sidecar snapshot.json has format 2, newer than this pytest-featviz reads (1); upgrade pytest-featviz",
    ),
    (
        "wrong sha256",
        lambda text: _layers(text, lambda layers: layers[0].update(sha256="0" * 64)),
        "picture conv.png does not match its sidecar (edited, damaged or half-merged)",
    ),
    (
        "a layer listed twice",
        lambda text: _layers(text, lambda layers: layers[1].update(name="conv")),
        "sidecar snapshot.json is malformed (layer 'conv': listed twice)",
    ),
    ("swapped files", lambda text: _layers(text, _swap_files), "picture relu.png does not match its sidecar"),
    (
        "a lone surrogate in test.file",
        lambda text: text.replace('  "layers": [', '  "test": {"file": "t_\\udc80.py"},\n  "layers": [', 1),
        "sidecar snapshot.json is malformed (test.file holds a lone UTF-16 surrogate: no text)",
    ),
    (
        "no format",
        lambda text: text.replace('  "format": 1,\n', ""),
        "sidecar snapshot.json has no format version",
    ),
]


@pytest.mark.parametrize(
    ("change", "reason"), [case[1:] for case in DAMAGED_RENDERS], ids=[c[0] for c in DAMAGED_RENDERS]
)
def test_a_render_a_golden_read_would_refuse_is_not_promoted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: Callable[[str], str], reason: str
) -> None:
    sidecar, pictures = _render(1, ("conv", "relu"))
    damaged = change(sidecar)
    assert damaged != sidecar
    _report(tmp_path, damaged, pictures)
    old = tmp_path / "golden" / "t" / "a" / "0"
    old.mkdir(parents=True)
    kept_sidecar, kept = _render(7, ("conv", "relu"))
    (old / "snapshot.json").write_text(kept_sidecar)
    for name, picture in kept.items():
        (old / name).write_bytes(picture)
    monkeypatch.chdir(tmp_path)
    promotion = promote.promote_report(Path("report"), Path("."))
    assert promotion.written == ()
    [refusal] = promotion.refused
    assert refusal.snapshot == "snapshots[0] ('t.py::a')"
    kind, file, why = reason.split(" ", 2)  # the message names the file, relative to where promote runs
    shown = f"golden {kind} {Path('report', 'snapshots', 't', 'current', file)} {why}"
    assert refusal.reason.startswith(f"its current render would not read back as a golden: {shown}"), refusal.reason
    assert (old / "snapshot.json").read_text() == kept_sidecar
    assert {name: (old / name).read_bytes() for name in kept} == kept


def test_a_render_sidecar_with_a_utf8_byte_order_mark_is_promoted_as_a_golden_would_read(tmp_path: Path) -> None:
    sidecar, pictures = _render(1)
    report_dir = _report(tmp_path, b"\xef\xbb\xbf" + sidecar.encode("utf-8"), pictures)
    assert current_render(report_dir, CURRENT) == (sidecar, pictures)
    old = tmp_path / "golden" / "t" / "a" / "0"
    assert _promoted(report_dir, tmp_path) == [(old, True)]
    assert (old / "snapshot.json").read_text(encoding="utf-8") == sidecar  # written as the writer writes it


def test_a_utf16_render_sidecar_gets_the_hint_a_golden_gets(tmp_path: Path) -> None:
    sidecar, pictures = _render(1)
    report_dir = _report(tmp_path, sidecar.encode("utf-16"), pictures)
    with pytest.raises(Refused) as refused:
        current_render(report_dir, CURRENT)
    assert str(refused.value) == (
        "its current render would not read back as a golden: golden sidecar"
        f" {display_path(report_dir / CURRENT / 'snapshot.json')}"
        " is not UTF-8: it is UTF-16, as Windows PowerShell's > and Out-File save text; save it as UTF-8, or re-create"
        " it with --featviz-update"
    )
