"""Damaged goldens and failing writes, at the level of ``golden``, ``goldenpicture`` and ``goldenwrite``: every fault
is a ``GoldenError`` naming the path, and a failed or interrupted write leaves the old snapshot as it was."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
import stat
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_featviz import durable, golden, goldenpicture, goldenwrite, png
from pytest_featviz.golden import GoldenError, LayerGolden, SnapshotGolden
from pytest_featviz.render import build_mosaic, mosaic_size

TILE = (4, 5)
CHANNELS = 3


def _snapshot(seed: int) -> tuple[SnapshotGolden, bytes]:
    tiles = np.random.default_rng(seed).integers(0, 255, size=(CHANNELS, *TILE), dtype=np.uint8)
    picture = png.encode(build_mosaic(tiles))
    layer = LayerGolden(
        name="conv",
        file="conv.png",
        shape=(1, CHANNELS, *TILE),
        tile_shape=TILE,
        channels=tuple(range(CHANNELS)),
        frames=((0.0, 1.0),) * CHANNELS,
        stats=((0.5, 0.1, 0.0, 1.0),) * CHANNELS,
        sha256=golden.sha256_hex(picture),
    )
    return SnapshotGolden("minmax", 8, (layer,)), picture


def _write(directory: Path, seed: int) -> SnapshotGolden:
    stored, png = _snapshot(seed)
    goldenwrite.write_files(directory, golden.sidecar_text(stored), {"conv.png": png})
    return stored


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _set_sha(directory: Path, data: bytes) -> LayerGolden:
    """Replace the picture by ``data`` and make the sidecar agree, so the check after the hash is reached."""
    (directory / "conv.png").write_bytes(data)
    sidecar = json.loads((directory / golden.SIDECAR).read_text())
    sidecar["layers"][0]["sha256"] = golden.sha256_hex(data)
    (directory / golden.SIDECAR).write_text(json.dumps(sidecar))
    stored = golden.read_sidecar(directory)
    assert stored is not None
    return stored.layers[0]


def _png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return png.SIGNATURE + chunk


@pytest.fixture
def snap(tmp_path: Path) -> Path:
    directory = tmp_path / "golden" / "test_m" / "test_x" / "0"
    _write(directory, seed=0)
    return directory


def test_a_sound_golden_reads_back(snap: Path) -> None:
    stored = golden.read_sidecar(snap)
    assert stored is not None
    mosaic = goldenpicture.read_layer(snap, stored.layers[0], 8)
    assert mosaic.shape == (2 * (TILE[0] + 1) - 1, 2 * (TILE[1] + 1) - 1)


def test_header_claiming_enormous_size_is_refused_before_decoding(snap: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layer = _set_sha(snap, _png_header(200_000, 100_000) + b"\0" * 64)

    def no_decoding(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("Pillow must not be asked to open this file")

    monkeypatch.setattr(goldenpicture.Image, "open", no_decoding)
    with pytest.raises(GoldenError, match=r"claims 200000x100000 pixels.*refusing to decode") as info:
        goldenpicture.read_layer(snap, layer, 8)
    assert str(snap / "conv.png") in str(info.value)


def test_not_a_png(snap: Path) -> None:
    stored = golden.read_sidecar(snap)
    assert stored is not None
    (snap / "conv.png").write_bytes(b"GIF89a" + b"\0" * 100)
    with pytest.raises(GoldenError, match=r"conv\.png is not a PNG \(damaged, truncated or replaced\)"):
        goldenpicture.read_layer(snap, stored.layers[0], 8)


@pytest.mark.parametrize("converted", ["commit", "checkout", "both"])
def test_a_png_git_converted_as_text_says_so(snap: Path, converted: str) -> None:
    # `*.png text` in .gitattributes: CR LF made LF on commit, a lone LF made CR LF on checkout. It read as "not a
    # PNG (damaged, truncated or replaced)", whose fix (re-create it) Git undid on the next commit or checkout.
    stored = golden.read_sidecar(snap)
    assert stored is not None
    data = (snap / "conv.png").read_bytes()
    committed = data.replace(b"\r\n", b"\n")  # LF only
    checked_out = re.sub(rb"(?<!\r)\n", b"\r\n", data)
    mangled = {"commit": committed, "checkout": checked_out, "both": committed.replace(b"\n", b"\r\n")}[converted]
    (snap / "conv.png").write_bytes(mangled)
    with pytest.raises(
        GoldenError, match=r"conv\.png had its line endings converted by Git as if it were text"
    ) as info:
        goldenpicture.read_layer(snap, stored.layers[0], 8)
    assert "add `*.png binary` to .gitattributes" in str(info.value)
    # converted on commit, the commit holds it: checking it out again cannot help; converted on checkout, it may
    # (or the commit holds it converted too, and looks the same: "both")
    message = str(info.value)
    assert ("check the pictures out again" in message) == (converted != "commit")
    # the hint the failing test replaces with the exact command (it was said twice for a commit-side conversion)
    assert message.endswith("; re-create it with --featviz-update")


@pytest.mark.parametrize("saved", ["optimize", "compress_level=1", "text chunk"])
def test_a_golden_picture_re_encoded_with_its_own_pixels_still_reads(snap: Path, saved: str) -> None:
    # An image optimizer (a bot's pull request, a pre-commit hook) re-saves PNGs losslessly: other bytes, the same
    # pixels. It read as "does not match its sidecar", and an update re-created it without comparing anything.
    from PIL import Image, PngImagePlugin

    stored = golden.read_sidecar(snap)
    assert stored is not None
    original = goldenpicture.read_layer(snap, stored.layers[0], 8)
    with Image.open(snap / "conv.png") as image:
        image.load()
    options: dict[str, Any] = {"optimize": True}
    if saved == "compress_level=1":
        options = {"compress_level": 1}
    elif saved == "text chunk":
        info = PngImagePlugin.PngInfo()
        info.add_text("Software", "optipng")
        options = {"pnginfo": info}
    image.save(snap / "conv.png", **options)
    assert golden.sha256_hex((snap / "conv.png").read_bytes()) != stored.layers[0].sha256
    assert np.array_equal(goldenpicture.read_layer(snap, stored.layers[0], 8), original)
    # other pixels, re-saved the same way: not the golden's picture
    changed = np.array(image)
    changed[0, 0] ^= 1
    Image.fromarray(changed).save(snap / "conv.png", **options)
    with pytest.raises(GoldenError, match="does not match its sidecar"):
        goldenpicture.read_layer(snap, stored.layers[0], 8)


def test_truncated_png_does_not_match_its_sidecar(snap: Path) -> None:
    stored = golden.read_sidecar(snap)
    assert stored is not None
    data = (snap / "conv.png").read_bytes()
    (snap / "conv.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(GoldenError, match="does not match its sidecar"):
        goldenpicture.read_layer(snap, stored.layers[0], 8)


def test_truncated_png_with_a_matching_sidecar_is_not_readable(snap: Path) -> None:
    data = (snap / "conv.png").read_bytes()
    layer = _set_sha(snap, data[: len(data) // 2])
    with pytest.raises(GoldenError, match="is not a readable PNG"):
        goldenpicture.read_layer(snap, layer, 8)


def test_wrong_geometry(snap: Path) -> None:
    layer = _set_sha(snap, png.encode(np.zeros((5, 7), dtype=np.uint8)))
    with pytest.raises(GoldenError, match=r"is 7x5 pixels; its sidecar expects 11x9"):
        goldenpicture.read_layer(snap, layer, 8)


def test_pictures_without_sidecar(snap: Path) -> None:
    (snap / golden.SIDECAR).unlink()
    with pytest.raises(GoldenError, match=r"has pictures but no sidecar snapshot\.json"):
        golden.read_sidecar(snap)
    for picture in snap.glob("*.png"):  # renamed by hand: still its pictures, as an update and a prune take them
        picture.rename(picture.with_suffix(".PNG"))
    with pytest.raises(GoldenError, match=r"has pictures but no sidecar snapshot\.json"):
        golden.read_sidecar(snap)


def _edited(snap: Path, old: str, new: str) -> None:
    path = snap / golden.SIDECAR
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


@pytest.fixture
def token_snap(tmp_path: Path) -> Path:
    """A token image's snapshot, with the per-feature statistics such a golden keeps."""
    stored, picture = _snapshot(0)
    layer = dataclasses.replace(
        stored.layers[0], channels=(0,), frames=((0.0, 1.0),), stats=((0.5, 0.1, 0.0, 1.0),), tile_shape=(12, 5),
        shape=(1, 12, 5), layout="token-image", features=(0, 1, 2), feature_stats=((0.1, 0.2), (0.3, 0.4), (0.5, 0.6)),
    )  # fmt: skip
    picture = png.encode(np.zeros((12, 5), dtype=np.uint8))
    layer = dataclasses.replace(layer, sha256=golden.sha256_hex(picture))
    directory = tmp_path / "golden" / "snap"
    goldenwrite.write_files(
        directory, golden.sidecar_text(SnapshotGolden("minmax", 8, (layer,))), {"conv.png": picture}
    )
    return directory


