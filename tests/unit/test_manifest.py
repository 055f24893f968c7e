"""Unit tests of pytest_featviz.manifest: the files the report wrote, and only those, removed."""

from __future__ import annotations

from pathlib import Path

from pytest_featviz import manifest


def test_remove_stale_removes_only_listed_files(tmp_path: Path) -> None:
    ours = tmp_path / "snapshots" / "t" / "diff-a.png"
    ours.parent.mkdir(parents=True)
    ours.write_bytes(b"x")
    theirs = tmp_path / "notes.txt"
    theirs.write_text("keep")
    outside = tmp_path.parent / f"{tmp_path.name}-outside.txt"
    outside.write_text("keep")
    manifest._record(tmp_path, [ours])
    (tmp_path / manifest.MANIFEST).open("a").write(f"../{outside.name}\n")
    assert manifest.remove_stale(tmp_path) == [ours.resolve()]
    assert not ours.exists() and not (tmp_path / "snapshots").exists()
    assert theirs.read_text() == "keep" and outside.read_text() == "keep"
    assert not (tmp_path / manifest.MANIFEST).exists()
    assert manifest.remove_stale(tmp_path) == []
