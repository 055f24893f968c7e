"""Detection benchmark: which real changes the default verdict catches, and which harmless ones it ignores.

Goldens are made from seeded torchvision CNNs (BatchNorm statistics calibrated on photos, affine parameters
randomised, as in a trained network) on scikit-image's astronaut photo; then each variant is checked against them.
Scores are recorded once per variant (every channel's SSIM, picture change and statistics change) and judged under
several detector settings, so the table compares settings on identical numbers.

    python benchmarks/detection.py            # the table for the default settings and the alternatives
    python benchmarks/detection.py --models resnet18
    python benchmarks/detection.py --models resnet18 --every-conv   # weight noise on each conv in turn

Harmful variants must FAIL, benign ones must PASS. The exit status is 1 when the default settings miss a harmful
case or alarm on a benign one.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import io
import json
import math
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from skimage import data
from torch import nn

from pytest_featviz import compare, config
from pytest_featviz.capture import capture
from pytest_featviz.config import Settings
from pytest_featviz.layers import resolve_layers
from pytest_featviz.records import DRIFT, MATCH, LayerResult
from pytest_featviz.snapshot import TestIdentity, check_snapshot

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def photo(name: str = "astronaut") -> torch.Tensor:
    """A scikit-image photo as a float tensor (1, 3, H, W) in 0..255."""
    image = getattr(data, name)()
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()


def preprocess(
    raw: torch.Tensor, size: int = 224, antialias: bool = True, scale: float = 255.0, normalize: bool = True
) -> torch.Tensor:
    x = F.interpolate(raw, size=(size, size), mode="bilinear", antialias=antialias, align_corners=False) / scale
    return (x - MEAN) / STD if normalize else x


def build(name: str) -> nn.Module:
    """A seeded torchvision model whose BatchNorm layers look trained: calibrated statistics, random affine."""
    torch.manual_seed(0)
    model: nn.Module = getattr(torchvision.models, name)()
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.weight.data = 0.5 + torch.rand(module.weight.shape, generator=generator)
            module.bias.data = 0.2 * torch.randn(module.bias.shape, generator=generator)
            module.momentum = None  # cumulative average over the calibration batches
            module.reset_running_stats()
    model.train()
    with torch.no_grad():
        for image in ("coffee", "chelsea", "astronaut"):
            model(preprocess(photo(image)))
    return model.eval()


def tf32_round(tensor: torch.Tensor) -> torch.Tensor:
    """Round float32 values to TF32's 10-bit mantissa (round to nearest)."""
    bits = tensor.float().contiguous().view(torch.int32)
    rounded = (bits + 0x1000) & ~0x1FFF
    return rounded.view(torch.float32)


def first_block(model: nn.Module) -> nn.Module:
    if hasattr(model, "layer2"):
        return model.layer2[0]  # type: ignore[index,no-any-return]
    return model.features[4]  # type: ignore[index,no-any-return]


def named(model: nn.Module, kind: type[nn.Module], within: nn.Module) -> nn.Module:
    return next(m for m in within.modules() if isinstance(m, kind))


@dataclass
class Variant:
    name: str
    harmful: bool
    change: Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[nn.Module, torch.Tensor]]
    frontier: bool = False


