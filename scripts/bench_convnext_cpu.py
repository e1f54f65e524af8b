#!/usr/bin/env python
"""CPU timing of one F^3 ConvNeXt-V2 block at the F^3 map size: the fused CPU kernel
(torch.ops.eventspd_plugins.convnext_block) against the PyTorch block. It is the figure behind
model_def.fused_block.FUSED_BLOCK_DEVICES leaving the CPU on PyTorch's path. Prints; asserts nothing.

    python scripts/bench_convnext_cpu.py --config hd --repeat 3
"""

from __future__ import annotations

import argparse
import statistics

import torch

from eventspd_export.bench.timing import Clock
from model_def import get_config
from model_def.layers import ConvNeXtV2Block


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="hd")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    import plugins.torch_ext as ext

    cfg = get_config(args.config)
    h, w, c = cfg.height // 2, cfg.width // 2, cfg.f3_dim
    block = ConvNeXtV2Block(c, cfg.f3_kernel, cfg.f3_bottleneck).eval()
    x = torch.randn(1, c, h, w)
    prm = [block.dwconv.weight, block.dwconv.bias, block.norm.weight, block.norm.bias, block.pwconv1.weight,
           block.pwconv1.bias, block.grn.gamma, block.grn.beta, block.pwconv2.weight, block.pwconv2.bias]
    clock = Clock("cpu")
    with torch.inference_mode():
        t_torch = clock.time(lambda: block(x), warmup=1, repeat=args.repeat)
        t_fused = clock.time(lambda: ext.ops().convnext_block(x, *prm, block.norm.eps), warmup=1, repeat=args.repeat)
    print(f"{cfg.name}: one F^3 block on {c} x {h} x {w}, {torch.get_num_threads()} threads, median of {args.repeat}")
    print(f"  PyTorch block     {1e3 * statistics.median(t_torch):9.1f} ms")
    print(f"  fused CPU kernel  {1e3 * statistics.median(t_fused):9.1f} ms")


if __name__ == "__main__":
    main()
