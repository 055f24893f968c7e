"""The snapshot policy: capture -> render -> compare -> matched, drifted, missing, created or updated.

:class:`pytest_featviz.fixture.FeatureSnapshot`, the object behind the ``feature_snapshot`` fixture, resolves each
call's settings (call over marker over CLI over ini), finds the golden directory, and hands the work to
:func:`check_snapshot`, which is the one place that decides what happens. The parts it calls live beside it:
:mod:`pytest_featviz.current` captures the layers and scores each against its golden,
:mod:`pytest_featviz.noisefloor` judges a layer again by its float noise, and :mod:`pytest_featviz.messages` words
the message of a drift.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torch import nn

from pytest_featviz import calibrate, durable, environment, golden, goldenpath, goldenwrite
from pytest_featviz.capture import split_call
from pytest_featviz.config import Settings
from pytest_featviz.current import (
    BIT_DEPTH,
    CHANNELS_CHANGED,
    LAYOUT_CHANGED,
    NORMALIZE_CHANGED,
    CurrentLayer,
    capture_layers,
    compare_with_golden,
)
from pytest_featviz.environment import Provenance, deterministic_mode, provenance_sentences
from pytest_featviz.fingerprint import SCHEMES, WEIGHT_SCHEME, ParameterFingerprints
from pytest_featviz.golden import GoldenError, GoldenWriteError, LayerGolden, SnapshotGolden
from pytest_featviz.layers import LayerSpec, module_index, under_another_parent
from pytest_featviz.messages import drift_message
from pytest_featviz.noisefloor import fit_noise_floor, measure_against_golden
from pytest_featviz.outcomes import raised_outside, shown_below
from pytest_featviz.records import (
    CREATED,
    DRIFT,
    DRIFTED,
    GONE,
    MATCH,
    MATCHED,
    MISSING,
    NEW,
    UPDATED,
    CalibrationRun,
    Evidence,
    LayerEvidence,
    LayerResult,
    SnapshotResult,
    display_path,
)
from pytest_featviz.stages import default_selection

CALIBRATE_DRIFTED = (
    "not calibrated: this snapshot drifted from its golden, and its scores under the perturbations would credit that"
    " change to them; calibrate against a golden it matches"
)
CREATE_WITH = "create it with:  "  # a missing snapshot's message line; the session summary collects the commands
# Reasons of a layer's drift that compared no picture: the snapshot's own settings changed (compare_with_golden,
# _check), or the model lost a module the golden holds.
NOT_CAPTURED = "in the golden but not captured now"
NOT_IN_GOLDEN = "selected now but not in the golden"
NOT_IN_MODEL = "no longer in the model"
SETTING_CHANGES = (CHANNELS_CHANGED, NORMALIZE_CHANGED, NOT_CAPTURED, NOT_IN_GOLDEN, NOT_IN_MODEL)


def _elsewhere_note(names: Sequence[str], name: str) -> str:
    """For a golden's layer gone from the model of layer ``names``: its layers of the same name under another
    parent, if any."""
    found = under_another_parent(names, name)
    return f" (the model has {', '.join(map(repr, found))}: the same name under another parent module)" if found else ""


def _calls_note(name: str, current: Sequence[CurrentLayer], stored: SnapshotGolden) -> str:
    """For a later call (``block@2``) of a module whose other calls are both captured and in the golden: how many
    times it runs now and how many of its calls the golden holds (the module runs another number of times)."""
    module, call = split_call(name)
    if call is None:
        return ""

    def calls(names: Iterable[str]) -> int:
        return sum(1 for n in names if split_call(n)[0] == module)

    now, held = calls(c.capture.name for c in current), calls(layer.name for layer in stored.layers)
    return f": {module!r} ran {now} time(s), the golden holds {held} of its calls" if now and held else ""


@dataclass(frozen=True, slots=True)
class TestIdentity:
    """Where a snapshot belongs: the test's node id, its file (relative to the rootdir) and its name."""

    __test__ = False  # not a pytest test class

    node_id: str
    test_file: str
    test_name: str
    update_command: str
    # the test file, whose path relative to the snapshot's directory the sidecar records, so that stale detection
    # can tell a golden whose test file is gone; None where it is not known
    path: Path | None = None
    # where pytest ran: the paths a message shows are relative to it, as the commands it prints, even when the test
    # changed the working directory; None: the working directory
    invocation_dir: Path | None = None

    @property
    def create_command(self) -> str:
        """The command line that creates this test's missing goldens and checks its others (:data:`UPDATE` swapped
        for :data:`CREATE` in :attr:`update_command`): it never rewrites a golden, so it accepts no drift unseen."""
        head = f"pytest {UPDATE} "
        if not self.update_command.startswith(head):
            return self.update_command
        return f"pytest {CREATE} {self.update_command[len(head) :]}"


