"""The ``featviz`` command: look at a model's layers and at stored goldens, outside pytest.

``featviz layers PACKAGE.MODULE:FACTORY [--input-shape 1,3,224,224]`` builds the model (seeded, in eval mode), runs
one forward pass on a seeded random input with shape-only hooks (:mod:`pytest_featviz.survey`), and lists every name
the fixture accepts: module type, output shape (and layout), how often it ran, the leaf selectors of tuple/dict
outputs, and which layers the default choice (``layers=None``) takes. ``featviz show GOLDEN_DIR`` prints what a
stored snapshot (or every snapshot under a directory) holds. Subcommands register themselves in :data:`COMMANDS`, so
adding one is one function and one entry. This module never imports pytest; torch is imported only by the commands
that need it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from pytest_featviz import __version__
from pytest_featviz.records import FeatvizError, display_path, environment_words
from pytest_featviz.survey import survey

DEFAULT_INPUT_SHAPE = "1,3,224,224"
IDS_SUFFIX = ":ids"  # --input-shape 1,128:ids: token ids, all 0 (an id of every vocabulary), for a text model
SEED = 0


class CommandError(Exception):
    """A usage problem the command reports in one line (exit status 2)."""


@dataclass(frozen=True, slots=True)
class Command:
    """A subcommand: its help line, how it adds its arguments, and what it runs (returns the exit status)."""

    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, TextIO], int]


# ----------------------------------------------------------------------------------------------------------- layers


def _layers_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("factory", metavar="PACKAGE.MODULE:FACTORY", help="a callable that returns the nn.Module")
    parser.add_argument(
        "--input-shape",
        action="append",
        metavar="N,C,H,W",
        help="shape of a seeded random input tensor; repeat it for several positional inputs"
        f" (default {DEFAULT_INPUT_SHAPE}); end it with {IDS_SUFFIX} for token ids (all 0) of that shape, e.g. 1,128"
        + IDS_SUFFIX,
    )
    parser.add_argument(
        "--inputs",
        metavar="PACKAGE.MODULE:FUNCTION",
        help="a callable that returns the inputs instead (a tensor; a tuple is unpacked, a dict passed as keywords)",
    )
    parser.add_argument("--all", action="store_true", help="also list modules that never ran")


def load_callable(reference: str) -> Callable[..., Any]:
    """The object named by ``PACKAGE.MODULE:NAME`` (the current directory is importable)."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise CommandError(f"expected PACKAGE.MODULE:NAME, got {reference!r}")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CommandError(
            f"cannot import {module_name!r}: {exc} (run featviz where the module is importable: install the project,"
            " e.g. pip install -e ., or set PYTHONPATH, e.g. PYTHONPATH=src for a src/ layout)"
        ) from exc
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # an error while importing, or a module-level pytest.skip / importorskip
        raise CommandError(f"importing {module_name!r} raised {type(exc).__name__}: {exc}") from exc
    found: Any = module
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise CommandError(f"{module_name!r} has no attribute {attribute!r}")
        found = getattr(found, part)
    if not callable(found):
        raise CommandError(f"{reference} is a {type(found).__name__}, not a callable")
    if type(found).__name__ == "FixtureFunctionDefinition" or hasattr(found, "_pytestfixturefunction"):
        raise CommandError(
            f"{reference} is a pytest fixture, which only pytest can call: name the plain function that builds it"
            " (a fixture can return that function's result)"
        )
    return found  # type: ignore[no-any-return]


def _called(reference: str, function: Callable[[], Any]) -> Any:
    """``function()``; its error (also pytest.skip and pytest.fail, which are no ``Exception``) as a usage error."""
    try:
        return function()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        raise CommandError(f"{reference}() raised {type(exc).__name__}: {exc}") from exc


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,3,224,224"`` (or ``1x3x224x224``) -> ``(1, 3, 224, 224)``; a trailing :data:`IDS_SUFFIX` is the
    caller's to read."""
    parts = [part.strip() for part in text.strip().removesuffix(IDS_SUFFIX).replace("x", ",").split(",")]
    if not all(part.isdigit() for part in parts):
        raise CommandError(
            f"--input-shape must be comma-separated integers like {DEFAULT_INPUT_SHAPE}, optionally ending in"
            f" {IDS_SUFFIX}; got {text!r}"
        )
    shape = tuple(int(part) for part in parts)
    if not shape or any(s < 1 for s in shape):
        raise CommandError(f"--input-shape must be positive integers like {DEFAULT_INPUT_SHAPE}; got {text!r}")
    return shape


