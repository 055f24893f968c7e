"""Check overhead: (feature_snapshot call - bare forward) / bare forward, against a straightforward baseline.

For ResNet-18 (224 px, ``relu, layer1..layer4``, 16 channels) and ResNet-50 (8 layers, 16 channels), timed side by
side in one run (interleaved):

* ``bare``: the forward pass alone (eval, inference mode), what the test runs anyway;
* ``check``: a ``feature_snapshot`` call against an existing, matching golden made by the same code on this
  machine, so every tile is byte-identical (a re-run in CI on the same kind of machine);
* ``check, TF32 golden``: the same against a golden made under emulated TF32 (as on a GPU), so most tiles differ
  by float noise and every score is computed; it still matches;
* ``update``: the same call under ``--featviz-update`` writing a fresh golden (every layer's PNG and the sidecar);
* ``update unchanged``: the same call under ``--featviz-update`` against a golden it still matches (writes nothing);
* ``baseline check`` / ``baseline update``: the straightforward way, written here: hooks that keep the whole
  output, one scikit-image ``structural_similarity`` call and one PNG file (Pillow's default settings) per channel.

On a busy machine the difference of two noisy wall times can even come out negative, so a third estimate is printed:
``direct`` = the plugin's own work (a check with the forward pass taken out, in thread CPU time) divided by the
fastest bare forward pass. The last line says where an update's extra time goes: the same work of a check, of an
update, and of an update that reuses its first call's provenance (the weight, input and environment fingerprints
a sidecar records), in process CPU time.

Usage: ``python benchmarks/overhead.py [--repeats N] [--model 18|50]``. Targets (issue #6): overhead <= 0.25
(ResNet-18) and <= 0.15 (ResNet-50); update no slower than check.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from pytest_featviz import calibrate  # noqa: E402

TARGETS = {18: 0.25, 50: 0.15}


class Baseline:
    """The straightforward snapshot check the plugin is measured against (per channel, scikit-image, Pillow)."""

    def __init__(self, model: nn.Module, layers: list[str], directory: Path, channels: int = 16) -> None:
        self.model, self.layers, self.directory, self.channels = model, layers, directory, channels
        self.modules = dict(model.named_modules())

    def _capture(self, inputs: torch.Tensor) -> dict[str, np.ndarray[Any, Any]]:
        kept: dict[str, torch.Tensor] = {}
        handles = []
        for name in self.layers:

            def hook(module: nn.Module, args: Any, output: torch.Tensor, name: str = name) -> None:
                kept[name] = output.detach().clone()  # the whole output, all channels, all batch items

            handles.append(self.modules[name].register_forward_hook(hook))
        try:
            with torch.inference_mode():
                self.model(inputs)
        finally:
            for handle in handles:
                handle.remove()
        return {name: kept[name][0, : self.channels].numpy().astype(np.float64) for name in self.layers}

    @staticmethod
    def _tile(channel: np.ndarray[Any, Any], low: float, high: float) -> np.ndarray[Any, Any]:
        return np.rint(np.clip((channel - low) / max(high - low, 1e-12), 0, 1) * 255).astype(np.uint8)

    def update(self, inputs: torch.Tensor) -> None:
        import json

        maps = self._capture(inputs)
        self.directory.mkdir(parents=True, exist_ok=True)
        meta: dict[str, list[list[float]]] = {}
        for name, layer in maps.items():
            meta[name] = []
            for index, channel in enumerate(layer):
                low, high = float(channel.min()), float(channel.max())
                meta[name].append([low, high, float(channel.mean()), float(channel.std())])
                Image.fromarray(self._tile(channel, low, high)).save(self.directory / f"{name}-{index}.png")
        (self.directory / "meta.json").write_text(json.dumps(meta))

    def check(self, inputs: torch.Tensor) -> float:
        import json

        from skimage.metrics import structural_similarity

        maps = self._capture(inputs)
        meta = json.loads((self.directory / "meta.json").read_text())
        worst = 1.0
        for name, layer in maps.items():
            for index, channel in enumerate(layer):
                low, high, mean, std = meta[name][index]
                golden = np.array(Image.open(self.directory / f"{name}-{index}.png"))
                current = self._tile(channel, low, high)
                if min(golden.shape) < 7:
                    golden = np.kron(golden, np.ones((7, 7), np.uint8))
                    current = np.kron(current, np.ones((7, 7), np.uint8))
                score = structural_similarity(golden, current, data_range=255)
                rms = np.sqrt(np.mean((golden.astype(np.float64) - current) ** 2)) / max(golden.std(), 5.1)
                stat = max(abs(channel.mean() - mean), abs(channel.std() - std)) / max(std, 1e-12)
                worst = min(worst, score - rms - stat)
        return worst


def measure(depth: int, repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    layers = common.RESNET18_LAYERS if depth == 18 else common.RESNET50_LAYERS
    model, inputs = common.resnet(depth), common.photo()
    root = common.fresh_dir(f"overhead{depth}")
    golden_dir = root / "golden" / "snapshot"
    assert common.snapshot_call(model, inputs, layers, golden_dir, update=True) == "created"
    baseline = Baseline(model, layers, root / "baseline")
    baseline.update(inputs)
    scratch = root / "scratch"
    runs = iter(range(1_000_000))

    def update() -> None:
        # a fresh directory each time (removed with ``root`` at the end): the timing holds no deletion
        target = scratch / str(next(runs)) / "snapshot"
        assert common.snapshot_call(model, inputs, layers, target, update=True) == "created"

    def check() -> None:
        assert common.snapshot_call(model, inputs, layers, golden_dir, update=False) == "matched"

    noisy_dir = root / "golden" / "tf32"
    with calibrate.tf32_emulation():
        assert common.snapshot_call(model, inputs, layers, noisy_dir, update=True) == "created"

    def check_tf32_golden() -> None:
        assert common.snapshot_call(model, inputs, layers, noisy_dir, update=False) == "matched"

    def update_unchanged() -> None:
        assert common.snapshot_call(model, inputs, layers, golden_dir, update=True) == "matched"

    cases: dict[str, Callable[[], object]] = {
        "bare": lambda: common.bare_forward(model, inputs),
        "check": check,
        "check, TF32 golden": check_tf32_golden,
        "update": update,
        "update unchanged": update_unchanged,
        "baseline check": lambda: baseline.check(inputs),
        "baseline update": lambda: baseline.update(inputs),
    }
    timings = common.interleaved_wall_cpu(cases, repeats)
    timings[0]["bare (fastest run)"] = fastest_forward(model, inputs, repeats)
    timings[1]["plugin work (CPU)"] = plugin_work(model, inputs, layers, golden_dir, repeats)
    timings[1]["plugin work, TF32 golden (CPU)"] = plugin_work(model, inputs, layers, noisy_dir, repeats)
    timings[1].update(update_work(model, inputs, layers, golden_dir, scratch, repeats))
    shutil.rmtree(root, ignore_errors=True)
    return timings


def fastest_forward(model: nn.Module, inputs: torch.Tensor, repeats: int) -> float:
    """The fastest of ``repeats`` bare forward passes: the best estimate of the forward pass on a quiet machine."""
    import time

    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        common.bare_forward(model, inputs)
        best = min(best, time.perf_counter() - start)
    return best


def plugin_work(model: nn.Module, inputs: torch.Tensor, layers: list[str], golden_dir: Path, repeats: int) -> float:
    """Median thread CPU seconds of a check with the forward pass taken out (``capture`` replaced by its result).

    Everything after the forward pass (statistics, reading and decoding goldens, rendering, SSIM and the other
    scores, the result record) is single-threaded numpy, so CPU time measures it well on a busy machine. The copies
    made inside the hooks (16 channels of batch item 0, about 1 MB for ResNet-18) are left out.
    """
    import statistics
    import time

    from pytest_featviz import current
    from pytest_featviz.layers import resolve_layers

    recorded = current.capture(model, inputs, resolve_layers(model, layers), 16)
    original = current.capture
    current.capture = lambda *args, **kwargs: recorded  # type: ignore[assignment]
    try:
        samples = []
        for _ in range(repeats + 2):
            start = time.thread_time()
            assert common.snapshot_call(model, inputs, layers, golden_dir, update=False) == "matched"
            samples.append(time.thread_time() - start)
    finally:
        current.capture = original  # type: ignore[assignment]
    return statistics.median(samples[2:])


def update_work(
    model: nn.Module, inputs: torch.Tensor, layers: list[str], golden_dir: Path, scratch: Path, repeats: int
) -> dict[str, float]:
    """Where an update's extra time goes: median process CPU seconds (all threads: the weight fingerprints reduce
    large tensors on every core) of a check, an update writing a fresh golden, and that update with the provenance
    (weight, input and environment fingerprints) of its first call reused, all with the forward pass taken out and
    interleaved."""
    import statistics
    import time

    from pytest_featviz import current, environment
    from pytest_featviz.layers import resolve_layers

    recorded = current.capture(model, inputs, resolve_layers(model, layers), 16)
    capture, provenance = current.capture, environment.provenance
    made: list[Any] = []

    def reused(*args: Any, **kwargs: Any) -> Any:
        if not made:
            made.append(provenance(*args, **kwargs))
        return made[0]

    runs = iter(range(1_000_000))
    cases = {
        "plugin work, check (all threads)": (False, provenance),
        "plugin work, update (all threads)": (True, provenance),
        "plugin work, update without fingerprints (all threads)": (True, reused),
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    current.capture = lambda *args, **kwargs: recorded  # type: ignore[assignment]
    try:
        for _ in range(repeats + 2):
            for name, (update, provenance_of) in cases.items():
                environment.provenance = provenance_of  # type: ignore[assignment]
                directory = scratch / f"work{next(runs)}" / "snapshot" if update else golden_dir
                start = time.process_time()
                outcome = common.snapshot_call(model, inputs, layers, directory, update=update)
                samples[name].append(time.process_time() - start)
                assert outcome == ("created" if update else "matched")
    finally:
        current.capture, environment.provenance = capture, provenance  # type: ignore[assignment]
    return {name: statistics.median(values[2:]) for name, values in samples.items()}


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def report(depth: int, timings: tuple[dict[str, float], dict[str, float]]) -> str:
    wall, cpu = timings
    rows = []
    for name in [n for n in wall if n in cpu]:
        row = [name]
        for clock in (wall, cpu):
            row.append(f"{clock[name] * 1000:.1f}")
            row.append("" if name == "bare" else f"{(clock[name] - clock['bare']) / clock['bare']:.3f}")
        rows.append(row)
    layers = len(common.RESNET18_LAYERS if depth == 18 else common.RESNET50_LAYERS)
    lines = [
        f"ResNet-{depth}: {layers} layers x 16 channels, 224 px (medians of interleaved runs;"
        " CPU = process CPU time, all threads)",
        common.table(rows, ["case", "wall ms", "wall overhead", "CPU ms", "CPU overhead"]),
    ]
    target = TARGETS[depth]
    for label, clock in (("wall", wall), ("CPU", cpu)):
        check = (clock["check"] - clock["bare"]) / clock["bare"]
        noisy = (clock["check, TF32 golden"] - clock["bare"]) / clock["bare"]
        base = (clock["baseline check"] - clock["bare"]) / clock["bare"]
        update, unchanged = clock["update"] / clock["check"], clock["update unchanged"] / clock["check"]
        lines.append(
            f"{label}: check overhead {check:.3f} (target <= {target}: {_verdict(check <= target)}),"
            f" against a TF32 golden {noisy:.3f} ({_verdict(noisy <= target)}); baseline {base:.3f};"
            f" update/check {update:.2f} (target <= 1: {_verdict(update <= 1)}), an unchanged golden {unchanged:.2f},"
            f" update/TF32 check {clock['update'] / clock['check, TF32 golden']:.2f}"
        )
    fastest = wall["bare (fastest run)"]
    for case, key in (("", "plugin work (CPU)"), (", TF32 golden", "plugin work, TF32 golden (CPU)")):
        work = cpu[key]
        lines.append(
            f"direct{case}: plugin work {work * 1000:.1f} ms CPU / fastest bare forward {fastest * 1000:.1f} ms ="
            f" {work / fastest:.3f} (target <= {target}: {_verdict(work / fastest <= target)})"
        )
    check, update = cpu["plugin work, check (all threads)"], cpu["plugin work, update (all threads)"]
    bare = cpu["plugin work, update without fingerprints (all threads)"]
    lines.append(
        f"update's extra work: check {check * 1000:.1f} ms, update {update * 1000:.1f} ms, update with the provenance"
        f" (weight, input, environment fingerprints) reused {bare * 1000:.1f} ms (CPU, all threads, forward pass"
        f" taken out): the fingerprints are {(update - bare) / max(update - check, 1e-9):.0%} of what an update adds"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--model", type=int, choices=(18, 50), action="append")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for depth in args.model or [18, 50]:
        print(report(depth, measure(depth, args.repeats)))
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