UPDATE = "--featviz-update"  # creates missing goldens and rewrites drifted ones
CREATE = "--featviz-create"  # creates missing goldens only; a drift fails as in a check


def update_command(node_id: str, extra_args: Sequence[str] = ()) -> str:
    """The command line that creates or refreshes the goldens of one test."""
    return shlex.join(["pytest", UPDATE, *extra_args, node_id])


def _refuse_case_twin(golden_root: Path, directory: Path, take_back: bool = False) -> None:
    """Fail when a segment of ``directory`` has a case-only twin on disk (:func:`goldenpath.case_twin`); with
    ``take_back``, first remove the golden this call just created there (unless the two are one directory, on a file
    system that ignores case)."""
    twin = goldenpath.case_twin(golden_root, directory)
    if twin is None:
        return
    if take_back and not os.path.samefile(*twin):
        goldenwrite.remove_created(directory, twin[0])
    raise GoldenError(goldenpath.case_message(*twin, directory), recreatable=False)


def _damaged(damage: GoldenError, drifted: list[str], directory: Path) -> GoldenError:
    """The error a check fails with on a damaged golden picture: ``damage``, saying which of the snapshot's other
    layers drifted from the golden, since the command that re-creates the golden accepts their drift unseen."""
    if drifted:
        names = ", ".join(repr(name) for name in drifted[:LAYERS_NAMED])
        more = f" and {len(drifted) - LAYERS_NAMED} more" if len(drifted) > LAYERS_NAMED else ""
        text, hint = str(damage), golden.RECREATE_HINT
        note = f" (layer(s) {names}{more} of this snapshot drifted from the golden too: re-creating it accepts that)"
        text = text[: -len(hint)] + note + hint if text.endswith(hint) else text + note
        damage = GoldenError(text, recreatable=damage.recreatable)
    damage.unread = directory
    return damage


LAYERS_NAMED = 5  # of the other drifted layers a damaged golden's error names


def _selection(model: nn.Module, inputs: Any, layers: LayerSpec, stored: SnapshotGolden | None) -> LayerSpec:
    __tracebackhide__ = raised_outside
    if layers is not None:
        return layers
    if stored is not None:
        # The golden records which layers the default choice took, and a check compares those, whatever the default
        # would take now: a layer the model lost shows as gone, a stage it gained is compared once the golden is
        # made again (docs/writing-tests.md).
        return [layer.name for layer in stored.layers]
    return default_selection(model, inputs)


