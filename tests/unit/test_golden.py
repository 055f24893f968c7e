"""golden: the sidecar, byte-identical and atomic writes of whole snapshots, data only (where goldens live:
test_goldenpath)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import struct
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

import pytest_featviz
from pytest_featviz import channels, golden, goldenpicture, goldenwrite, render
from pytest_featviz.capture import LayerCapture
from pytest_featviz.current import CurrentLayer
from pytest_featviz.golden import SIDECAR, LayerGolden, SnapshotGolden
from pytest_featviz.layout import Hints, InputFacts
from unit import snapshotter


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU(), nn.Conv2d(5, 3, 3))


def _x() -> torch.Tensor:
    return torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("normalize", ["minmax", "sigmoid", "percentile"])
def test_same_activations_give_byte_identical_files_in_fresh_directories(tmp_path: Path, normalize: str) -> None:
    for run in ("one", "two"):
        snapshotter(tmp_path / run, update=True, normalize=normalize)(_model(), _x(), layers=["0", "2"])
    one, two = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert sorted(one) == [
        "tests/test_model/test_features/0/0.png",
        "tests/test_model/test_features/0/2.png",
        "tests/test_model/test_features/0/snapshot.json",
    ]
    assert one == two


def _png_chunks(data: bytes) -> list[str]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        chunks.append(data[offset + 4 : offset + 8].decode("ascii"))
        offset += 12 + length
    return chunks


def test_goldens_are_png_and_json_with_no_time_or_text(tmp_path: Path) -> None:
    snapshotter(tmp_path, update=True)(_model(), _x(), layers=["0", "2"], channels=[0, 2])
    files = _files(tmp_path)
    for name, data in files.items():
        if name.endswith(".png"):
            assert set(_png_chunks(data)) <= {"IHDR", "IDAT", "IEND"}, name
        else:
            assert name.endswith("/snapshot.json")
            sidecar = json.loads(data)
    # the sidecar holds what the issue lists: format, normalization, layers, shapes, channels, ranges, statistics
    assert sidecar["format"] == golden.FORMAT_VERSION and sidecar["normalize"] == "minmax"
    first = sidecar["layers"][0]
    assert [layer["name"] for layer in sidecar["layers"]] == ["0", "2"]
    assert first["shape"] == [1, 5, 10, 10] and first["tile"] == [10, 10]
    assert [c["index"] for c in first["channels"]] == [0, 2]
    assert set(first["channels"][0]) >= {"index", "range", "mean", "std", "min", "max"}
    text = files["tests/test_model/test_features/0/snapshot.json"].decode()
    assert not re.search(r"20\d\d-\d\d-\d\d", text)


def test_package_never_unpickles() -> None:
    source = Path(pytest_featviz.__file__).parent
    for path in source.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for banned in ("import pickle", "torch.load", "np.load(", "numpy.load(", "allow_pickle=True", "marshal"):
            assert banned not in text, f"{path.name} uses {banned}"


def test_update_leaves_no_temporary_files(tmp_path: Path) -> None:
    snap = snapshotter(tmp_path, update=True)
    snap(_model(), _x(), layers=["0"])
    with torch.no_grad():
        changed = _model()
        changed[0].bias += 1.0
    assert snapshotter(tmp_path, update=True)(changed, _x(), layers=["0"]).outcome == "updated"
    hidden = [p for p in tmp_path.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert hidden == []


def test_a_damaged_picture_s_error_names_the_other_layers_that_drifted(tmp_path: Path) -> None:
    # A check failed at the damaged picture without comparing the other layers, so a real drift there went unsaid
    # and the command the error gives (re-create the golden) accepted it unseen.
    snapshotter(tmp_path, update=True)(_model(), _x(), layers=["0", "1", "2"])
    picture = next(tmp_path.rglob("1.png"))
    picture.write_bytes(picture.read_bytes()[:-20])
    with pytest.raises(
        golden.GoldenError,
        match=r"1\.png does not match its sidecar \(edited, damaged or half-merged\)\nre-create it with",
    ):
        snapshotter(tmp_path)(_model(), _x(), layers=["0", "1", "2"])  # nothing else drifted: nothing more said
    changed = _model()
    with torch.no_grad():
        changed[0].weight.mul_(-1)
    with pytest.raises(golden.GoldenError) as info:
        snapshotter(tmp_path)(changed, _x(), layers=["0", "1", "2"])
    assert str(info.value).endswith(
        "1.png does not match its sidecar (edited, damaged or half-merged) (layer(s) '0', '2' of this snapshot drifted"
        " from the golden too: re-creating it accepts that)\nre-create it with:  pytest --featviz-update"
        " tests/test_model.py::test_features"
    )


@pytest.mark.parametrize("layers", [["0", "2"], ["0", "1", "2"]], ids=["same-layers", "a-layer-more"])
def test_a_golden_switched_in_by_another_process_after_its_sidecar_was_read_is_not_damaged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layers: list[str]
) -> None:
    """A check run beside a ``--featviz-update`` run read a golden's sidecar, the update switched a new golden into
    place, and the check read that one's pictures: it reported the golden as damaged ("does not match its
    sidecar", or "is missing"), though it never was. It compares again, with the new golden."""
    changed = _model()
    with torch.no_grad():
        changed[0].weight.mul_(-1)
    snapshotter(tmp_path / "new", update=True)(changed, _x(), layers=layers)  # what the other process writes
    made = next((tmp_path / "new").rglob(SIDECAR)).parent
    sidecar, pictures = (made / SIDECAR).read_text(), {p.name: p.read_bytes() for p in made.glob("*.png")}
    snapshotter(tmp_path / "g", update=True)(_model(), _x(), layers=["0", "2"])
    read = golden.read_sidecar

    def read_then_switched(directory: Path) -> SnapshotGolden | None:
        stored = read(directory)
        if not switched:
            switched.append(directory)
            goldenwrite.write_files(directory, sidecar, pictures)
        return stored

    switched: list[Path] = []
    monkeypatch.setattr(golden, "read_sidecar", read_then_switched)
    result = snapshotter(tmp_path / "g")(changed, _x())  # layers=None: the golden's
    assert switched and result.outcome == "matched"
    assert [layer.name for layer in result.layers] == layers