def _format_shape(shape: tuple[int, ...] | None) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")" if shape is not None else "-"


def _table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() + "\n")


def _run_layers(args: argparse.Namespace, out: TextIO) -> int:
    import torch

    factory = load_callable(args.factory)
    torch.manual_seed(SEED)
    model = _called(args.factory, factory)
    if not isinstance(model, torch.nn.Module):
        raise CommandError(f"{args.factory}() returned a {type(model).__name__}, not a torch.nn.Module")
    if args.inputs:
        inputs = _called(args.inputs, load_callable(args.inputs))
        described = args.inputs + "()"
    else:
        texts = [text.strip() for text in (args.input_shape or [DEFAULT_INPUT_SHAPE])]
        shapes = [parse_shape(text) for text in texts]
        generator = torch.Generator().manual_seed(SEED)
        tensors = tuple(
            torch.zeros(shape, dtype=torch.long)
            if text.endswith(IDS_SUFFIX)
            else torch.randn(shape, generator=generator)
            for text, shape in zip(texts, shapes, strict=True)
        )
        inputs = tensors[0] if len(tensors) == 1 else tensors
        described = " + ".join(
            _format_shape(s) + (" token ids" if t.endswith(IDS_SUFFIX) else "")
            for t, s in zip(texts, shapes, strict=True)
        )
    try:
        layers, default = survey(model, inputs)
    except FeatvizError:
        raise
    except Exception as exc:
        raise CommandError(
            f"the forward pass of {type(model).__name__} on {described} raised {type(exc).__name__}: {exc}"
            f" (give the input it expects with --input-shape, {IDS_SUFFIX} for token ids, or --inputs)"
        ) from exc
    chosen = set(default)
    rows = [["default", "name", "type", "output shape", "layout", "calls"]]
    for layer in layers:
        if not layer.shapes and not args.all:
            continue
        name_mark = "*" if layer.name in chosen else ""
        seen = sorted({_format_shape(s) for s in layer.shapes})
        shape_text = " | ".join(seen) if seen else "never ran"
        layouts = sorted(set(layer.layouts)) or [""]
        rows.append([name_mark, layer.name, layer.kind, shape_text, "|".join(layouts), str(len(layer.shapes))])
        for call in range(1, len(layer.shapes)):
            name = f"{layer.name}@{call}"
            if name in chosen:
                rows.append(["*", name, "", _format_shape(layer.shapes[call]), layer.layouts[call], ""])
        for selector, shape, layout in layer.leaves:
            rows.append(["", f"{layer.name}+{selector}", "(leaf)", _format_shape(shape), layout, ""])
    ran = sum(1 for layer in layers if layer.shapes)
    out.write(f"{type(model).__name__} on input {described}: {ran} of {len(layers)} modules ran\n")
    _table(rows, out)
    out.write(f"\ndefault choice (layers=None), {len(default)} layers: {', '.join(default)}\n")
    out.write(
        "names take glob patterns (layer*), a call index (block@1) and a leaf selector for tuple/dict outputs"
        " (backbone+out)\n"
    )
    return 0


# ------------------------------------------------------------------------------------------------------------- show


def _show_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("golden_dir", metavar="GOLDEN_DIR", help="a snapshot directory, or a directory above several")


def _channel_ranges(channels: Sequence[int]) -> str:
    parts: list[str] = []
    start = previous = channels[0]
    for index in [*channels[1:], None]:
        if index is not None and index == previous + 1:
            previous = index
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if index is not None:
            start = previous = index
    return ",".join(parts)