def _scaled_bn(attrs: tuple[str, ...], factor: float) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple]:
    def change(model: nn.Module, raw: torch.Tensor, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
        bn = named(model, nn.BatchNorm2d, first_block(model))
        for attr in attrs:
            getattr(bn, attr).data *= factor
        return model, x

    return change


def _weight_noise(level: float, seed: int = 3) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple]:
    def change(model: nn.Module, raw: torch.Tensor, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
        conv = named(model, nn.Conv2d, first_block(model))
        generator = torch.Generator().manual_seed(seed)
        conv.weight.data *= 1 + level * torch.randn(conv.weight.shape, generator=generator)
        return model, x

    return change


def _swap_activation(model: nn.Module, raw: torch.Tensor, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    block = first_block(model)
    for name, child in list(block.named_modules()):
        if isinstance(child, (nn.ReLU, nn.Hardswish, nn.ReLU6, nn.SiLU)):
            parent = block.get_submodule(name.rpartition(".")[0]) if "." in name else block
            setattr(parent, name.rpartition(".")[2], nn.GELU())
    return model, x


def _padding(model: nn.Module, raw: torch.Tensor, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    stem.padding_mode = "reflect"
    return model, x


def _shift(model: nn.Module, raw: torch.Tensor, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    return model, F.pad(x, (3, 0, 3, 0), mode="replicate")[..., :224, :224]


def _round_trip(model: nn.Module, raw: torch.Tensor, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = getattr(torchvision.models, type(model).__name__.lower(), None)
    clone = copy.deepcopy(model)
    clone.load_state_dict(torch.load(buffer, weights_only=True))
    del fresh
    return clone, x


def _threads(model: nn.Module, raw: torch.Tensor, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    torch.set_num_threads(1 if torch.get_num_threads() > 1 else 2)
    return model, x


def _tf32(model: nn.Module, raw: torch.Tensor, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(tf32_round(parameter))
    return model, tf32_round(x)


def _tf32_every_layer(model: nn.Module, raw: torch.Tensor, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    """What a GPU with TF32 on does: every conv / linear rounds its input and weights to a 10-bit mantissa."""
    model, x = _tf32(model, raw, x)

    def round_input(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return (tf32_round(args[0]),) + tuple(args[1:])

    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.register_forward_pre_hook(round_input)
    return model, x


def _train_mode(model: nn.Module, raw: torch.Tensor, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    return model.train(), x


VARIANTS = [
    Variant("channel order swapped (BGR)", True, lambda m, r, x: (m, x[:, [2, 1, 0]])),
    Variant("normalization missing", True, lambda m, r, x: (m, preprocess(r, normalize=False))),
    Variant("0-255 input", True, lambda m, r, x: (m, preprocess(r, scale=1.0))),
    Variant("resize without antialias", True, lambda m, r, x: (m, preprocess(r, antialias=False))),
    Variant("3-pixel shift", True, _shift),
    Variant("input size 256 instead of 224", True, lambda m, r, x: (m, preprocess(r, size=256))),
    Variant("one block's activation -> GELU", True, _swap_activation),
    Variant("BN running stats x1.05", True, _scaled_bn(("running_mean", "running_var"), 1.05)),
    Variant("BN running_var x1.05", True, _scaled_bn(("running_var",), 1.05)),
    Variant("BN affine x1.05", True, _scaled_bn(("weight", "bias"), 1.05)),
    Variant("5% noise on one conv's weights", True, _weight_noise(0.05)),
    Variant("padding mode zeros -> reflect (stem)", True, _padding),
    Variant("2% noise on one conv's weights", True, _weight_noise(0.02), frontier=True),
    Variant("1% noise on one conv's weights", True, _weight_noise(0.01), frontier=True),
    Variant("BN weight x1.01", True, _scaled_bn(("weight",), 1.01), frontier=True),
    Variant("re-run", False, lambda m, r, x: (m, x)),
    Variant("thread count changed", False, _threads),
    Variant(
        "channels_last",
        False,
        lambda m, r, x: (m.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)),
    ),
    Variant("float64", False, lambda m, r, x: (m.double(), x.double())),
    Variant("weights and input rounded to TF32", False, _tf32),
    Variant("TF32 in every conv (GPU-like)", False, _tf32_every_layer),
    Variant("state_dict save/load round trip", False, _round_trip),
    Variant("model left in train mode", False, _train_mode),
]


@dataclass(frozen=True)
class Detector:
    name: str
    threshold: float
    rms_tolerance: float
    stat_tolerance: float
    noise_floor: bool = False

    def fails(self, layers: list[LayerResult]) -> bool:
        """The verdict the plugin would give, from scores recorded with every tolerance open (same logic)."""
        for layer in layers:
            if layer.verdict != "match" and not layer.ssim:
                return True  # shape / layer-set change
            judged = dataclasses.replace(
                layer,
                verdict=MATCH,
                threshold=self.threshold,
                stat_tolerance=self.stat_tolerance,
                rms_tolerance=self.rms_tolerance,
                noise=None,
            )
            if any(judged.channel_failed(i) for i in range(len(judged.ssim))):
                return True
            noise = layer.noise if self.noise_floor else None
            if (
                noise is not None
                and compare.needs_noise_floor(judged)
                and compare.fitted(judged, noise).verdict == DRIFT
            ):
                return True
        return False


def preset(name: str, noise_floor: bool = True) -> Detector:
    threshold, stat_tolerance, rms_tolerance = config.PRESETS[name]
    label = f"preset {name}" + ("" if noise_floor else ", noise floor off")
    return Detector(label, threshold, rms_tolerance, stat_tolerance, noise_floor)


DEFAULT = preset("default")
DETECTORS = [
    Detector("naive: SSIM >= 0.99 only", 0.99, math.inf, math.inf),
    Detector("SSIM >= 0.98 only", 0.98, math.inf, math.inf),
    Detector("default SSIM + statistics only", DEFAULT.threshold, math.inf, DEFAULT.stat_tolerance),
    Detector("default SSIM + picture change only", DEFAULT.threshold, DEFAULT.rms_tolerance, math.inf),
    preset("default", noise_floor=False),
    preset("strict", noise_floor=False),
    preset("tolerant", noise_floor=False),
    DEFAULT,
    preset("strict"),
    preset("tolerant"),
]


def kept_maps(model: nn.Module, inputs: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """The float maps a snapshot keeps (16 channels of batch item 0) of the named layers."""
    return {item.name: item.maps.double() for item in capture(model, inputs, resolve_layers(model, names), 16)}


def closeness(golden: dict[str, torch.Tensor], current: dict[str, torch.Tensor]) -> float:
    """The smallest ``rtol = atol`` at which ``torch.testing.assert_close`` passes on every kept map."""
    worst = 0.0
    for name, expected in golden.items():
        actual = current.get(name)
        if actual is None or actual.shape != expected.shape:
            return math.inf
        worst = max(worst, float(((actual - expected).abs() / (1.0 + expected.abs())).max()))
    return worst


Scores = dict[str, tuple[bool, bool, list[LayerResult], float]]


def scores(model_name: str) -> Scores:
    """Per variant: harmful?, frontier?, the scored layers (every tolerance open) and the assert_close distance."""
    raw = photo()
    x = preprocess(raw)
    base = build(model_name)
    threads = torch.get_num_threads()
    out: Scores = {}
    with tempfile.TemporaryDirectory() as tmp:
        identity = TestIdentity("bench::" + model_name, "bench.py", model_name, "")
        make = Settings(golden_dir=Path(tmp), update=True)
        directory = Path(tmp, model_name)
        made = check_snapshot(copy.deepcopy(base), x, None, make, directory, identity, "0")
        names = [layer.name for layer in made.result.layers]
        reference = kept_maps(copy.deepcopy(base), x, names)
        wide = Settings(golden_dir=Path(tmp), threshold=-1.0, stat_tolerance=math.inf, rms_tolerance=math.inf)
        for variant in VARIANTS:
            model, inputs = variant.change(copy.deepcopy(base), raw, x.clone())
            try:
                evidence = check_snapshot(model, inputs, None, wide, directory, identity, "0", measure_noise=True)
                layers = list(evidence.result.layers)
                distance = closeness(reference, kept_maps(model, inputs, names))
            finally:
                torch.set_num_threads(threads)
            out[variant.name] = (variant.harmful, variant.frontier, layers, distance)
    return out


def every_conv(model_name: str, levels: tuple[float, ...] = (0.01, 0.02, 0.05)) -> None:
    """The weight-noise rows of the table for every conv of the model, not only the first conv of the first block the
    table perturbs: per noise level, how many convs the default catches, and which it misses (a conv deep in the
    network moves the statistics of the last snapshotted layers less than one near the input)."""
    raw = photo()
    x = preprocess(raw)
    base = build(model_name)
    convs = [name for name, module in base.named_modules() if isinstance(module, nn.Conv2d)]
    print(f"\n## {model_name}: noise on one conv's weights, for each of its {len(convs)} convs (default verdict)\n")
    print("| noise | caught | missed (with its largest statistics change) |")
    print("|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        identity = TestIdentity("bench::" + model_name, "bench.py", model_name, "")
        directory = Path(tmp, model_name)
        check_snapshot(
            copy.deepcopy(base), x, None, Settings(golden_dir=Path(tmp), update=True), directory, identity, "0"
        )
        wide = Settings(golden_dir=Path(tmp), threshold=-1.0, stat_tolerance=math.inf, rms_tolerance=math.inf)
        for level in levels:
            missed = []
            for position, name in enumerate(convs):
                model = copy.deepcopy(base)
                weight = model.get_submodule(name).weight
                generator = torch.Generator().manual_seed(3 + position)
                weight.data *= 1 + level * torch.randn(weight.shape, generator=generator)
                layers = list(
                    check_snapshot(model, x, None, wide, directory, identity, "0", measure_noise=True).result.layers
                )
                if not DEFAULT.fails(layers):
                    stat = max(layer.max_stat_delta for layer in layers if layer.ssim)
                    missed.append(f"{name} ({stat:.4f})")
            print(f"| {level:.0%} | {len(convs) - len(missed)}/{len(convs)} | {', '.join(missed) or '-'} |")


def worst(layers: list[LayerResult]) -> str:
    scored = [layer for layer in layers if layer.ssim]
    if len(scored) < len(layers):
        return "shape/layers changed"
    noise = [layer.noise.stat_delta for layer in scored if layer.noise is not None]
    floor = f"(noise floor: stat {max(noise):.4f})" if noise else "(no noise floor: nothing float32)"
    return (
        f"SSIM {min(layer.min_ssim for layer in scored):.4f}  "
        f"pic {max(layer.max_rms_error for layer in scored):.4f}  "
        f"stat {max(layer.max_stat_delta for layer in scored):.4f}  {floor}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v3_large", "efficientnet_b0"])
    parser.add_argument("--dump", type=Path, help="also write every channel's scores per model and variant (JSON)")
    parser.add_argument(
        "--every-conv",
        action="store_true",
        help="instead of the table: weight noise on each conv of each model in turn, caught and missed per level",
    )
    args = parser.parse_args(argv)
    if args.every_conv:
        for model_name in args.models:
            every_conv(model_name)
        return 0
    dump: dict[str, dict[str, object]] = {}
    ok = True
    summary: dict[str, list[int]] = {d.name: [0, 0, 0, 0, 0, 0] for d in DETECTORS}
    distances: list[tuple[bool, bool, float]] = []
    for model_name in args.models:
        results = scores(model_name)
        dump[model_name] = {
            name: {
                "harmful": harmful,
                "frontier": frontier,
                "layers": [
                    {"name": layer.name, "ssim": layer.ssim, "rms": layer.rms_error, "stat": layer.stat_delta}
                    for layer in layers
                ],
            }
            for name, (harmful, frontier, layers, _) in results.items()
        }
        print(
            f"\n## {model_name}  (default: SSIM >= {DEFAULT.threshold:g}, picture change <= "
            f"{DEFAULT.rms_tolerance:g}, statistics change <= {DEFAULT.stat_tolerance:g})\n"
        )
        print(
            "| variant | kind | expected | default verdict | worst scores (min SSIM, max picture / stat change;"
            " largest TF32 noise floor) |"
        )
        print("|---|---|---|---|---|")
        for name, (harmful, frontier, layers, distance) in results.items():
            distances.append((harmful, frontier, distance))
            verdict = "FAIL" if DEFAULT.fails(layers) else "pass"
            expected = "FAIL" if harmful else "pass"
            kind = "frontier" if frontier else ("harmful" if harmful else "benign")
            if not frontier and verdict != expected:
                ok = False
            mark = "" if frontier or verdict == expected else "  <-- WRONG"
            print(f"| {name} | {kind} | {expected} | {verdict}{mark} | {worst(layers)} |")
            for detector in DETECTORS:
                fails = detector.fails(layers)
                counts = summary[detector.name]
                if frontier:
                    counts[4] += fails
                    counts[5] += 1
                elif harmful:
                    counts[0] += fails
                    counts[1] += 1
                else:
                    counts[2] += fails
                    counts[3] += 1
    print("\n## Detector settings over all models\n")
    print("| detector | harmful caught | benign alarms | frontier caught |")
    print("|---|---|---|---|")
    for detector in DETECTORS:
        c = summary[detector.name]
        print(f"| {detector.name} | {c[0]}/{c[1]} | {c[2]}/{c[3]} | {c[4]}/{c[5]} |")
    # assert_close on the same kept float maps, at the tightest tolerance that lets every benign case pass
    tolerance = max(d for harmful, _, d in distances if not harmful)
    caught = [(harmful, frontier, d > tolerance) for harmful, frontier, d in distances if harmful]
    harmful_caught = sum(hit for _, frontier, hit in caught if not frontier)
    harmful_total = sum(not frontier for _, frontier, _ in caught)
    frontier_caught = sum(hit for _, frontier, hit in caught if frontier)
    print(
        f"| float assert_close on the kept maps, rtol = atol = {tolerance:.2g} (the tightest that passes every"
        f" benign case) | {harmful_caught}/{harmful_total} | 0/{len(distances) - len(caught)}"
        f" | {frontier_caught}/{sum(f for _, f, _ in caught)} |"
    )
    # the same, tuned per model (what a team could do test by test) to twice its worst benign distance: the margin
    # the plugin's tolerances keep over TF32 noise
    per_model = [0, 0]
    size = len(VARIANTS)
    for start in range(0, len(distances), size):
        block = distances[start : start + size]
        tuned = 2.0 * max(d for harmful, _, d in block if not harmful)
        per_model[0] += sum(d > tuned for harmful, frontier, d in block if harmful and not frontier)
        per_model[1] += sum(d > tuned for harmful, frontier, d in block if frontier)
    print(
        f"| float assert_close, rtol = atol per model at 2x its worst benign case | {per_model[0]}/{harmful_total}"
        f" | 0/{len(distances) - len(caught)} | {per_model[1]}/{len(caught) - harmful_total} |"
    )
    if args.dump:
        args.dump.write_text(json.dumps(dump, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