def test_a_token_image_s_feature_statistics_survive_the_sidecar(token_snap: Path) -> None:
    stored = golden.read_sidecar(token_snap)
    assert stored is not None
    assert stored.layers[0].features == (0, 1, 2)
    assert stored.layers[0].feature_stats_array().tolist() == [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]
    text = (token_snap / golden.SIDECAR).read_text()
    assert '        "index": [0, 1, 2],\n        "mean": [0.1, 0.3, 0.5],\n        "std": [0.2, 0.4, 0.6]\n' in text


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('"mean": [0.1', '"mean": [NaN', "a feature's statistics are not finite numbers"),
        ('"std": [0.2', '"std": [-0.2', "a feature's std is negative"),
        ('"index": [0, 1', '"index": [0, 0', "feature indices negative or repeated"),
        ('"index": [0, 1, 2]', '"index": [0, 1]', "features: 2 indices, 3 means, 3 stds"),
        ('"features": {', '"features": [], "was": {', "TypeError"),
        ('"index": [0, 1, 2]', '"index": [0, 0.5, 2]', "an index that is no whole number"),
        ('"index": [0, 1, 2]', '"index": [0, true, 2]', "an index that is no whole number"),
        ('"index": [0, 1, 2],', '"index": [], "was": [0, 1, 2],', "features: 0 indices"),
    ],
)
def test_damaged_feature_statistics_are_malformed(token_snap: Path, old: str, new: str, message: str) -> None:
    _edited(token_snap, old, new)
    with pytest.raises(GoldenError, match=rf"golden sidecar .* is malformed \(.*{message}"):
        golden.read_sidecar(token_snap)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "is not valid JSON"),
        (
            '{\n<<<<<<< HEAD\n  "format": 1,\n=======\n  "format": 1,\n>>>>>>> feature\n}\n',
            "holds Git merge-conflict markers: both branches changed this snapshot; resolve it by re-creating the"
            " golden with --featviz-update",
        ),
        ('{"note": "<<<<<<< not a marker mid-line"', "is not valid JSON"),
        ('{"format": 1, "normalize": "minmax"}', "is malformed"),
        ("[1, 2]", "is not a JSON object"),
        ('{"format": 99, "layers": []}', r"has format 99, newer than this pytest-featviz reads \(1\)"),
        # a merge resolved by hand that kept both lines: json reads the last, which asked for an upgrade that cannot
        # help, and --featviz-update refused the same way
        ('{"format": 1, "format": 2, "layers": []}', r"is malformed \(key 'format' appears twice in one object\)"),
        ('{"format": 1, "layers": [{"name": "a", "name": "b"}]}', r"is malformed \(key 'name' appears twice"),
        (
            '{"format": 1, "normalize": "minmax", "bit_depth": 8, "layers": [{"name": "x", "file": "../x.png",'
            ' "sha256": "", "shape": [1], "tile": [1, 1], "channels": [{"index": 0, "range": [0, 1], "mean": 0,'
            ' "std": 0, "min": 0, "max": 0}]}]}',
            "names a layer file outside its directory",
        ),
    ],
)
def test_bad_sidecar(snap: Path, text: str, message: str) -> None:
    (snap / golden.SIDECAR).write_text(text)
    with pytest.raises(GoldenError, match=message) as info:
        golden.read_sidecar(snap)
    assert str(snap / golden.SIDECAR) in str(info.value)


def test_a_file_where_the_golden_directory_should_be(tmp_path: Path) -> None:
    (tmp_path / "golden").write_text("not a directory")
    directory = tmp_path / "golden" / "test_m" / "test_x" / "0"
    hint = f"; {tmp_path / 'golden'} is a file where pytest-featviz keeps a golden directory: move it away or delete it"
    with pytest.raises(GoldenError, match="cannot read golden sidecar") as info:
        golden.read_sidecar(directory)
    assert hint in str(info.value) and not info.value.recreatable  # --featviz-update cannot help
    stored, picture = _snapshot(1)
    with pytest.raises(GoldenError, match=f"cannot write golden snapshot {directory}") as info:
        goldenwrite.write_files(directory, golden.sidecar_text(stored), {"conv.png": picture})
    assert hint in str(info.value)
    assert (tmp_path / "golden").read_text() == "not a directory"


def test_rewrite_switches_the_whole_snapshot(snap: Path) -> None:
    stored, png = _snapshot(1)
    changed = goldenwrite.write_files(snap, golden.sidecar_text(stored), {"conv.png": png})
    assert changed == [snap / "conv.png", snap / golden.SIDECAR]
    assert golden.read_sidecar(snap) == stored
    assert goldenpicture.read_layer(snap, stored.layers[0], 8).shape == (9, 11)
    assert sorted(p.name for p in snap.parent.iterdir()) == ["0"]  # no hidden leftovers


def test_rewrite_keeps_files_that_are_not_ours(snap: Path) -> None:
    (snap / "NOTES.md").write_text("why this golden changed in May")
    (snap / ".gitattributes").write_text("*.png binary\n")
    os.symlink("NOTES.md", snap / "README.md")
    stored, picture = _snapshot(1)
    goldenwrite.write_files(snap, golden.sidecar_text(stored), {"conv.png": picture})
    assert golden.read_sidecar(snap) == stored
    assert sorted(p.name for p in snap.iterdir()) == [
        ".gitattributes",
        "NOTES.md",
        "README.md",
        "conv.png",
        "snapshot.json",
    ]
    assert (snap / "NOTES.md").read_text() == "why this golden changed in May"
    assert os.readlink(snap / "README.md") == "NOTES.md"  # the link itself, not a copy of its target