def _run_show(args: argparse.Namespace, out: TextIO) -> int:
    from pytest_featviz import golden, goldenpicture
    from pytest_featviz.render import mosaic_size

    root = Path(args.golden_dir)
    if root.name == golden.SIDECAR and root.is_file():  # a snapshot's sidecar: show that snapshot
        root = root.parent
    if not root.is_dir():
        raise CommandError(f"{root} is not a directory")
    snapshots = _snapshot_dirs(root)
    if not snapshots:
        raise CommandError(f"no {golden.SIDECAR} under {root}: not a golden directory")
    total, damaged = 0, 0
    for count, directory in enumerate(snapshots):
        # the path as given (from where the command runs), as the damage lines name files: it can be pasted back
        out.write(("\n" if count else "") + f"{directory.as_posix()}\n")
        try:
            stored = golden.read_sidecar(directory)
        except golden.GoldenError as exc:  # one damaged snapshot: said, and the others still shown
            out.write(f"  damaged: {exc}\n")
            damaged += 1
            continue
        assert stored is not None
        files = sorted(p for p in directory.iterdir() if p.is_file())
        size = sum(p.stat().st_size for p in files)
        total += size
        out.write(
            f"  normalize {stored.normalize}, {stored.bit_depth}-bit, format {stored.format},"
            f" {len(stored.layers)} layers, {len(files)} files, {size} bytes{_made_on(stored.provenance)}\n"
        )
        rows = [["layer", "shape", "layout", "tile", "channels", "mosaic", "bytes", "state"]]
        problems = []
        for layer in stored.layers:
            picture = directory / layer.file
            height, width = mosaic_size(len(layer.channels), layer.tile_shape)
            try:
                # hash, header and geometry, as a check does
                goldenpicture.read_layer(directory, layer, stored.bit_depth)
                state = "ok"
            except golden.GoldenError as exc:
                state = "damaged"
                problems.append(f"  {layer.name}: {exc}")
            rows.append(
                [
                    layer.name,
                    _format_shape(layer.shape),
                    layer.layout or "-",
                    f"{layer.tile_shape[0]}x{layer.tile_shape[1]}",
                    f"{len(layer.channels)}: {_channel_ranges(layer.channels)}",
                    f"{height}x{width}",  # as the tile: height x width
                    str(picture.stat().st_size) if picture.is_file() else "missing",
                    state,
                ]
            )
        _table([["  " + row[0], *row[1:]] for row in rows], out)
        for problem in problems:
            out.write(problem + "\n")
        damaged += bool(problems)
    if len(snapshots) > 1:
        out.write(f"\n{len(snapshots)} snapshots, {total} bytes")
        out.write(f"; {damaged} damaged\n" if damaged else "\n")
    return 1 if damaged else 0


def _snapshot_dirs(root: Path) -> list[Path]:
    """The snapshot directories at or below ``root``: those with a sidecar, and those with pictures but none (a
    sidecar lost in a merge, which a check fails on too); hidden ones (an interrupted update's) left out."""
    from pytest_featviz import golden

    if (root / golden.SIDECAR).is_file():
        return [root]
    found = {p.parent for p in root.rglob(golden.SIDECAR)} | {p.parent for p in root.rglob("*.png")}
    return sorted(d for d in found if not any(part.startswith(".") for part in d.relative_to(root).parts))


def _made_on(provenance: dict[str, Any] | None) -> str:
    """``; made on cpu with torch 2.14.1``: the environment a sidecar records, if it records one."""
    environment = (provenance or {}).get("environment")
    if not isinstance(environment, dict) or "device" not in environment or "torch" not in environment:
        return ""
    return "; made on " + environment_words(environment)


def _promote_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "report_dir",
        nargs="?",
        default=None,
        help="the drift report directory (default: the one pytest run from here writes: the featviz_report_dir of the"
        " pytest configuration file found here or above, else featviz-report beside that file)",
    )
    parser.add_argument(
        "--root",
        default=None,
        help="the pytest rootdir the report's golden paths are relative to (default: the one report.json records)",
    )
    parser.add_argument(
        "--golden-dir",
        default=None,
        help="confirm the report's golden directory when it lies outside the rootdir and the project's configuration"
        " does not name it (promote asks for it then)",
    )
    parser.add_argument(
        "-k",
        dest="select",
        default=None,
        help="only the snapshots of the test with this id, else of the tests whose id contains this text",
    )


