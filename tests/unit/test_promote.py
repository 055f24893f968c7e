"""promote: a drift report's current renders copied into the golden directories (the report's own checks of what
it may read and write are tested end to end in tests/integration/test_promote.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_featviz import promote


def test_promote_copies_the_current_render_into_the_golden_dir(tmp_path: Path) -> None:
    current = tmp_path / "report" / "snapshots" / "t" / "current"
    current.mkdir(parents=True)
    sidecar = json.dumps({"layers": [{"name": "conv", "file": "conv.png"}]})
    (current / "snapshot.json").write_text(sidecar)
    (current / "conv.png").write_bytes(b"png")
    data = {"snapshots": [{"test_id": "t.py::a", "current": "snapshots/t/current", "golden_dir": "golden/t/a/0"}]}
    (tmp_path / "report" / "report.json").write_text(json.dumps(data))
    old = tmp_path / "golden" / "t" / "a" / "0"
    old.mkdir(parents=True)
    (old / "gone.png").write_bytes(b"old")
    (old / "snapshot.json").write_text(json.dumps({"layers": [{"name": "gone", "file": "gone.png"}]}))
    assert promote.promote(tmp_path / "report", tmp_path, select="nothing") == []
    assert promote.promote(tmp_path / "report", tmp_path) == [(old, True)]
    assert (old / "conv.png").read_bytes() == b"png" and (old / "snapshot.json").read_text() == sidecar
    assert not (old / "gone.png").exists()
    assert promote.promote(tmp_path / "report", tmp_path) == [(old, False)]  # again: nothing changes


def test_promote_never_writes_over_a_git_lfs_pointer(tmp_path: Path) -> None:
    current = tmp_path / "report" / "snapshots" / "t" / "current"
    current.mkdir(parents=True)
    (current / "snapshot.json").write_text(json.dumps({"layers": [{"name": "conv", "file": "conv.png"}]}))
    (current / "conv.png").write_bytes(b"png")
    data = {"snapshots": [{"test_id": "t.py::a", "current": "snapshots/t/current", "golden_dir": "golden/t/a/0"}]}
    (tmp_path / "report" / "report.json").write_text(json.dumps(data))
    golden = tmp_path / "golden" / "t" / "a" / "0"
    golden.mkdir(parents=True)
    pointer = b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 12\n"
    (golden / "conv.png").write_bytes(pointer)
    with pytest.raises(ValueError, match=r"conv\.png is a Git LFS pointer, not the file"):
        promote.promote(tmp_path / "report", tmp_path)
    assert (golden / "conv.png").read_bytes() == pointer