def test_a_damaged_golden_is_a_clear_error_not_a_pass(tmp_path: Path) -> None:
    snapshotter(tmp_path, update=True)(_model(), _x(), layers=["0"])
    picture = next(tmp_path.rglob("0.png"))
    picture.write_bytes(picture.read_bytes()[:-20])
    with pytest.raises(golden.GoldenError, match="does not match its sidecar"):
        snapshotter(tmp_path)(_model(), _x(), layers=["0"])
    sidecar = next(tmp_path.rglob(SIDECAR))
    sidecar.write_text("{not json")
    with pytest.raises(golden.GoldenError, match="is not valid JSON"):
        snapshotter(tmp_path)(_model(), _x(), layers=["0"])
    # update mode re-creates it: an update of a golden that was there, not a new one
    assert snapshotter(tmp_path, update=True)(_model(), _x(), layers=["0"]).outcome == "updated"
    assert snapshotter(tmp_path)(_model(), _x(), layers=["0"]).outcome == "matched"


def _sidecar_edit(old: str, new: str) -> Callable[[bytes], bytes]:
    def edit(data: bytes) -> bytes:
        assert old.encode() in data
        return data.replace(old.encode(), new.encode(), 1)

    return edit


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_sidecar_edit('"shape": [1, ', '"shape": [1e400, '), r"is malformed \(layer '0': shape \[inf, 5, 10, 10\]\)"),
        (_sidecar_edit('"index": 0', '"index": Infinity'), r"is malformed \(layer '0': channel index inf is not a"),
        (_sidecar_edit('"format": 1,', '"format": 1, "n": ' + "9" * 4400 + ","), "is malformed .a number too long"),
        (_sidecar_edit('"file": "0.png"', '"file": "0\\u0000.png"'), r"file '0\\x00.png' is not a picture file name"),
        (_sidecar_edit('"file": "0.png"', '"file": "\\udc80.png"'), r"file '\\udc80.png' is not a picture file name"),
        (_sidecar_edit('"file": "0.png"', '"file": ""'), "file '' is not a picture file name"),
        (_sidecar_edit('"file": "0.png"', '"file": "' + "0" * 296 + '.png"'), "file '0000.* is not a picture file"),
        (lambda data: data.decode().encode("utf-16"), "is not UTF-8: it is UTF-16"),
        (lambda data: data.replace(b'"cpu"', b'"cpu\xe9"'), r"is not UTF-8: byte 0xe9 at offset \d+ \(Latin-1"),
        (_sidecar_edit('"bit_depth": 8', '"bit_depth": "8"'), r"is malformed \(bit depth '8', not 8 or 16\)"),
        (_sidecar_edit('"index": 1', '"index": true'), "channel index true is not a whole number"),
        (_sidecar_edit('"index": 4', '"index": ' + str(10**30)), "channel index 1000000000000000000000000000000, out"),
        (_sidecar_edit('"shape": [1, 5, 10, 10]', f'"shape": [1, {10**50}, 10, 10]'), r"shape \[1, 1000"),
        (_sidecar_edit('"layout": "nchw"', '"layout": "zzz"'), r"layout 'zzz', which no snapshot gives an output of"),
        (_sidecar_edit('"layout": "nchw"', '"layout": 5'), "layout 5 is not a string"),
        (_sidecar_edit('"layout": "nchw"', '"layout": "nchw (batch axis 7)"'), r"layout 'nchw \(batch axis 7\)'"),
        (_sidecar_edit('"tile": [10, 10]', '"tile": "30"'), "tile '30'"),
        (_sidecar_edit('"tile": [10, 10]', '"tile": [10, 10], "pool": [100000, 1]'), r"pool \[100000, 1\], larger"),
        (_sidecar_edit('"name": "0"', '"name": 0'), r"is malformed \(layer name 0\)"),
    ],
)
def test_a_sidecar_no_snapshot_writes_fails_with_the_re_create_command_and_update_re_creates_it(
    tmp_path: Path, damage: Callable[[bytes], bytes], message: str
) -> None:
    snapshotter(tmp_path, update=True)(_model(), _x(), layers=["0"])
    sidecar = next(tmp_path.rglob(SIDECAR))
    written = sidecar.read_bytes()
    sidecar.write_bytes(damage(written))
    with pytest.raises(golden.GoldenError, match=message) as info:
        snapshotter(tmp_path)(_model(), _x(), layers=["0"])
    assert str(info.value).startswith(f"golden sidecar {sidecar} is ")
    assert str(info.value).endswith("\nre-create it with:  pytest --featviz-update tests/test_model.py::test_features")
    assert snapshotter(tmp_path, update=True)(_model(), _x(), layers=["0"]).outcome == "updated"
    assert sidecar.read_bytes() == written
    assert snapshotter(tmp_path)(_model(), _x(), layers=["0"]).outcome == "matched"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_named_pipe_in_place_of_a_picture_fails_check_and_update_without_hanging(tmp_path: Path) -> None:
    snapshotter(tmp_path, update=True)(_model(), _x(), layers=["0"])
    picture = next(tmp_path.rglob("0.png"))
    picture.unlink()
    os.mkfifo(picture)
    stop, opened = threading.Event(), []

    def let_readers_go() -> (
        None
    ):  # a reader blocks until someone opens the pipe to write: a regression fails, not hangs
        while not stop.wait(0.01):
            with contextlib.suppress(OSError):  # ENXIO while nobody reads
                os.close(os.open(picture, os.O_WRONLY | os.O_NONBLOCK))
                opened.append(True)

    watch = threading.Thread(target=let_readers_go, daemon=True)
    watch.start()
    try:
        for update in (False, True):
            with pytest.raises(golden.GoldenError) as info:
                snapshotter(tmp_path, update=update)(_model(), _x(), layers=["0"])
            assert str(info.value) == (
                f"golden picture {picture} is a named pipe (FIFO), not a regular file, so pytest-featviz does not read"
                " it; put the golden's file there (or remove it, and re-create the snapshot with --featviz-update)"
            )  # no "re-create it with:  pytest ...": the user must look at what is there
    finally:
        stop.set()
        watch.join()
    assert not opened
    assert stat.S_ISFIFO(os.lstat(picture).st_mode)  # left for the user