def _run_promote(args: argparse.Namespace, out: TextIO) -> int:
    from pytest_featviz import promote, report

    if args.select == "":  # a usage error (an unset shell variable), before the report is read
        raise CommandError("-k is empty: give a test id or a part of one (an empty one would select every snapshot)")
    if args.report_dir is not None:
        report_dir = Path(args.report_dir)
    else:  # the one pytest run from here writes, relative to here as the messages below show it
        report_dir = Path(display_path(promote.default_report_dir(Path.cwd())))
    if not (report_dir / report.REPORT_JSON).is_file():
        raise CommandError(
            f"no {report.REPORT_JSON} in {report_dir.resolve()}: run pytest first (it writes the report on drift), or"
            " name the report directory (featviz promote PATH)"
        )
    try:
        root = Path(args.root) if args.root is not None else None
        confirmed = Path(args.golden_dir) if args.golden_dir is not None else None
        promotion = promote.promote_report(report_dir, root, args.select, confirmed)
    except (OSError, ValueError) as exc:
        raise FeatvizError(f"cannot promote from {report_dir}: {exc}") from exc
    written = promotion.written
    for directory, changed in written:
        out.write(f"{'promoted' if changed else 'already the current render:'} {display_path(directory)}\n")
    for refusal in promotion.refused:
        out.write(f"refused {refusal}\n")
    if promotion.unreadable:
        out.write(
            f"not promoted: {len(promotion.unreadable)} golden snapshot(s) that the run could not read have no current"
            f" render ({', '.join(promotion.unreadable)}); each one's message in the report says why and how to fix"
            " it\n"
        )
    if promotion.expected:
        ids = " ".join(shlex.quote(test_id) for test_id in promotion.expected)
        out.write(
            f"not promoted: the drift of {len(promotion.expected)} test(s) that expect it, marked xfail or catching"
            f" the error ({ids}); promote one with -k and its whole test id\n"
        )
    if written:
        replaced = sum(1 for _, changed in written if changed)
        same = f"; {len(written) - replaced} already held it" if replaced < len(written) else ""
        review = "; review and commit them" if replaced else " (promoted before: nothing to write)"
        out.write(f"{replaced} golden snapshot(s) written from the current render{same}{review}\n")
    elif (promotion.unreadable or promotion.expected) and not promotion.refused:
        return 1
    elif not promotion.refused:
        what = f"whose test id contains {args.select!r}" if args.select is not None else "with a current render"
        out.write(f"nothing promoted: the report in {report_dir} has no drifted or missing snapshot {what}\n")
        if promotion.written_by_run:
            ids = " ".join(shlex.quote(test_id) for test_id in promotion.written_by_run)
            out.write(
                f"  the run that wrote it created or updated the goldens of {len(promotion.written_by_run)} such"
                f" test(s) itself ({ids}): review those in git\n"
            )
        return 1
    if promotion.refused:
        out.write(
            f"{len(promotion.refused)} snapshot(s) refused (see above): nothing was written or deleted for them\n"
        )
        return 1
    return 0


COMMANDS: dict[str, Command] = {
    "layers": Command("list the layer names a model offers, and the default choice", _layers_arguments, _run_layers),
    "show": Command("show what a stored golden snapshot holds", _show_arguments, _run_show),
    "promote": Command(
        "copy the current renders of a drift report into the goldens (what --featviz-update would write)",
        _promote_arguments,
        _run_promote,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``featviz`` with every registered subcommand."""
    parser = argparse.ArgumentParser(prog="featviz", description="pytest-featviz: look at layers and goldens.")
    parser.add_argument("--version", action="version", version=f"pytest-featviz {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        sub = commands.add_parser(name, help=command.help, description=command.help)
        command.arguments(sub)
        sub.set_defaults(run=command.run)
    return parser


SIGPIPE_STATUS = 128 + 13  # what a shell reports for a command ended by SIGPIPE


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run ``featviz``; returns the exit status (0 fine, 1 a featviz error, 2 a usage error, 141 the reader of its
    output went away)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    stream = out if out is not None else sys.stdout
    try:
        status: int = args.run(args, stream)
        stream.flush()  # here, not at exit, so that a closed pipe is met below
    except BrokenPipeError:
        # The reader went away (``featviz show golden | head``): stop quietly, with the status of a command ended by
        # SIGPIPE, and point stdout at /dev/null so that Python's own flush at exit does not raise again.
        if stream is sys.stdout:
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return SIGPIPE_STATUS
    except CommandError as exc:
        sys.stderr.write(f"featviz {args.command}: error: {exc}\n")
        return 2
    except FeatvizError as exc:
        sys.stderr.write(f"featviz {args.command}: {exc}\n")
        return 1
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
