#!/usr/bin/env python
"""What each of the model's CUDA kernel launches gets of a GPU's SM, without a GPU: the model's
precompute and one decode run on the plugin ops with every CUDA kernel in the CPU emulation
(plugins/emulation), whose launch log gives each launch's configuration; ptxas' figures
(plugins/kernel_resources.py) give its registers and static shared memory; the architecture's
rules give the resident blocks per SM, the theoretical occupancy and what limits it. Printed per
model stage. Not a speed measurement: occupancy is one input to a kernel's speed, which only a GPU
measures (scripts/bench_gpu.sh).

    python scripts/kernel_occupancy.py --precision fp16 --arch sm_90

The default config, tiny, has the seed's widths (hd's channels, heads, points, top-R) on a small
sensor, so threads and shared memory per launch are hd's; the grids (blocks per launch) are the
small sensor's. hd itself runs too, in several minutes (its F^3 maps are 22 times larger).
Needs nvcc (ptxas) and a C++ compiler; the first run builds the emulation (about a minute).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
from pathlib import Path

import torch

from model_def import EventSPD, get_config
from plugins import emulation
from plugins import kernel_resources as kr
from eventspd_export.data.synthetic import random_queries, synthetic_window


def model_launches(config: str, precision: str, k: int, events: int, seed: int = 0) -> list[tuple[str, str]]:
    """(stage, launch-log chunk) of one precompute and one decode of ``k`` queries, every plugin op
    on the emulated kernels (the fused ConvNeXt-V2 blocks included, as on a GPU)."""
    cfg = get_config(config)
    model = EventSPD(cfg, seed=seed).eval()
    window, queries = synthetic_window(cfg, events, seed=seed), random_queries(cfg, k, seed=seed)
    ends: list[tuple[str, int]] = []  # the model marks each stage as it ends
    with contextlib.ExitStack() as stack:
        emu = stack.enter_context(emulation.model_on_emulated_kernels())
        emu.reset()

        def mark(stage: str) -> None:
            ends.append((stage, len(emu.launch_log())))

        stack.enter_context(torch.inference_mode())
        if precision == "fp16":  # as the GPU benchmark runs fp16: autocast over fp32 weights
            stack.enter_context(torch.autocast("cpu", dtype=torch.float16))
        pre = model.precompute(window, mark=mark)
        model.decode(pre, queries, mark=lambda s: mark(f"decoder {s}"))
    log, start, chunks = emu.launch_log(), 0, []
    for stage, end in ends + [("after the last stage", len(emu.launch_log()))]:
        if log[start:end]:
            chunks.append((stage, log[start:end]))
        start = end
    return chunks


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--precision", choices=["fp16", "fp32"], default="fp16")
    ap.add_argument("--arch", choices=kr.ARCHS, default="sm_90")
    ap.add_argument("--k", type=int, default=16, help="queries in the decode (default 16; blocks scale with it)")
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    try:
        get_config(args.config)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    if kr.find_nvcc() is None:
        print("error: nvcc not found (set CUDA_HOME or put nvcc on PATH): ptxas gives the kernels' registers",
              file=sys.stderr)
        return 2
    device = kr.DEVICES[args.arch]
    figures = {r.template_id: r for cu in kr.kernel_sources() for r in kr.kernel_resources(cu, args.arch)}
    chunks = model_launches(args.config, args.precision, args.k, args.events)
    print(f"{args.config} {args.precision}, K = {args.k}, theoretical occupancy on {args.arch} "
          f"(ptxas figures; launches from the CPU emulation)")
    rows = []
    for stage, chunk in chunks:
        found = kr.launch_occupancy(chunk, device, figures)
        print(f"\n[{stage}]\n{kr.occupancy_table(found, device)}")
        rows += [{"stage": stage, **dataclasses.asdict(r), "occupancy": r.occupancy(device)} for r in found]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"config": args.config, "precision": args.precision, "arch": args.arch,
                                         "k": args.k, "launches": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