def test_folders_that_hold_no_golden_move_with_the_snapshot_and_it_still_switches_whole(snap: Path) -> None:
    """Any folder in a snapshot directory (``.ipynb_checkpoints``, someone's notes, a link to a folder) made its
    writes file by file: a run killed between them left new pictures beside the old sidecar, and temporary files
    that nothing removed. Such folders are copied into the new snapshot, which switches in as a whole."""
    (snap / ".ipynb_checkpoints").mkdir()
    (snap / ".ipynb_checkpoints" / "look-checkpoint.ipynb").write_text("{}")
    (snap / "notes" / "deeper").mkdir(parents=True)
    (snap / "notes" / "deeper" / "why.md").write_text("May")
    os.symlink("notes", snap / "linked-notes")
    (snap / "figures.png").mkdir()  # a folder, named like a picture
    (snap / "figures.png" / "a.txt").write_text("kept")
    os.symlink("notes", snap / "linked.png")
    inode = snap.stat().st_ino
    stored, picture = _snapshot(1)
    goldenwrite.write_files(snap, golden.sidecar_text(stored), {"conv.png": picture})
    assert snap.stat().st_ino != inode  # switched as a whole, not file by file
    assert golden.read_sidecar(snap) == stored
    assert (snap / ".ipynb_checkpoints" / "look-checkpoint.ipynb").read_text() == "{}"
    assert (snap / "notes" / "deeper" / "why.md").read_text() == "May"
    assert os.readlink(snap / "linked-notes") == "notes"
    assert (snap / "figures.png" / "a.txt").read_text() == "kept" and os.readlink(snap / "linked.png") == "notes"
    assert sorted(p.name for p in snap.parent.iterdir()) == ["0"]  # no hidden leftovers


def test_a_snapshot_directory_holding_another_golden_is_written_file_by_file(snap: Path) -> None:
    """Goldens nested in a snapshot directory (test and file names that mirror each other's golden paths) are never
    moved or copied by a switch of the outer one: it is rewritten file by file, sidecar last."""
    nested = snap / "test_y" / "0"
    nested_golden = _write(nested, seed=0)
    inode = snap.stat().st_ino
    stored, picture = _snapshot(1)
    goldenwrite.write_files(snap, golden.sidecar_text(stored), {"conv.png": picture})
    assert snap.stat().st_ino == inode
    assert golden.read_sidecar(snap) == stored and golden.read_sidecar(nested) == nested_golden


def test_a_picture_renamed_to_upper_case_png_is_replaced_not_left_beside_the_new_one(snap: Path) -> None:
    # conv.PNG stayed as "not ours" beside the rewritten conv.png: a pair a case-insensitive checkout makes one file
    (snap / "conv.png").rename(snap / "conv.PNG")
    sidecar = json.loads((snap / golden.SIDECAR).read_text())
    sidecar["layers"][0]["file"] = "conv.PNG"
    (snap / golden.SIDECAR).write_text(json.dumps(sidecar))
    stored, picture = _snapshot(1)
    goldenwrite.write_files(snap, golden.sidecar_text(stored), {"conv.png": picture})
    assert sorted(p.name for p in snap.iterdir()) == ["conv.png", "snapshot.json"]


def test_unchanged_rewrite_writes_nothing(snap: Path) -> None:
    stamps = {p.name: p.stat().st_mtime_ns for p in snap.iterdir()}
    inode = snap.stat().st_ino
    stored, png = _snapshot(0)
    assert goldenwrite.write_files(snap, golden.sidecar_text(stored), {"conv.png": png}) == []
    assert {p.name: p.stat().st_mtime_ns for p in snap.iterdir()} == stamps
    assert snap.stat().st_ino == inode


def test_kept_picture_keeps_its_mtime_and_dropped_layer_goes(snap: Path) -> None:
    old, _ = _snapshot(0)
    extra_png = png.encode(np.zeros((4, 5), dtype=np.uint8))
    extra = LayerGolden(
        "head", "head.png", (1, 1, 4, 5), (4, 5), (0,), ((0.0, 1.0),), ((0, 0, 0, 0),), golden.sha256_hex(extra_png)
    )
    os.utime(snap / "conv.png", ns=(1_000_000_000, 1_000_000_000))
    changed = goldenwrite.write_files(
        snap, golden.sidecar_text(SnapshotGolden("minmax", 8, (*old.layers, extra))), {"head.png": extra_png}
    )
    assert changed == [snap / "head.png", snap / golden.SIDECAR]
    assert (snap / "conv.png").stat().st_mtime_ns == 1_000_000_000  # copied into the new snapshot with its mtime
    assert sorted(p.name for p in snap.iterdir()) == ["conv.png", "head.png", "snapshot.json"]
    goldenwrite.write_files(snap, golden.sidecar_text(old), {})
    assert sorted(p.name for p in snap.iterdir()) == ["conv.png", "snapshot.json"]


def test_a_re_created_picture_leaves_the_unchanged_sidecar_s_mtime(snap: Path) -> None:
    # a damaged picture re-created with the very bytes its sidecar records: the sidecar got a new mtime all the same
    stored, picture = _snapshot(0)
    os.utime(snap / golden.SIDECAR, ns=(1_000_000_000, 1_000_000_000))
    (snap / "conv.png").write_bytes(b"damaged")
    assert goldenwrite.write_files(snap, golden.sidecar_text(stored), {"conv.png": picture}) == [snap / "conv.png"]
    assert (snap / golden.SIDECAR).stat().st_mtime_ns == 1_000_000_000


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_a_rewrite_keeps_the_permissions_of_what_it_replaces(snap: Path) -> None:
    # under umask 077, rewriting a drifted snapshot turned a shared 0755 folder into 0700 and its files into 0600
    os.chmod(snap, 0o750)
    os.chmod(snap / "conv.png", 0o640)
    old = os.umask(0o077)
    try:
        stored, picture = _snapshot(1)
        goldenwrite.write_files(snap, golden.sidecar_text(stored), {"conv.png": picture})
    finally:
        os.umask(old)
    assert (snap / "conv.png").read_bytes() == picture
    assert stat.S_IMODE(snap.stat().st_mode) == 0o750 and stat.S_IMODE((snap / "conv.png").stat().st_mode) == 0o640


def _failing_write(error: int) -> Any:
    real = durable._write_file
    calls = []

    def write(path: Path, data: bytes) -> None:
        calls.append(path)
        if len(calls) == 1:
            real(path, data)  # the first file makes it
            return
        with path.open("xb") as stream:
            stream.write(data[: len(data) // 2])  # the disk fills half-way through the second
        raise OSError(error, os.strerror(error))

    return write


@pytest.mark.parametrize("fresh", [False, True], ids=["rewrite", "create"])
def test_disk_full_leaves_the_old_golden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh: bool) -> None:
    directory = tmp_path / "golden" / "test_m" / "test_x" / "0"
    if not fresh:
        _write(directory, seed=0)
    before = _files(tmp_path)
    monkeypatch.setattr(durable, "_write_file", _failing_write(errno.ENOSPC))
    stored, png = _snapshot(1)
    with pytest.raises(GoldenError) as info:
        goldenwrite.write_files(directory, golden.sidecar_text(stored), {"conv.png": png})
    assert str(info.value).startswith(f"cannot write golden snapshot {directory}: [Errno 28] No space left on device")
    # what is there now: the old golden, or nothing where there was none
    assert str(info.value).endswith("nothing was written" if fresh else "; the golden there was left as it was")
    assert _files(tmp_path) == before  # no partial file anywhere, old golden byte for byte


@pytest.mark.parametrize("fault", ["replace", "mkdtemp"])
def test_read_only_golden_dir(snap: Path, monkeypatch: pytest.MonkeyPatch, fault: str) -> None:
    root = snap.parents[2]
    before = _files(root)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(snap.parent))

    if fault == "replace":
        monkeypatch.setattr(durable.os, "replace", refuse)
    else:
        monkeypatch.setattr(durable.tempfile, "mkdtemp", refuse)
    stored, png = _snapshot(1)
    with pytest.raises(GoldenError, match=r"Read-only file system") as info:
        goldenwrite.write_files(snap, golden.sidecar_text(stored), {"conv.png": png})
    assert str(info.value).startswith(f"cannot write golden snapshot {snap}:")
    monkeypatch.undo()
    assert _files(root) == before
    assert sorted(p.name for p in snap.parent.iterdir()) == ["0"]


