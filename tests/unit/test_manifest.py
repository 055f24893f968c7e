"""Unit tests of pytest_featviz.manifest: the files the report wrote, and only those, removed."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_featviz import manifest


def test_remove_stale_removes_only_listed_files(tmp_path: Path) -> None:
    ours = tmp_path / "snapshots" / "t" / "diff-a.png"
    ours.parent.mkdir(parents=True)
    manifest.write_recorded(tmp_path, ours, b"x")
    theirs = tmp_path / "notes.txt"
    theirs.write_text("keep")
    outside = tmp_path.parent / f"{tmp_path.name}-outside.txt"
    outside.write_text("keep")
    (tmp_path / manifest.MANIFEST).open("a").write(f"../{outside.name}\n")
    assert manifest.remove_stale(tmp_path) == [ours.resolve()]
    assert not ours.exists() and not (tmp_path / "snapshots").exists()
    assert theirs.read_text() == "keep" and outside.read_text() == "keep"
    assert not (tmp_path / manifest.MANIFEST).exists()
    assert manifest.remove_stale(tmp_path) == []


def test_a_file_put_in_place_of_one_the_report_wrote_is_neither_removed_nor_overwritten(tmp_path: Path) -> None:
    # a site build wrote its index.html into a report directory whose manifest listed the report's: the next
    # session removed the user's page, as the manifest named its path
    index, diff = tmp_path / "index.html", tmp_path / "snapshots" / "t" / "diff-a.png"
    diff.parent.mkdir(parents=True)
    manifest.write_recorded(tmp_path, index, b"<html>report</html>")
    manifest.write_recorded(tmp_path, diff, b"first")
    manifest.write_ours(tmp_path, diff, b"second")  # rewritten by the report itself: still its own
    index.write_text("<html>my docs</html>")
    with pytest.raises(FileExistsError, match="a file pytest-featviz did not write is in the way") as refused:
        manifest.write_ours(tmp_path, index, b"<html>report</html>")
    # the way out is named: the report's own page edited since is refused too, and moving it away clears it
    assert "nor one of its own changed since it wrote it): move it away or delete it, or choose" in str(refused.value)
    assert manifest.remove_stale(tmp_path) == [diff.resolve()]
    assert index.read_text() == "<html>my docs</html>"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.html"]  # the manifest goes: nothing of ours is left


def test_a_manifest_written_before_hashes_were_recorded_still_clears_its_files(tmp_path: Path) -> None:
    ours = tmp_path / "report.json"
    ours.write_text("{}")
    (tmp_path / manifest.MANIFEST).write_text("report.json\n", encoding="utf-8")
    assert manifest.remove_stale(tmp_path) == [ours.resolve()]
    assert not tmp_path.exists()


def test_removing_one_folder_reads_only_its_own_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a rerun of each of 240 drifted tests resolved every file of the report once per test: 48 s of a run
    for test in range(30):
        for name in ("diff-0.png", "current/0.png"):
            path = tmp_path / "snapshots" / f"t{test}" / "0" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            manifest.write_recorded(tmp_path, path, b"picture")
    resolved: list[Path] = []
    real = Path.resolve

    def counted(self: Path, strict: bool = False) -> Path:
        resolved.append(self)
        return real(self, strict)

    monkeypatch.setattr(Path, "resolve", counted)
    removed = manifest.remove_listed(tmp_path, tmp_path / "snapshots" / "t7" / "0")
    assert sorted(p.name for p in removed) == ["0.png", "diff-0.png"]
    assert not (tmp_path / "snapshots" / "t7").exists() and (tmp_path / "snapshots" / "t17" / "0").is_dir()
    assert len(resolved) < 10  # the report and the folder, and the folder's two files: not the other 58
