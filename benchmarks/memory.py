"""Memory: hooking every layer of ResNet-50 (16 channels each) adds at most 2x the kept bytes to peak memory.

Method. tracemalloc does not see torch's allocator, so this measures the process's peak resident set size
(``ru_maxrss``, which the kernel tracks exactly) in a fresh child process per case:

1. build the model and input, run one bare forward pass (warm-up: thread pools, allocator, lazy inits);
2. read the peak RSS, the baseline peak, which includes the forward pass's own transient activations;
3. run the case once and read the peak RSS again.

The growth of the peak in step 3 is what the case adds to peak memory. Cases: ``bare`` (a second forward pass: the
noise floor), ``featviz`` (``capture`` with a hook on every module, 16 channels of batch item 0 kept), and
``full copies`` (hooks that keep each layer's whole output, the mistake this guards against). The kept bytes are
the sum of the captured maps' sizes. Batch size 2, so copying batch item 0 only is visible too.

Usage: ``python benchmarks/memory.py``. Target (issue #6): featviz growth <= 2x the kept bytes.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

CASES = ("bare", "featviz", "full copies")
MIB = 1024 * 1024


def peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def child(case: str) -> dict[str, int]:
    import torch

    from pytest_featviz.capture import capture
    from pytest_featviz.layers import resolve_layers

    model = common.resnet(50)
    inputs = common.photo().repeat(2, 1, 1, 1)
    common.bare_forward(model, inputs)
    before = peak_bytes()
    kept = 0
    if case == "bare":
        common.bare_forward(model, inputs)
    elif case == "featviz":
        captures = capture(model, inputs, resolve_layers(model, "*"), 16)
        kept = sum(c.maps.numel() * c.maps.element_size() for c in captures)
    else:
        outputs: list[torch.Tensor] = []
        handles = [
            module.register_forward_hook(lambda m, a, out: outputs.append(out.detach().clone()))
            for name, module in model.named_modules()
            if name
        ]
        common.bare_forward(model, inputs)
        for handle in handles:
            handle.remove()
        kept = sum(o.numel() * o.element_size() for o in outputs)
    return {"before": before, "after": peak_bytes(), "kept": kept}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)  # one case, in the fresh child process
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.child)))
        return 0
    rows = []
    growth: dict[str, int] = {}
    kept: dict[str, int] = {}
    for case in CASES:
        done = subprocess.run([sys.executable, __file__, "--child", case], capture_output=True, text=True, check=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        growth[case] = result["after"] - result["before"]
        kept[case] = result["kept"]
        rows.append(
            [
                case,
                f"{result['before'] / MIB:.1f}",
                f"{result['after'] / MIB:.1f}",
                f"{growth[case] / MIB:.1f}",
                f"{result['kept'] / MIB:.1f}",
            ]
        )
    print("ResNet-50, batch 2 at 224 px, a hook on every module; peak RSS of a fresh process per case")
    print(common.table(rows, ["case", "peak before MiB", "peak after MiB", "growth MiB", "kept MiB"]))
    ratio = growth["featviz"] / kept["featviz"]
    print(
        f"featviz peak growth / kept bytes = {ratio:.2f} (target <= 2: {'met' if ratio <= 2 else 'NOT met'});"
        f" noise floor (a second bare forward) {growth['bare'] / MIB:.1f} MiB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