def test_interrupted_between_renames_is_named_and_healed(snap: Path) -> None:
    # The one moment a kill can hit with no snapshot directory: after the old one moved aside, before the new one
    # moved in.
    os.replace(snap, snap.parent / ".0.featviz-old-ab12cd34")
    (snap.parent / ".0.featviz-new-aa11bb22").mkdir()  # the new render, fully written: not the one to name
    with pytest.raises(GoldenError, match=r"an interrupted --featviz-update left \.0\.featviz-old-ab12cd34") as info:
        golden.read_sidecar(snap)
    # the golden it was replacing is whole: the message says how to put it back, so that the next check compares
    old = snap.parent / ".0.featviz-old-ab12cd34"
    assert f"put it back with  mv {old} {snap}  to check against it, or re-run with --featviz-update" in str(info.value)
    snap.mkdir()  # the folder standing without its sidecar: an mv would move the old golden into it
    with pytest.raises(GoldenError) as info:
        golden.read_sidecar(snap)
    assert "mv " not in str(info.value) and str(info.value).endswith("beside it; re-run with --featviz-update")
    snap.rmdir()
    os.replace(old, snap)
    assert golden.read_sidecar(snap) is not None
    os.replace(snap, old)
    stored = _write(snap, seed=1)
    assert golden.read_sidecar(snap) == stored
    assert sorted(p.name for p in snap.parent.iterdir()) == ["0"]


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, SystemExit])
def test_an_interruption_between_the_renames_puts_the_old_golden_back(
    snap: Path, monkeypatch: pytest.MonkeyPatch, interruption: type[BaseException]
) -> None:
    """Ctrl-C, or pytest-timeout's exception, between moving the old snapshot aside and moving the new one in left no
    golden (only ``.0.featviz-old-...``) though the process could still rename it back."""
    root = snap.parents[2]
    before = _files(root)
    real = durable.os.replace

    def interrupted(source: Any, target: Any) -> None:
        if Path(source).name.startswith(".0.featviz-new-"):
            raise interruption()
        real(source, target)

    monkeypatch.setattr(durable.os, "replace", interrupted)
    stored, png = _snapshot(1)
    with pytest.raises(interruption):
        goldenwrite.write_files(snap, golden.sidecar_text(stored), {"conv.png": png})
    monkeypatch.undo()
    assert _files(root) == before  # the old golden, byte for byte
    assert sorted(p.name for p in snap.parent.iterdir()) == ["0"]  # the new one's staging is removed


def test_leftover_staging_does_not_disturb_reads_and_is_removed_by_the_next_write(snap: Path) -> None:
    leftover = snap.parent / ".0.featviz-new-zz99zz99"
    leftover.mkdir()
    (leftover / "conv.png").write_bytes(b"half")
    stored = golden.read_sidecar(snap)
    assert stored is not None and goldenpicture.read_layer(snap, stored.layers[0], 8).shape == (9, 11)
    _write(snap, seed=2)
    assert sorted(p.name for p in snap.parent.iterdir()) == ["0"]


def _dead_pid() -> int:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_write_going_on_in_another_process_keeps_its_hidden_directories(snap: Path) -> None:
    import subprocess
    import sys

    now, host = int(time.time()), durable._host_tag()
    # alive, but started after the write its pid names began: the OS gave a killed writer's pid to a new process
    reused = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    names = {
        "live here": f".0.featviz-new-{now:x}-{host}-{os.getppid()}-aaaaaaaa",  # another pytest writing this now
        "live elsewhere": f".0.featviz-old-{now:x}-{'f' * 6 if host != 'ffffff' else '0' * 6}-1-bbbbbbbb",
        "killed": f".0.featviz-new-{now:x}-{host}-{_dead_pid()}-cccccccc",
        "this process": f".0.featviz-old-{now:x}-{host}-{os.getpid()}-dddddddd",  # its own, from a failed write
        "long ago elsewhere": f".0.featviz-new-{now - 2 * durable.ABANDONED_AFTER_S:x}-abcdef-1-eeeeeeee",
        "before owners": ".0.featviz-new-zz99zz99",
    }
    reused_name = f".0.featviz-new-{now - 600:x}-{host}-{reused.pid}-ffffffff"
    try:
        for name in [*names.values(), reused_name]:
            (snap.parent / name).mkdir()
        if sys.platform == "linux":  # elsewhere the start of a process is not known: it waits out ABANDONED_AFTER_S
            names["pid reused"] = reused_name
            # a read does not wait for it (each read of the golden waited 10 s)
            (snap.parent / reused_name.replace(".0.", ".1.")).mkdir()
            assert not durable.wait_for_writers(snap.parent / "1", timeout=0.5)
        _write(snap, seed=2)
    finally:
        reused.kill()
        reused.wait()
    left = sorted(p.name for p in snap.parent.iterdir())
    kept = [names["live here"], names["live elsewhere"]] + ([] if "pid reused" in names else [reused_name])
    assert [name for name in left if not name.startswith(".1.")] == sorted(["0", *kept])


def _write_many(directory: str, seeds: tuple[int, int], start: Any, count: int) -> None:
    start.wait()
    for step in range(count):
        _write(Path(directory), seeds[step % 2])