def check_snapshot(
    model: nn.Module,
    inputs: Any,
    layers: LayerSpec,
    settings: Settings,
    directory: Path,
    identity: TestIdentity,
    snapshot_name: str,
    *,
    measure_noise: bool = False,
) -> Evidence:
    """Capture, compare with the golden in ``directory`` and, in update mode, write; never raises on drift.

    Returns the result record with the pictures behind it, for the report. With ``settings.deterministic`` the
    model runs inside :func:`environment.deterministic_mode`; with ``settings.golden_key == "device"`` the golden of
    the device type (``<directory>@cuda``) is used when there is one, else the shared one in ``directory``, and a
    drift under ``--featviz-update`` writes the device's own golden and leaves the shared one alone. With
    ``settings.noise_floor``, layers whose scores are not clean are judged again by tolerances fitted to their TF32
    noise (:func:`noisefloor.fit_noise_floor`); ``measure_noise`` measures the noise of every compared layer
    (benchmarks).
    """
    __tracebackhide__ = raised_outside
    with deterministic_mode(settings.deterministic):
        return _check(model, inputs, layers, settings, directory, identity, snapshot_name, measure_noise)


def _check(
    model: nn.Module,
    inputs: Any,
    layers: LayerSpec,
    settings: Settings,
    directory: Path,
    identity: TestIdentity,
    snapshot_name: str,
    measure_noise: bool = False,
    again: bool = True,
) -> Evidence:
    """:func:`check_snapshot`'s work. A write in update or create mode that finds the golden written by another
    process since it was read (xdist workers running repeats of one test, which share its goldens) checks again
    against that golden, once (``again``): the outcome a serial run gives, where the later repeat sees the golden
    the earlier one wrote. So does a check whose golden another process switched in after its sidecar was read (a
    picture that does not match that sidecar is then no damage)."""
    __tracebackhide__ = raised_outside

    def recheck() -> Evidence:
        return _check(model, inputs, layers, settings, original, identity, snapshot_name, measure_noise, again=False)

    _refuse_case_twin(settings.golden_dir, directory)
    original = directory
    keyed: Path | None = None  # the device's own golden directory, when keyed goldens are on and it has none yet
    device: str | None = None  # the device type goldens are keyed by, when they are
    if settings.golden_key == "device":
        device = environment.device_type(model, inputs)
        goldenpath.refuse_device_name(directory, snapshot_name, device)
        keyed = goldenpath.keyed_dir(directory, device)
        if keyed.is_dir():
            directory, keyed = keyed, None
    damaged = False  # a damaged golden that update mode re-creates: counted as updated, not created
    # taken before the golden is read: a switch by another process after the read shows when this one would write
    stamps = {path: durable.stamp(path) for path in (directory, keyed) if path is not None}
    unread: GoldenError | None = None  # update mode: the damage of a sidecar it re-creates
    try:
        stored = golden.read_sidecar(directory)
    except GoldenError as exc:
        # not over a golden of a newer format, one not fetched from Git LFS, or one the OS refuses to read
        if not settings.update or not exc.recreatable:
            exc.unread = directory  # the session counts it as unreadable
            raise
        stored, damaged, unread = None, True, exc
    if stored is None:
        keyed = None  # a missing golden creates the shared one
    spec = _selection(model, inputs, layers, stored)
    modules: dict[str, nn.Module] = {}
    current, gone = capture_layers(model, inputs, spec, settings, stored, modules)
    made: dict[int, Provenance] = {}
    reduced = ParameterFingerprints(model)  # nothing is reduced before a provenance is asked for

    def now(scheme: int = WEIGHT_SCHEME) -> Provenance:
        """This run's provenance, its weight fingerprints made by ``scheme``, computed once and only when written or
        explained (never on a match); by two schemes (a drift against an older golden, whose current render records
        the newest), each tensor is reduced once."""
        if scheme not in made:
            made[scheme] = environment.provenance(model, inputs, modules, scheme, reduced)
        return made[scheme]

    calibration: tuple[CalibrationRun, ...] = ()  # measured below, once the snapshot is known to match

    def recorded() -> dict[str, Any]:
        """What the sidecar records of the run that writes it: provenance, and the test file it belongs to."""
        return {**now().to_sidecar(), **_test_entry(identity, directory)}

    def fresh() -> tuple[str, dict[str, bytes]]:
        layers, pictures = _portable([item.as_golden(settings.normalize) for item in current])
        snapshot = SnapshotGolden(settings.normalize, BIT_DEPTH, tuple(layers), provenance=recorded())
        return golden.sidecar_text(snapshot), pictures

    def whole(sidecar: str, pictures: dict[str, bytes], kept: list[str]) -> tuple[str, dict[str, bytes]]:
        """A rewrite of the golden in ``directory`` (:func:`_rewritten`) with the pictures of the layers it keeps
        too, read from the golden, so that the report's current render is that golden whole; the whole fresh render
        where one of them cannot be read (the golden changed since it was read: promote refuses it anyway)."""
        try:
            return sidecar, {**pictures, **{file: (directory / file).read_bytes() for file in kept}}
        except OSError:
            return fresh()

    def accepted(results: Sequence[LayerResult]) -> Callable[[], tuple[str, dict[str, bytes]]]:
        """What accepting the drift writes, as ``--featviz-update`` does: the drifted layers of the golden (a
        device's own golden, when the shared one drifted on this device: whole)."""
        if keyed is not None:
            return fresh
        assert stored is not None
        return lambda: whole(*_rewritten(stored, current, results, settings, recorded()))

    def evidence(
        outcome: str,
        results: Sequence[LayerResult],
        pictures: Sequence[LayerEvidence],
        message: str = "",
        render: Callable[[], tuple[str, dict[str, bytes]]] = fresh,
        unwritten: bool = False,
    ) -> Evidence:
        result = SnapshotResult(
            identity.node_id,
            snapshot_name,
            str(directory),
            outcome,
            tuple(results),
            message,
            calibration=calibration,
            update_dir=str(keyed) if keyed is not None and outcome in (DRIFTED, UPDATED) else None,
            device=device,
            recreated=damaged and outcome == UPDATED,
            # what accepting it writes over: the golden compared with, or nothing (none yet; the device's own)
            replaces=(stored.digest if stored and keyed is None else "") if outcome in (DRIFTED, MISSING) else None,
            unwritten=unwritten,
        )
        return Evidence(result, tuple(pictures), stored.bit_depth if stored else BIT_DEPTH, render)

    if stored is None:
        results = [LayerResult(i.capture.name, NEW, i.capture.shape, None, i.capture.channels) for i in current]
        pictures = [LayerEvidence(i.capture.name, None, None) for i in current]
        unwritten: GoldenWriteError | None = None
        if settings.update or settings.create:
            sidecar, files = fresh()
            try:
                if damaged:
                    with durable.locked(directory.parent):  # as a rewrite below
                        replaced = again and durable.stamp(directory) != stamps[directory]
                        if not replaced:
                            goldenwrite.write_files(directory, sidecar, files)
                    if replaced:
                        return recheck()  # another process re-created it since it was read
                elif not again:
                    goldenwrite.write_files(directory, sidecar, files)
                elif not goldenwrite.create_files(directory, sidecar, files):
                    return recheck()  # another process created it since it was found missing
            except GoldenWriteError as exc:
                if unread is not None:  # still the damaged golden it could not read: unreadable, as in a check
                    raise _not_recreated(unread, exc, directory) from exc
                unwritten = exc  # still missing: counted and reported as missing, the reason first
        if unwritten is None and (settings.update or settings.create):
            # Another process (an xdist worker) may have created a case-only twin since the check above: both
            # would pass their update and fail every later check. Looking again after writing, the one that sees
            # the twin takes its own golden back and fails, as the second of the two does in a serial run. The
            # look and the take-back hold the golden root's lock, so that two twins cannot each see the other
            # and both take theirs back, leaving neither.
            with durable.locked(settings.golden_dir):
                _refuse_case_twin(settings.golden_dir, directory, take_back=True)
            return evidence(UPDATED if damaged else CREATED, results, pictures)
        outside = ""
        if identity.test_file.startswith("../"):  # pytest -c other/pytest.ini: the rootdir is that file's folder
            outside = (
                f"its test file lies outside pytest's rootdir ({identity.test_file} from it), so its goldens have a"
                " folder of their own; if the rootdir is not the project's (pytest -c other/pytest.ini), run with"
                " --rootdir and the project's root\n"
            )
        message = (
            f"no golden for snapshot {snapshot_name!r} of {identity.node_id}"
            f" (looked for {display_path(directory / golden.SIDECAR, identity.invocation_dir)})\n"
            f"{outside}{CREATE_WITH}{identity.create_command}"
        )
        if unwritten is not None:
            message = _with_write_error(message, unwritten, settings, identity)
        return evidence(MISSING, results, pictures, message, unwritten=unwritten is not None)

    results = []
    pictures = []
    damage: GoldenError | None = None  # check mode: the first damaged picture, raised once the others are compared
    broken: set[str] = set()  # the layers whose picture is damaged
    for item in current:
        layer = stored.layer(item.capture.name)
        if layer is None:
            results.append(
                LayerResult(
                    item.capture.name,
                    NEW,
                    item.capture.shape,
                    None,
                    item.capture.channels,
                    reason=NOT_IN_GOLDEN + _calls_note(item.capture.name, current, stored),
                )
            )
            pictures.append(LayerEvidence(item.capture.name, None, None))
        else:
            try:
                result, picture = compare_with_golden(item, stored, layer, directory, settings)
            except GoldenError as exc:
                if again and durable.stamp(directory) != stamps[directory]:
                    # another process (an update run beside this one) switched the golden in after its sidecar was
                    # read: the picture belongs to the new one, nothing is damaged; compared again, with the new one
                    return recheck()
                if not exc.recreatable:
                    exc.unread = directory
                    raise
                # update mode re-creates a damaged picture, as it re-creates a damaged sidecar; a check fails on it
                # after comparing the other layers, so that its message says what re-creating it would accept
                damaged = True
                damage = damage or exc
                broken.add(item.capture.name)
                shape, channels = item.capture.shape, item.capture.channels
                result = LayerResult(item.capture.name, DRIFT, shape, layer.shape, channels, reason=str(exc))
                picture = LayerEvidence(item.capture.name, None, None)
            results.append(result)
            pictures.append(picture)
    if damage is not None and not settings.update:
        raise _damaged(damage, [r.name for r in results if r.drifted and r.name not in broken], directory)
    captured = {item.capture.name for item in current}
    names = list(module_index(model)) if gone else []  # where the gone layers may be now
    for layer in stored.layers:
        if layer.name not in captured:
            reason = (
                NOT_IN_MODEL + _elsewhere_note(names, layer.name)
                if layer.name in gone
                else NOT_CAPTURED + _calls_note(layer.name, current, stored)
            )
            results.append(LayerResult(layer.name, GONE, None, layer.shape, layer.channels, reason=reason))
            pictures.append(LayerEvidence(layer.name, None, None))
    if settings.noise_floor or measure_noise:
        results = fit_noise_floor(
            model, inputs, spec, settings, stored, directory, current, results, pictures, measure_noise
        )
    if settings.calibrate:
        # Against a golden this run already differs from, every perturbation's scores would carry that difference,
        # and the table would credit a real change to harmless noise.
        calibration = (
            (CalibrationRun("all", (), CALIBRATE_DRIFTED),)
            if any(r.drifted for r in results)
            else calibrate.calibrate(model, inputs, measure_against_golden(spec, settings, stored, directory))
        )
    if not any(r.drifted for r in results):
        if settings.update:  # nothing to write; a killed run's hidden copy beside it would otherwise stay for good
            durable.remove_leftovers(directory)
        return evidence(MATCHED, results, pictures)
    not_written: GoldenWriteError | None = None  # an update that could not write: the drift is kept, reason first
    if settings.update:
        provenance = recorded()  # the fingerprints, before the lock
        render = fresh
        try:
            # Writers of this test's goldens in other processes wait, so the one that finds the golden rewritten
            # since it was read by another checks again rather than rewriting it a second time.
            with durable.locked(directory.parent):
                target = keyed or directory
                if again and _replaced_meanwhile(target, None if keyed else stored, stamps[target]):
                    replaced = True
                elif keyed is not None:  # the shared golden drifted on this device: write the device's own, whole
                    sidecar, files = fresh()
                    goldenwrite.write_files(keyed, sidecar, files)
                    replaced = False  # the result names the shared golden it compared, and the device's as update_dir
                    render = lambda: (sidecar, files)  # noqa: E731  (what it wrote, for --featviz-report-all)
                else:  # the drifted layers; those that still match keep their picture
                    sidecar, files, kept = _rewritten(stored, current, results, settings, provenance)
                    goldenwrite.write_files(directory, sidecar, files)
                    replaced = False
                    render = lambda: whole(sidecar, files, kept)  # noqa: E731
        except GoldenWriteError as exc:
            if damage is not None:  # a damaged picture it could not re-create: unreadable, as in a check
                raise _not_recreated(damage, exc, directory) from exc
            not_written = exc
        else:
            return recheck() if replaced else evidence(UPDATED, results, pictures, render=render)
    # a layout changed with its output's shape: the model's module types changed, or the plugin reads such outputs
    # another way now; either way no activation was compared, and none can be said to have moved
    layout_only = all(r.reason.startswith(LAYOUT_CHANGED) for r in results if r.drifted)
    settings_only = layout_only or all(r.reason.startswith(SETTING_CHANGES) for r in results if r.drifted)
    golden_provenance = Provenance.from_sidecar(stored.provenance)
    # the weights fingerprinted as the golden's were (by an older version's scheme), unless it is of a newer one
    scheme = golden_provenance.scheme if golden_provenance and golden_provenance.scheme in SCHEMES else WEIGHT_SCHEME
    current_provenance = now(scheme)
    # a golden's layer gone from the model: its names changed, and a name that still selects may select another one
    explanation = provenance_sentences(
        golden_provenance, current_provenance, not settings_only, [r.name for r in results], bool(gone)
    )
    # made where it runs now: a layer's movement below its tolerances is no float noise of another machine
    same_place = (
        golden_provenance is not None
        and golden_provenance.environment.describe() == current_provenance.environment.describe()
    )
    if layout_only:
        explanation.insert(
            0,
            "the drifted layers were not compared picture by picture: their layout changed while their output shapes"
            " did not, so their modules' types changed, or this version of pytest-featviz reads such an output"
            " another way (see its changelog); if the model did not change, re-make the golden with --featviz-update",
        )
    elif settings_only:
        explanation.insert(
            0,
            "the drifted layers were not compared picture by picture: their selection, channels or normalization"
            " differ from the golden's (the test's layers=, channels= or normalize=, a marker or an option changed,"
            " the model no longer has a layer the golden holds, or runs a module another number of times)",
        )
    if keyed is not None:
        explanation.append(
            f"this is the shared golden: there is no golden for {device} yet"
            f" (--featviz-update would write {display_path(keyed, identity.invocation_dir)} and leave the"
            " shared one alone)"
        )
    # a layer before the first drift whose own weights changed is where the change starts (not where names moved)
    new_weights = set() if gone else environment.layers_with_new_weights(golden_provenance, current_provenance)
    message = drift_message(identity, snapshot_name, directory, results, explanation, same_place, new_weights)
    if not_written is not None:
        message = _with_write_error(message, not_written, settings, identity)
    return evidence(DRIFTED, results, pictures, message, accepted(results), unwritten=not_written is not None)