@pytest.mark.parametrize(
    ("output", "module_hints", "facts", "label"),
    [
        ((2, 3, 5, 6), None, InputFacts(), "nchw"),
        ((2, 5, 6, 16), Hints(feature_sizes=frozenset({16})), InputFacts(), "nhwc"),
        ((1, 3, 7), None, InputFacts(), "ncl"),
        ((2, 8), None, InputFacts(), "features"),
        ((1, 3, 4, 5, 6), None, InputFacts(), "ncthw"),
        ((1, 197, 16), Hints(feature_sizes=frozenset({16})), InputFacts((224, 224), 1), "tokens:1+14x14"),
        ((1, 130, 16), Hints(feature_sizes=frozenset({16})), InputFacts(None), "token-image"),
        ((7, 2, 3), Hints(sequence=True, sequence_first=True), InputFacts(None), "ncl (batch axis 1)"),
        (
            (7, 2, 16),
            Hints(feature_sizes=frozenset({16}), sequence=True, sequence_first=True),
            InputFacts(None),
            "token-image (batch axis 1)",
        ),
        (
            (197, 2, 16),
            Hints(feature_sizes=frozenset({16})),
            InputFacts((224, 224), 2),
            "tokens:1+14x14 (batch axis 1)",
        ),
        ((10, 16), Hints(sequence=True), InputFacts(None), "token-image (unbatched)"),
        ((1, 3, 200, 130), None, InputFacts(), "nchw"),  # pooled into its tiles
    ],
)
def test_every_layout_a_snapshot_writes_reads_back(
    tmp_path: Path, output: tuple[int, ...], module_hints: Hints | None, facts: InputFacts, label: str
) -> None:
    # The sidecar check knows the writer's layouts (layout.Layout.label) and the maps each gives (channels.extract)
    # without importing torch: what the writer writes for each must read back.
    tensor = torch.randn(output, generator=torch.Generator().manual_seed(0))
    kept = channels.keep(tensor, module_hints, None, [0], facts=facts)
    assert kept.layout == label
    layer, snapshot = _written(tmp_path, "layer", kept)
    assert golden.read_sidecar(tmp_path) == snapshot
    assert goldenpicture.read_layer(tmp_path, layer, 8).shape == render.mosaic_size(1, layer.tile_shape)