def test_two_processes_rewriting_one_snapshot_at_once_both_succeed(tmp_path: Path) -> None:
    # Two --featviz-update runs at once: each write must neither remove the other's hidden directories nor fail when
    # the other puts its snapshot in place between its two renames; the last writer wins, whole.
    import multiprocessing

    directory = tmp_path / "golden" / "test_m" / "test_x" / "0"
    _write(directory, seed=0)
    context = multiprocessing.get_context("spawn")  # no fork of a process with threads (Python >= 3.12 warns)
    start = context.Barrier(2)
    writers = [
        context.Process(target=_write_many, args=(str(directory), seeds, start, 200)) for seeds in ((1, 3), (2, 4))
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
    assert [writer.exitcode for writer in writers] == [0, 0]
    stored = golden.read_sidecar(directory)
    assert stored in [_snapshot(seed)[0] for seed in (1, 2, 3, 4)]
    assert stored is not None and goldenpicture.read_layer(directory, stored.layers[0], 8).shape == (9, 11)
    assert sorted(p.name for p in directory.parent.iterdir()) == ["0"]


def _rewrite_many(directory: str, start: Any, count: int) -> None:
    start.wait()
    for step in range(count):
        _write(Path(directory), step % 2)


def test_a_golden_read_while_another_process_replaces_it_is_read_whole(tmp_path: Path) -> None:
    # Repeats of one test (pytest-repeat) on two xdist workers share its golden: a read that came between the two
    # renames of the other worker's write said "an interrupted --featviz-update left ...", or, a moment later, "has
    # pictures but no sidecar", and failed the test. It waits for the write going on, then reads what it put there.
    import multiprocessing

    directory = tmp_path / "golden" / "test_m" / "test_x" / "0"
    _write(directory, seed=0)
    context = multiprocessing.get_context("spawn")  # no fork of a process with threads (Python >= 3.12 warns)
    start = context.Barrier(2)
    writer = context.Process(target=_rewrite_many, args=(str(directory), start, 300))
    writer.start()
    start.wait()
    reads = 0
    while writer.is_alive():
        stored = golden.read_sidecar(directory)
        assert stored in (_snapshot(0)[0], _snapshot(1)[0])
        reads += 1
    writer.join(timeout=120)
    assert writer.exitcode == 0 and reads > 0


def test_a_missing_golden_that_another_process_is_writing_is_waited_for_not_called_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The other xdist worker began writing the golden just after this one found it missing: its hidden directory is
    # no leftover of an interrupted write ("re-run with --featviz-update" failed the test).
    import threading

    monkeypatch.setattr(durable, "WAIT_FOR_WRITERS_S", 0.2)
    directory = tmp_path / "golden" / "test_m" / "test_x" / "0"
    directory.parent.mkdir(parents=True)
    owner = f"{int(time.time()):x}-{durable._host_tag()}-{os.getppid()}"  # another process of this host, alive
    writing = directory.parent / f".0.featviz-new-{owner}-aaaaaaaa"
    writing.mkdir()
    assert golden.read_sidecar(directory) is None  # still being written when the wait ends: no golden yet
    stored, picture = _snapshot(1)
    (writing / "conv.png").write_bytes(picture)
    (writing / golden.SIDECAR).write_text(golden.sidecar_text(stored))
    finish = threading.Timer(0.05, os.replace, (writing, directory))
    finish.start()
    try:
        assert golden.read_sidecar(directory) == stored  # waited for, then read
    finally:
        finish.join()


def test_creating_a_golden_another_process_created_meanwhile_leaves_that_one(tmp_path: Path) -> None:
    # Two xdist workers both found one golden missing (repeats of one test): the second to write checks against the
    # first's golden instead of replacing it, as it would have a moment later.
    directory = tmp_path / "golden" / "test_m" / "test_x" / "0"
    first = _write(directory, seed=0)
    before = _files(tmp_path)
    second, picture = _snapshot(1)
    assert goldenwrite.create_files(directory, golden.sidecar_text(second), {"conv.png": picture}) is False
    assert _files(tmp_path) == before and golden.read_sidecar(directory) == first
    assert sorted(p.name for p in directory.parent.iterdir()) == ["0"]  # no hidden directory left


def test_creating_a_golden_where_only_someone_elses_files_are_keeps_them(tmp_path: Path) -> None:
    directory = tmp_path / "golden" / "test_m" / "test_x" / "0"
    directory.mkdir(parents=True)
    (directory / "NOTES.md").write_text("why this snapshot exists")
    stored, picture = _snapshot(1)
    assert goldenwrite.create_files(directory, golden.sidecar_text(stored), {"conv.png": picture}) is True
    assert golden.read_sidecar(directory) == stored
    assert (directory / "NOTES.md").read_text() == "why this snapshot exists"
    empty = tmp_path / "golden" / "test_m" / "test_x" / "1"
    empty.mkdir()  # an empty directory is no golden: it is taken
    assert goldenwrite.create_files(empty, golden.sidecar_text(stored), {"conv.png": picture}) is True
    assert golden.read_sidecar(empty) == stored


@pytest.mark.parametrize("bits", [8, 16])
def test_pictures_read_the_same_whether_written_here_or_by_pillow(tmp_path: Path, bits: int) -> None:
    import io

    from PIL import Image

    dtype = np.uint8 if bits == 8 else np.uint16
    rng = np.random.default_rng(bits)
    mosaic = build_mosaic(rng.integers(0, 1 << bits, size=(CHANNELS, *TILE), dtype=dtype))
    ours = png.encode(mosaic)
    with Image.open(io.BytesIO(ours)) as image:  # any PNG reader shows it
        # Pillow 10.0 opens a 16-bit grey PNG as "I" (32-bit), later ones as "I;16": the same values either way
        assert image.mode in (("L",) if bits == 8 else ("I;16", "I")) and (np.array(image) == mosaic).all()
    buffer = io.BytesIO()
    Image.fromarray(mosaic).save(buffer, format="PNG")  # adaptive row filters: the Pillow fallback reads it
    for data in (ours, buffer.getvalue()):
        _write(tmp_path, seed=0)
        layer = _set_sha(tmp_path, data)
        read = goldenpicture.read_layer(tmp_path, layer, bits)
        assert read.dtype == dtype and (read == mosaic).all()


def test_a_picture_whose_stream_inflates_past_its_geometry_is_read_no_further(tmp_path: Path) -> None:
    stored = _write(tmp_path, seed=0)
    written = (tmp_path / "conv.png").read_bytes()
    height, width = mosaic_size(CHANNELS, TILE)
    bomb = zlib.compress(bytes(200 * (1 + width) * height))  # unfiltered rows, 200 times too many
    forged = written[:33] + struct.pack(">I", len(bomb)) + b"IDAT" + bomb + b"\0\0\0\0" + written[-12:]
    assert png.decode_unfiltered(forged, width, height, 8) is None  # inflated only one byte past the geometry
    layer = _set_sha(tmp_path, forged)
    assert goldenpicture.read_layer(tmp_path, layer, stored.bit_depth).shape == (height, width)


def test_a_sidecar_nested_too_deep_is_a_malformed_golden(tmp_path: Path) -> None:
    directory = tmp_path / "0"
    directory.mkdir()
    (directory / golden.SIDECAR).write_text("[" * 200000 + "]" * 200000)
    with pytest.raises(golden.GoldenError, match="nested too deep"):
        golden.read_sidecar(directory)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        # values of the right type that no snapshot writes: never a drift verdict
        ('"mean": ', '"mean": NaN, "was": ', "layer 'conv': a channel's range or statistics are not finite numbers"),
        ('"std": ', '"std": 1e400, "was": ', "not finite numbers"),
        ('"range": [0.0, 1.0]', '"range": [-Infinity, 1.0]', "not finite numbers"),
        ('"shape": [1, ', '"shape": [1, -', "layer 'conv': shape \\[1, -3, 4, 5\\]"),
        ('"tile": [', '"tile": [100000, 100000], "was": [', "layer 'conv': tile \\[100000, 100000\\]"),
        ('"bit_depth": 8', '"bit_depth": 3', "bit depth 3, not 8 or 16"),
        ('"normalize": "minmax"', '"normalize": "zscore"', "unknown normalization 'zscore'"),
        ('"index": 0', '"index": -1', "channel index -1"),
        ('"index": 1', '"index": 0', "channel indices repeat: \\[0, 0, 2\\]"),
        ('"std": ', '"std": -1, "was": ', "channel 0: statistics mean .*, std -1.0"),
        ('"min": ', '"min": 7, "was": ', "channel 0: statistics mean .*, std .*, min 7.0, max"),
        # statistics no values have: read as a drift ("statistics change 19.753") with "a code or dependency change"
        ('"mean": ', '"mean": 1000.0, "was": ', "channel 0: statistics mean 1000.0, std"),
        ('"mean": ', '"mean": -1000.0, "was": ', "channel 0: statistics mean -1000.0, std"),
        ('"std": ', '"std": 1000.0, "was": ', "channel 0: statistics mean .*, std 1000.0, min"),
        ('"std": ', '"std": 0.0, "was": ', "channel 0: statistics mean .*, std 0.0, min"),
        ('"range": [0.0, 1.0]', '"range": [2.0, 0.0]', "channel 0: range \\[2.0, 0.0\\]"),
        # finite, but rendering in it overflowed (a drift verdict, or a RuntimeWarning under -W error)
        ('"range": [0.0, 1.0]', '"range": [-1e308, 1e308]', "channel 0: range \\[-1e\\+308, 1e\\+308\\]"),
        ('"range": [0.0, 1.0]', '"range": [0.0, 5e-324]', "channel 0: range \\[0.0, 5e-324\\]"),
        ('"range": [0.0, 1.0]', '"range": [1e39, 2e39]', "channel 0: range \\[1e\\+39, 2e\\+39\\]"),
        ('"format": 1', '"format": 0', "format 0"),
        ('"format": 1', '"format": true', "format true"),
        # valid JSON that crashed the parser: a float too large for an integer field, a number Python will not read
        ('"shape": [1, ', '"shape": [1e400, ', r"layer 'conv': shape \[inf, 3, 4, 5\]"),
        ('"tile": [4, 5]', '"tile": [Infinity, 5]', r"layer 'conv': tile \[inf, 5\]"),
        ('"bit_depth": 8', '"bit_depth": 1e400', "bit depth inf, not 8 or 16"),
        ('"index": 0', '"index": 1e400', "layer 'conv': channel index inf is not a whole number"),
        ('"channels": [', '"pool": [Infinity, 1], "channels": [', r"layer 'conv': pool \[inf, 1\]"),
        ('"format": 1,', '"format": 1, "note": ' + "7" * 5000 + ",", "a number too long to read: Exceeds the limit"),
        ('"file": "conv.png"', '"file": "0\\u0000.png"', r"layer 'conv': file '0\\x00.png' is not a picture file"),
        ('"file": "conv.png"', '"file": "\\ud800.png"', r"layer 'conv': file '\\ud800.png' is not a picture file"),
        # a file name no file system holds, or that is no plain picture file name
        ('"file": "conv.png"', '"file": ""', "layer 'conv': file '' is not a picture file name"),
        ('"file": "conv.png"', '"file": "' + "c" * 296 + '.png"', "layer 'conv': file 'cccc.*' is not a picture file"),
        ('"file": "conv.png"', '"file": "a\\\\b.png"', r"file 'a\\\\b.png' is not a picture file name"),
        ('"file": "conv.png"', '"file": "conv.json"', "file 'conv.json' is not a picture file name"),
        # a type the writer never writes, coerced before
        ('"bit_depth": 8', '"bit_depth": 8.9', "bit depth 8.9, not 8 or 16"),
        ('"bit_depth": 8', '"bit_depth": "8"', "bit depth '8', not 8 or 16"),
        ('"normalize": "minmax"', '"normalize": ["minmax"]', r"unknown normalization \['minmax'\]"),
        ('"index": 1', '"index": true', "channel index true is not a whole number"),
        ('"shape": [1, 3, 4, 5]', '"shape": [1, 3, 4.7, 5]', r"layer 'conv': shape \[1, 3, 4.7, 5\]"),
        ('"channels": [', '"pool": "11", "channels": [', "layer 'conv': pool '11'"),
        ('"tile": [4, 5]', '"tile": "45"', "layer 'conv': tile '45'"),
        ('"name": "conv"', '"name": 0', "layer name 0"),
        ('"sha256": ', '"sha256": 7, "was": ', "layer 'conv': sha256 7 is not a string"),
        ('"mean": 0.5', '"mean": "0.5"', "layer 'conv': channel 0: mean '0.5' is not a number"),
        ('"range": [0.0, 1.0]', '"range": [0.0, 1.0, 2.0]', r"layer 'conv': channel 0: range \[0.0, 1.0, 2.0\]"),
        ('"layers": [', '"layers": "none", "was": [', "layers 'none' is not a list"),
        # values out of what the writer writes: they turned into a drift verdict, or passed
        ('"index": 2', '"index": ' + str(10**30), "layer 'conv': channel index 1000000000000000000000000000000, out"),
        (
            '"index": 2',
            '"index": 3',
            r"channel index 3, outside the 3 channel\(s\) of an output of shape \[1, 3, 4, 5\]",
        ),
        ('"shape": [1, 3, 4, 5]', f'"shape": [1, 3, 4, {10**50}]', r"layer 'conv': shape \[1, 3, 4, 1000"),
        ('"shape": [1, 3, 4, 5]', f'"shape": [1, 3, {2**40}, {2**40}]', "more values than a tensor holds"),
        ('"channels": [', '"layout": "zzz", "channels": [', "layout 'zzz', which no snapshot gives an output of shape"),
        ('"channels": [', '"layout": 5, "channels": [', "layer 'conv': layout 5 is not a string"),
        ('"channels": [', '"layout": "nchw (batch axis 7)", "channels": [', r"layout 'nchw \(batch axis 7\)', which"),
        ('"channels": [', '"layout": "ncl", "channels": [', "layout 'ncl', which no snapshot gives an output of shape"),
        ('"channels": [', '"layout": "tokens:1+2x2", "channels": [', "layout 'tokens:1\\+2x2', which no snapshot"),
        ('"shape": [1, 3, 4, 5]', '"shape": [1, 3, 4]', r"tile \[4, 5\]; a 1x4 map pooled by \[1, 1\] gives \[1, 4\]"),
        ('"shape": [1, 3, 4, 5]', '"shape": [7]', r"shape \[7\], which no snapshot reads without a layout"),
        (
            '"channels": [',
            '"pool": [100000, 1], "channels": [',
            r"pool \[100000, 1\], larger than the 4x5 map it pools",
        ),
        ('"tile": [4, 5]', '"tile": [4, 4]', r"tile \[4, 4\]; a 4x5 map pooled by \[1, 1\] gives \[4, 5\]"),
        (
            '"channels": [',
            '"pool": [2, 1], "channels": [',
            r"tile \[4, 5\]; a 4x5 map pooled by \[2, 1\] gives \[2, 5\]",
        ),
    ],
)
def test_a_sidecar_value_no_snapshot_writes_is_malformed_not_drift(
    snap: Path, old: str, new: str, message: str
) -> None:
    _edited(snap, old, new)
    with pytest.raises(GoldenError, match=rf"golden sidecar .*snapshot\.json is malformed \(.*{message}") as info:
        golden.read_sidecar(snap)
    assert info.value.recreatable  # --featviz-update is the way out, and the failing test says so
    assert str(snap / golden.SIDECAR) in str(info.value)