def _test_entry(identity: TestIdentity, directory: Path) -> dict[str, Any]:
    """The sidecar's ``"test"`` entry: the test file's path relative to the snapshot's directory (the same for its
    device-keyed sibling), so the golden tells where its test file was whichever golden root reads it. Empty when
    the file is not known, lies on another drive or has a path that is not UTF-8."""
    if identity.path is None:
        return {}
    try:
        relative = os.path.relpath(identity.path, directory)
        relative.encode("utf-8")  # a folder named in bytes that are not UTF-8 (lone surrogates): no JSON holds it
    except (ValueError, UnicodeEncodeError):  # ValueError: another drive
        return {}
    return {"test": {"file": relative.replace(os.sep, "/")}}


def _portable(made: Sequence[tuple[LayerGolden, bytes | None]]) -> tuple[list[LayerGolden], dict[str, bytes]]:
    """A snapshot's layers and the pictures to write (by file name), the files of new pictures (``bytes``; ``None``
    for a layer whose file on disk is kept) named so that no two differ only in letter case
    (:func:`goldenpath.case_unique_files`)."""
    files = goldenpath.case_unique_files([(layer.name, layer.file, png is None) for layer, png in made])
    layers = [
        layer if layer.file == file else replace(layer, file=file) for (layer, _), file in zip(made, files, strict=True)
    ]
    pictures = {file: png for (_, png), file in zip(made, files, strict=True) if png is not None}
    return layers, pictures