def _written(directory: Path, name: str, kept: channels.Kept) -> tuple[LayerGolden, SnapshotGolden]:
    """The golden of one layer kept as ``kept``, written into ``directory`` as a snapshot writes it."""
    capture = LayerCapture(name, kept.shape, kept.channels, kept.maps, kept.layout, kept.dtype)
    maps = kept.maps.numpy()
    layer, picture = CurrentLayer(capture, maps, render.channel_statistics(maps)).as_golden("minmax")
    snapshot = SnapshotGolden("minmax", 8, (layer,))
    (directory / layer.file).write_bytes(picture)
    (directory / SIDECAR).write_text(golden.sidecar_text(snapshot), encoding="utf-8")
    return layer, snapshot


def test_the_unbatched_per_head_weights_of_an_attention_read_back(tmp_path: Path) -> None:
    torch.manual_seed(0)
    attention = torch.nn.MultiheadAttention(16, 4).eval()
    with torch.no_grad():
        output = attention(*[torch.randn(10, 16)] * 3, need_weights=True, average_attn_weights=False)
    kept = channels.keep(output, attention, "1", "all")
    assert kept.layout == "nchw (unbatched)"
    _, snapshot = _written(tmp_path, "attn+1", kept)
    assert golden.read_sidecar(tmp_path) == snapshot
    # no other layout is read unbatched with three dimensions
    (tmp_path / SIDECAR).write_text(golden.sidecar_text(snapshot).replace("nchw (unbatched)", "ncl (unbatched)"))
    with pytest.raises(golden.GoldenError, match=r"layout 'ncl \(unbatched\)'"):
        golden.read_sidecar(tmp_path)