def _two_layers(snap: Path, **second: Any) -> None:
    """The sidecar in ``snap`` with a second layer: the first's entry with ``second``'s values."""
    path = snap / golden.SIDECAR
    sidecar = json.loads(path.read_text())
    sidecar["layers"].append({**sidecar["layers"][0], **second})
    path.write_text(json.dumps(sidecar))


@pytest.mark.parametrize(
    ("second", "message"),
    [
        ({"file": "head.png"}, "layer 'conv': listed twice"),
        ({"name": "head"}, "layer 'head': file 'conv.png' is also the picture of layer 'conv'"),
    ],
)
def test_two_layers_of_one_name_or_one_picture_are_malformed(snap: Path, second: dict[str, str], message: str) -> None:
    _two_layers(snap, **second)
    with pytest.raises(GoldenError, match=rf"is malformed \({message}\)") as info:
        golden.read_sidecar(snap)
    assert info.value.recreatable


@pytest.mark.parametrize(
    ("encode", "message"),
    [
        (lambda text: text.encode("utf-16"), "is not UTF-8: it is UTF-16, as Windows PowerShell's > and Out-File save"),
        (lambda text: text.encode("utf-16-le"), "is not UTF-8: it is UTF-16"),
        (lambda text: text.encode("utf-32"), "is not UTF-8: it is UTF-32;"),
        (lambda text: text.encode("utf-32-be"), "is not UTF-8: it is UTF-32;"),
        (
            lambda text: text.replace('"minmax"', '"minmax", "note": "caf\xe9"').encode("latin-1"),
            r"is not UTF-8: byte 0xe9 at offset 54 \(Latin-1 or another legacy encoding\?\)",
        ),
    ],
    ids=["utf-16", "utf-16-without-bom", "utf-32", "utf-32-big-endian-without-bom", "latin-1-byte"],
)
def test_a_sidecar_saved_in_another_encoding_is_a_damaged_golden_that_says_so(
    snap: Path, encode: Any, message: str
) -> None:
    path = snap / golden.SIDECAR
    path.write_bytes(encode(path.read_text(encoding="utf-8")))
    with pytest.raises(GoldenError, match=message) as info:
        golden.read_sidecar(snap)
    assert str(info.value).startswith(f"golden sidecar {path} is not UTF-8: ")
    assert str(info.value).endswith("; save it as UTF-8, or re-create it with --featviz-update")
    assert info.value.recreatable  # not "cannot read": --featviz-update re-creates it