def _with_write_error(message: str, error: GoldenWriteError, settings: Settings, identity: TestIdentity) -> str:
    """The message of a check whose golden an update or create run could not write: the OS's reason first, then the
    check's message, whose command is the one just run: run again as it is, it meets the same error until the
    reason is dealt with."""
    reason = shown_below(str(error), settings.golden_dir, identity.invocation_dir)
    return f"{reason}\n(once that is fixed, the same run writes it)\n{message}"


def _not_recreated(damage: GoldenError, error: GoldenWriteError, directory: Path) -> GoldenError:
    """The error of a damaged golden that ``--featviz-update`` could not re-create: the damage, then why it could not
    write, counted as unreadable (``unread``), as a check counts it."""
    failed = GoldenError(f"{damage}\n--featviz-update could not re-create it: {error}", recreatable=False)
    failed.unread = directory
    return failed


def _replaced_meanwhile(directory: Path, stored: SnapshotGolden | None, before: tuple[int, int] | None) -> bool:
    """Whether another process wrote the golden in ``directory`` since it was read: the directory is not the one
    whose :func:`durable.stamp` was ``before`` (a lost picture re-created leaves the sidecar as it was), or its
    golden is no longer ``stored`` (``None``: none was there)."""
    if durable.stamp(directory) != before:
        return True
    try:
        return golden.read_sidecar(directory) != stored
    except GoldenError:  # damaged meanwhile: checked again, which says so
        return True


