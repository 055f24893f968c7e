"""Detection benchmark for text and sequence models: their layers are token images (tokens x features, one picture).

A token image's whole-picture statistics are one mean and std, which a LayerNorm keeps fixed whatever the weights
do, so before per-feature statistics a 2% weight change in every layer of a text transformer passed. This script
checks the same kinds of variants as ``detection.py`` against goldens of three seeded text models (a post-norm and
a pre-norm transformer encoder, a two-layer LSTM; token ids drawn once, 64 tokens), each scored twice: against the
golden as written, and against the same golden without its per-feature statistics (what earlier versions wrote and
judged). Scores are recorded once per variant with every tolerance open and judged by the detectors of
``detection.py``.

    python benchmarks/detection_text.py

The exit status is 1 when the default settings miss a harmful case or alarm on a benign one.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from detection import DEFAULT, DETECTORS, Variant, tf32_round, worst  # noqa: E402

from pytest_featviz import calibrate  # noqa: E402
from pytest_featviz.config import Settings  # noqa: E402
from pytest_featviz.records import LayerResult  # noqa: E402
from pytest_featviz.snapshot import TestIdentity, check_snapshot  # noqa: E402

VOCABULARY, WIDTH, TOKENS = 1000, 128, 64


class Text(nn.Module):
    """Embedding, a body (transformer encoder or LSTM) and a linear head, as a small text classifier is built."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCABULARY, WIDTH)
        self.body: nn.Module
        if kind == "lstm":
            self.body = nn.LSTM(WIDTH, WIDTH, 2, batch_first=True)
        else:
            layer = nn.TransformerEncoderLayer(
                WIDTH, 4, 2 * WIDTH, dropout=0.0, batch_first=True, norm_first=kind == "pre-norm"
            )
            self.body = nn.TransformerEncoder(layer, 3, enable_nested_tensor=False)
        self.head = nn.Linear(WIDTH, 10)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        hidden = self.body(self.embed(ids))
        return self.head(hidden[0] if isinstance(hidden, tuple) else hidden)


def build(kind: str) -> nn.Module:
    torch.manual_seed(0)
    return Text(kind).eval()


def tokens() -> torch.Tensor:
    return torch.randint(1, VOCABULARY - 1, (1, TOKENS), generator=torch.Generator().manual_seed(1))


def first_block(model: nn.Module) -> nn.Module:
    body = model.body
    return body if isinstance(body, nn.LSTM) else body.layers[0]  # type: ignore[index,return-value]