def test_a_sidecar_saved_as_utf8_with_a_byte_order_mark_reads_as_the_same_golden(snap: Path) -> None:
    # Windows Notepad and PowerShell 5 put a BOM before UTF-8: it read "not valid JSON (Unexpected UTF-8 BOM)"
    path = snap / golden.SIDECAR
    sound = golden.read_sidecar(snap)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert golden.read_sidecar(snap) == sound
    assert golden.sidecar_string(snap, "environment", "device") == golden.sidecar_string(snap, "environment", "device")


def test_a_picture_hash_edited_in_upper_case_is_the_same_hash(snap: Path) -> None:
    path = snap / golden.SIDECAR
    sidecar = json.loads(path.read_text())
    sidecar["layers"][0]["sha256"] = sidecar["layers"][0]["sha256"].upper()
    path.write_text(json.dumps(sidecar))
    stored = golden.read_sidecar(snap)
    assert stored is not None
    goldenpicture.read_layer(snap, stored.layers[0], 8)  # not "does not match its sidecar"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"format": "1"}, "is malformed (format '1', not a whole number)"),
        ({"format": 1.0}, "is malformed (format 1.0, not a whole number)"),
        ({"file": ".conv.png"}, "names a hidden layer file, which pytest-featviz never writes: '.conv.png'"),
        ({"file": "./conv.png"}, "names a layer file by a path, not by its file name: './conv.png'"),
        ({"file": "sub/conv.png"}, "names a layer file by a path, not by its file name: 'sub/conv.png'"),
        ({"file": "../conv.png"}, "names a layer file outside its directory: '../conv.png'"),
        ({"file": "/etc/passwd"}, "names a layer file outside its directory: '/etc/passwd'"),
    ],
    ids=["format-text", "format-float", "hidden", "dot-slash", "subfolder", "parent", "absolute"],
)
def test_a_sidecar_edited_by_hand_says_what_is_wrong_in_its_words(
    snap: Path, edit: dict[str, Any], message: str
) -> None:
    # a format written as text read "has no format version", and './conv.png' "outside its directory"
    path = snap / golden.SIDECAR
    sidecar = json.loads(path.read_text())
    if "format" in edit:
        sidecar.update(edit)
    else:
        sidecar["layers"][0].update(edit)
    path.write_text(json.dumps(sidecar))
    with pytest.raises(GoldenError) as info:
        golden.read_sidecar(snap)
    assert str(info.value) == f"golden sidecar {path} {message}"


class _FifoWatch:
    """Watches a named pipe for a reader (which would block until someone writes) and lets it go at once (it reads
    end of file), so that a regression fails the test instead of hanging it; ``opened``: whether anyone did."""

    def __init__(self, fifo: Path) -> None:
        import threading

        self.fifo, self.opened, self.stop = fifo, False, threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        while not self.stop.wait(0.01):
            try:
                os.close(os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK))  # ENXIO while nobody reads
                self.opened = True
            except OSError:
                pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
@pytest.mark.parametrize("name", ["conv.png", golden.SIDECAR])
def test_a_named_pipe_in_place_of_a_golden_file_is_refused_unopened(snap: Path, name: str) -> None:
    stored = golden.read_sidecar(snap)
    assert stored is not None
    (snap / name).unlink()
    os.mkfifo(snap / name)
    watch = _FifoWatch(snap / name)
    try:
        what = "sidecar" if name == golden.SIDECAR else "picture"
        message = f"golden {what} {snap / name} is a named pipe (FIFO), not a regular file, so pytest-featviz does not"
        with pytest.raises(GoldenError, match=re.escape(message)) as info:
            if name == golden.SIDECAR:
                golden.read_sidecar(snap)
            else:
                goldenpicture.read_layer(snap, stored.layers[0], 8)
        assert not info.value.recreatable  # someone put it there: --featviz-update leaves it for them to look at
        assert golden.sidecar_string(snap, "test", "file") is None
    finally:
        watch.close()
    assert not watch.opened


def test_a_directory_in_place_of_the_sidecar_is_refused(snap: Path) -> None:
    (snap / golden.SIDECAR).unlink()
    (snap / golden.SIDECAR).mkdir()
    with pytest.raises(GoldenError, match=r"snapshot\.json is a directory, not a regular file") as info:
        golden.read_sidecar(snap)
    assert not info.value.recreatable