def _rewritten(
    stored: SnapshotGolden,
    current: list[CurrentLayer],
    results: Sequence[LayerResult],
    settings: Settings,
    provenance: dict[str, Any] | None = None,
) -> tuple[str, dict[str, bytes], list[str]]:
    """What rewriting a drifted golden writes: its sidecar, the pictures of the layers re-rendered (the drifted ones,
    all of them when the normalization changed) by file name, and the files of the layers that still match, which
    keep their picture and sidecar entry. The sidecar records ``provenance`` (the sidecar entries of the run that
    wrote the new pictures)."""
    verdicts = {r.name: r.verdict for r in results}
    mode_changed = settings.normalize != stored.normalize
    made: list[tuple[LayerGolden, bytes | None]] = []
    for item in current:
        kept = stored.layer(item.capture.name)
        if kept is not None and verdicts[item.capture.name] == MATCH and not mode_changed:
            made.append((kept, None))
        else:
            made.append(item.as_golden(settings.normalize))
    layers, pictures = _portable(made)
    snapshot = SnapshotGolden(
        settings.normalize,
        BIT_DEPTH,
        tuple(layers),
        provenance=provenance if provenance is not None else stored.provenance,
    )
    return golden.sidecar_text(snapshot), pictures, [layer.file for layer in layers if layer.file not in pictures]
