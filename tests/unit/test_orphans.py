"""orphans: goldens of deleted test files are those whose directory and whose recorded test file name the same
missing file; either reading alone never orphans a golden."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pytest_featviz.orphans import covers, find_orphans, key, recorded


def test_a_failed_collector_covers_its_own_files_only() -> None:
    assert covers("", "tests/test_a.py") and covers(".", "tests/test_a.py")
    assert covers("tests", "tests/test_a.py") and covers("tests/test_a.py::TestX", "tests/test_a.py")
    assert not covers("tests", "tests2/test_a.py") and not covers("tests/test_a.py", "tests/test_ab.py")


def _golden(root: Path, parts: str, record: object = None) -> Path:
    snapshot = root.joinpath(*parts.split("/"))
    snapshot.mkdir(parents=True)
    sidecar: dict[str, object] = {"format": 1}
    if record is not None:
        sidecar["test"] = {"file": record}
    (snapshot / "snapshot.json").write_text(json.dumps(sidecar))
    return snapshot


def test_the_record_is_joined_as_text_and_a_damaged_one_is_none(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "store", target_is_directory=True)
    snapshot = _golden(tmp_path / "link", "test_m/test_a/0", "../../../../test_m.py")
    # through the link the record names tmp_path/test_m.py, not store's parent's
    assert recorded(snapshot / "snapshot.json") == key(tmp_path / "test_m.py")
    for damaged in (3, "", ["x"]):
        (snapshot / "snapshot.json").write_text(json.dumps({"test": {"file": damaged}}))
        assert recorded(snapshot / "snapshot.json") is None
    (snapshot / "snapshot.json").write_text("[" * 100000 + "]" * 100000)
    assert recorded(snapshot / "snapshot.json") is None


def test_a_golden_is_orphaned_only_when_both_readings_name_the_same_missing_file(tmp_path: Path) -> None:
    root = tmp_path / "golden"
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_keep.py").write_text("")
    gone = _golden(root, "tests/test_gone/test_a/0", "../../../../../tests/test_gone.py")
    old = _golden(root, "tests/test_old/test_a/0")  # no record: written before it was
    elsewhere = _golden(root, "tests/test_moved/test_a/0", "../../../../../other/test_moved.py")
    kept = _golden(root, "tests/test_keep/test_a/0", "../../../../../tests/test_keep.py")
    unseen = _golden(root, "cuda/test_k/test_a/0", "../../../../cuda/test_k.py")  # no cuda/ directory on disk
    seen = ["tests/test_keep.py"]

    def file_dir(test_file: str) -> Path:
        return root.joinpath(*Path(test_file).with_suffix("").parts)

    found = find_orphans(root, tmp_path, seen, [], lambda snapshot: False, file_dir)
    assert found == [gone]
    assert not {old, elsewhere, kept, unseen} & set(found)
    # used in this run, or a collector over the directory failed, or nothing collected from there: not orphaned
    assert find_orphans(root, tmp_path, seen, [], lambda snapshot: snapshot == gone, file_dir) == []
    assert find_orphans(root, tmp_path, seen, ["tests"], lambda snapshot: False, file_dir) == []
    assert find_orphans(root, tmp_path, [], [], lambda snapshot: False, file_dir) == []
    # a golden root outside the rootdir: never
    assert find_orphans(root, tmp_path / "tests", seen, [], lambda snapshot: False, file_dir) == []
    assert os.path.isdir(gone)