@pytest.mark.skipif(not os.path.exists("/dev/zero") or sys.platform == "win32", reason="needs /dev/zero")
def test_a_sidecar_that_links_to_dev_zero_is_refused_unread(snap: Path) -> None:
    # Read without a limit, the link exhausted memory: the child process that reads it gets 4 GiB, so that a
    # regression fails this test instead of the machine.
    (snap / golden.SIDECAR).unlink()
    (snap / golden.SIDECAR).symlink_to("/dev/zero")
    code = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))\n"
        "from pathlib import Path; from pytest_featviz import golden\n"
        "snap = Path(sys.argv[1])\n"
        "try: golden.read_sidecar(snap)\n"
        "except golden.GoldenError as exc: print(exc, exc.recreatable, golden.sidecar_string(snap, 'a', 'b'))"
    )
    done = subprocess.run([sys.executable, "-c", code, str(snap)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == (
        f"golden sidecar {snap / golden.SIDECAR} is a character device (a symbolic link to /dev/zero), not a regular"
        " file, so pytest-featviz does not read it; put the golden's file there (or remove it, and re-create the"
        " snapshot with --featviz-update) False None\n"
    )


def test_a_sidecar_larger_than_any_snapshot_writes_is_refused_unread(snap: Path) -> None:
    path = snap / golden.SIDECAR
    with path.open("r+b") as stream:
        stream.truncate(golden.MAX_SIDECAR_BYTES + 1)  # sparse where the file system allows it
    with pytest.raises(GoldenError, match=r"snapshot\.json is larger than 64 MiB, far more than a snapshot writes"):
        golden.read_sidecar(snap)
    assert golden.sidecar_string(snap, "test", "file") is None


def test_a_lone_surrogate_anywhere_in_a_sidecar_is_malformed(snap: Path) -> None:
    # A name or value that is no text could be neither shown in a report nor written back.
    _edited(snap, '"name": "conv"', '"name": "conv\\udc80"')
    with pytest.raises(GoldenError, match=r"is malformed \(layers\[0\]\.name holds a lone UTF-16 surrogate: no text\)"):
        golden.read_sidecar(snap)
    _write(snap, seed=0)
    _edited(snap, '"format": 1,', '"format": 1, "test": {"file": "test_\\uD800.py"},')
    with pytest.raises(GoldenError, match=r"is malformed \(test\.file holds a lone UTF-16 surrogate"):
        golden.read_sidecar(snap)
    _write(snap, seed=0)
    _edited(snap, '"format": 1,', '"format": 1, "note": "\\ud83d\\ude00 and \\\\ud800",')  # a pair, an escaped \
    assert golden.read_sidecar(snap) is not None


_ENVIRONMENT = (
    '"environment": {"torch": "2.14.1", "device": "cpu", "dtype": "float32", "matmul_tf32": false,'
    ' "cudnn_tf32": true, "deterministic": false}'
)
_FINGERPRINTS = '"fingerprints": {"input": "a1", "model": "b2", "layers": {"conv": "c3"}}'


@pytest.mark.parametrize(
    ("provenance", "message"),
    [
        # a damaged provenance read as none ("made before pytest-featviz recorded it"), or as "made on 7"
        ('"environment": "cpu"', "environment 'cpu' is not an object"),
        (_ENVIRONMENT.replace('"cpu"', "7"), "environment device 7 is not a string"),
        (
            _ENVIRONMENT.replace('"deterministic": false', '"deterministic": "no"'),
            "environment deterministic 'no' is not",
        ),
        (_ENVIRONMENT.replace('"device": "cpu", ', ""), "environment has no device"),
        (_FINGERPRINTS.replace('"c3"', "3"), "fingerprints layers {'conv': 3} holds a fingerprint that is not a"),
        (_FINGERPRINTS.replace('"a1"', "null"), "fingerprints input null is not a string"),
        ('"fingerprints": []', "fingerprints \\[\\] is not an object"),
        # schemes count from 1 (a sidecar without one); 0 read as "made by a newer pytest-featviz"
        (_FINGERPRINTS.replace("}}", '}, "scheme": 0}'), "fingerprints scheme 0 is not a scheme \\(1 or more\\)"),
        (_FINGERPRINTS.replace("}}", '}, "scheme": -1}'), "fingerprints scheme -1 is not a scheme"),
        (_FINGERPRINTS.replace("}}", '}, "scheme": "2"}'), "fingerprints scheme '2' is not a whole number"),
        (_FINGERPRINTS.replace("}}", '}, "scheme": 2.0}'), "fingerprints scheme 2.0 is not a whole number"),
    ],
)
def test_a_damaged_provenance_is_malformed(snap: Path, provenance: str, message: str) -> None:
    _edited(snap, '"format": 1,', f'"format": 1, {provenance},')
    with pytest.raises(GoldenError, match=rf"is malformed \({message}"):
        golden.read_sidecar(snap)


def test_a_provenance_as_the_writer_writes_it_reads_and_a_damaged_test_record_is_kept(snap: Path) -> None:
    _edited(snap, '"format": 1,', f'"format": 1, {_ENVIRONMENT}, {_FINGERPRINTS}, "test": "test_m.py",')
    read = golden.read_sidecar(snap)
    assert read is not None and read.provenance is not None
    assert read.provenance["environment"]["device"] == "cpu"  # and the test record, never judged, is left out
    assert read.provenance["fingerprints"]["layers"] == {"conv": "c3"} and "test" not in read.provenance
    for scheme in (1, 2, 3):  # 3: of a newer version, not damage (its drift message says to upgrade)
        _write(snap, seed=0)
        fingerprints = _FINGERPRINTS.replace("}}", '}, "scheme": ' + str(scheme) + "}")
        _edited(snap, '"format": 1,', f'"format": 1, {fingerprints},')
        read = golden.read_sidecar(snap)
        assert read is not None and read.provenance is not None
        assert read.provenance["fingerprints"]["scheme"] == scheme


def _maps_of_every_kind() -> list[np.ndarray]:
    """Maps as the writer keeps them (float32), of every spread and magnitude, and float64 ones."""
    generator = np.random.default_rng(0)
    shape = (3, 17, 23)
    maps = [
        generator.normal(0, 1, shape),
        generator.normal(1e4, 1e-3, shape),  # a large offset, a tiny spread
        generator.normal(-3e-30, 1e-33, shape),
        np.abs(generator.normal(0, 1e30, shape)),
        (generator.random(shape) > 0.5).astype(np.float64),  # a mask: its std is exactly half its range
        np.full(shape, 0.1),
        np.zeros(shape),
        np.pad(np.full((3, 1, 1), 7.0), ((0, 0), (0, 16), (0, 22)), constant_values=-7.0),  # one value apart
        np.where(generator.random(shape) > 0.999, np.nextafter(1.0, 2.0), 1.0),  # one ulp apart, a few values
    ]
    return [m.astype(dtype) for m in maps for dtype in (np.float32, np.float64)]


def test_the_statistics_the_writer_writes_are_never_malformed() -> None:
    from pytest_featviz.goldencheck import _consistent
    from pytest_featviz.render import channel_statistics

    for maps in _maps_of_every_kind():
        for mean, std, smallest, largest in channel_statistics(maps).tolist():
            assert _consistent(mean, std, smallest, largest), (maps.dtype, mean, std, smallest, largest)


def test_a_damaged_golden_s_message_names_the_golden_directory_as_pytest_ran_and_nothing_else(tmp_path: Path) -> None:
    """Paths in the golden directory are shown relative to where pytest ran, the CI runner's root left out; a path
    elsewhere that only contains the golden directory's (a link into a backup of it) stays as it is on disk."""
    from types import SimpleNamespace

    from pytest_featviz.fixture import _user_error

    root = tmp_path / "golden"
    settings = SimpleNamespace(update=False, create=False, golden_dir=root)
    identity = SimpleNamespace(update_command="pytest --featviz-update t.py::t", invocation_dir=tmp_path)
    backup = f"/backup{root}/t/0"
    error = GoldenError(
        f"golden path {root}/t/0 is a symbolic link that leads to {backup}, outside the golden directory {root}:"
        f" remove it; see {root}2/x",
        recreatable=False,
    )
    shown = str(_user_error(error, identity, settings))  # type: ignore[arg-type]
    assert shown == (
        f"golden path golden/t/0 is a symbolic link that leads to {backup}, outside the golden directory golden:"
        f" remove it; see {root}2/x"
    )