def _weight_noise(level: float) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[nn.Module, torch.Tensor]]:
    def change(model: nn.Module, raw: torch.Tensor, ids: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
        generator = torch.Generator().manual_seed(3)
        with torch.no_grad():
            for parameter in first_block(model).parameters():
                if parameter.dim() > 1:
                    noise = torch.randn(parameter.shape, generator=generator)
                    parameter.add_(noise * parameter.std() * level)
        return model, ids

    return change


def _scaled(attribute: str, factor: float) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple]:
    def change(model: nn.Module, raw: torch.Tensor, ids: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
        with torch.no_grad():
            getattr(model, attribute).weight.mul_(factor)
        return model, ids

    return change


def _threads(model: nn.Module, raw: torch.Tensor, ids: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    torch.set_num_threads(1)  # restored by scores()
    return model, ids


def _tf32_weights(model: nn.Module, raw: torch.Tensor, ids: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(tf32_round(parameter))
    return model, ids


def _round_trip(model: nn.Module, raw: torch.Tensor, ids: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    import io

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = build(KIND)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    return fresh.eval(), ids


KIND = ""  # the model being scored, for _round_trip
VARIANTS = [
    Variant("token ids off by one (tokenizer change)", True, lambda m, r, x: (m, x + 1)),
    Variant("tokens reversed", True, lambda m, r, x: (m, x.flip(1))),
    Variant("head weights x1.05", True, _scaled("head", 1.05)),
    Variant("5% noise on the first block's weights", True, _weight_noise(0.05)),
    Variant("2% noise on the first block's weights", True, _weight_noise(0.02), frontier=True),
    Variant("1% noise on the first block's weights", True, _weight_noise(0.01), frontier=True),
    # A post-norm transformer's first LayerNorm absorbs most of this (only the attention's softmax sharpens).
    Variant("embedding table x1.05", True, _scaled("embed", 1.05), frontier=True),
    Variant("re-run", False, lambda m, r, x: (m, x)),
    Variant("thread count changed", False, _threads),
    Variant("float64", False, lambda m, r, x: (m.double(), x)),
    Variant("batch of 2 (item 0 compared)", False, lambda m, r, x: (m, torch.cat([x, x.flip(1)]))),
    Variant("weights rounded to TF32", False, _tf32_weights),
    Variant("state_dict save/load round trip", False, _round_trip),
]
TF32_EVERYWHERE = "TF32 in every matmul (GPU-like)"


def _strip_features(directory: Path) -> None:
    sidecar = directory / "snapshot.json"
    data = json.loads(sidecar.read_text(encoding="utf-8"))
    for layer in data["layers"]:
        layer.pop("features", None)
    sidecar.write_text(json.dumps(data), encoding="utf-8")


Scores = dict[str, tuple[bool, bool, list[LayerResult]]]


def scores(kind: str, directory: Path) -> Scores:
    global KIND
    KIND = kind
    identity = TestIdentity("bench::" + kind, "bench.py", kind, "")
    wide = Settings(golden_dir=directory.parent, threshold=-1.0, stat_tolerance=math.inf, rms_tolerance=math.inf)
    threads = torch.get_num_threads()
    out: Scores = {}
    for variant in [*VARIANTS, Variant(TF32_EVERYWHERE, False, lambda m, r, x: (m, x))]:
        model, ids = variant.change(build(kind), torch.empty(0), tokens())
        try:
            if variant.name == TF32_EVERYWHERE:
                with calibrate.tf32_emulation():
                    evidence = check_snapshot(model, ids, None, wide, directory, identity, "0", measure_noise=True)
            else:
                evidence = check_snapshot(model, ids, None, wide, directory, identity, "0", measure_noise=True)
        finally:
            torch.set_num_threads(threads)
        out[variant.name] = (variant.harmful, variant.frontier, list(evidence.result.layers))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    ok = True
    summary: dict[str, list[int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("post-norm", "pre-norm", "lstm"):
            directory = Path(tmp, kind, "0")
            made = check_snapshot(
                build(kind), tokens(), None, Settings(golden_dir=Path(tmp), update=True), directory,
                TestIdentity("bench::" + kind, "bench.py", kind, ""), "0",
            )  # fmt: skip
            layers = ", ".join(f"{layer.name} {layer.shape}" for layer in made.result.layers)
            print(f"\n## {kind} text model: {layers}\n")
            print(
                "| variant | kind | expected | default verdict | before: whole-picture statistics only | worst scores |"
            )
            print("|---|---|---|---|---|---|")
            before_dir = Path(tmp, kind + "-before", "0")
            shutil.copytree(directory, before_dir)
            _strip_features(before_dir)
            now, before = scores(kind, directory), scores(kind, before_dir)
            for name, (harmful, frontier, scored) in now.items():
                verdict = "FAIL" if DEFAULT.fails(scored) else "pass"
                old = "FAIL" if DEFAULT.fails(before[name][2]) else "pass"
                expected = "FAIL" if harmful else "pass"
                if not frontier and verdict != expected:
                    ok = False
                mark = "" if frontier or verdict == expected else "  <-- WRONG"
                label = "frontier" if frontier else ("harmful" if harmful else "benign")
                print(f"| {name} | {label} | {expected} | {verdict}{mark} | {old} | {worst(scored)} |")
                for suffix, results in (("", scored), (" (before)", before[name][2])):
                    for detector in DETECTORS:
                        counts = summary.setdefault(detector.name + suffix, [0, 0, 0, 0, 0, 0])
                        slot = 4 if frontier else (0 if harmful else 2)
                        counts[slot] += detector.fails(results)
                        counts[slot + 1] += 1
    print("\n## Detector settings over the three models\n")
    print("| detector | harmful caught | benign alarms | frontier caught |")
    print("|---|---|---|---|")
    for name, c in summary.items():
        print(f"| {name} | {c[0]}/{c[1]} | {c[2]}/{c[3]} | {c[4]}/{c[5]} |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
