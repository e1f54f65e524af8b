"""GPU benchmark of the EventSPD CUDA kernels against the PyTorch reference ops (no TensorRT).

    python -m plugins.bench_gpu results.json [--config hd] [--k 256 1024 4096] [--iters 50]

For each op and K it prints the median time of the kernel (torch.ops.eventspd_plugins) and of
the reference op (model_def.ops *_reference, on the same GPU), the speed-up, the effective
bandwidth (bytes the op must move / kernel time) and the ratio to the bandwidth floor
(those bytes at the measured device-to-device copy bandwidth). The deformable read reports
two byte counts: "unique" (value maps, inputs and output once) and "gathered" (every bilinear
corner read); `deform_read_channels_last` is the same read on channels-last maps (no per-call
copy), as the graphed model benchmark feeds it. The fused ConvNeXt-V2 block (convnext_block) is timed
against the PyTorch block for each of the model's block shapes (F^3's, L1's, L2's, at their map
sizes), in fp16 also with its tensor-core kernels forced to 4 and to 8 warps a block. Writes
everything as JSON to the given path.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch


def _timer(fn, iters: int, warmup: int = 5) -> float:
    """Median milliseconds of fn() over `iters` CUDA-event-timed calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def copy_bandwidth(iters: int) -> float:
    """Device-to-device copy bandwidth in bytes/s (read + write), as the practical peak."""
    x = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    ms = _timer(lambda: y.copy_(x), iters)
    return 2 * x.numel() / (ms * 1e-3)


def _row(op, K, dtype, t_kernel, t_ref, nbytes, peak, extra=None):
    row = {"op": op, "K": K, "dtype": str(dtype).replace("torch.", ""), "kernel_ms": t_kernel, "reference_ms": t_ref,
           "speedup": t_ref / t_kernel, "bytes": nbytes, "effective_GBps": nbytes / (t_kernel * 1e-3) / 1e9,
           "floor_ms": nbytes / peak * 1e3, "x_floor": t_kernel / (nbytes / peak * 1e3)}
    if extra:
        row.update(extra)
    return row


def bench(config: str, ks: list[int], iters: int, n_events: int, log=print, rows: list | None = None) -> dict:
    """The kernels' rows (appended to ``rows`` as they are measured, so that a caller keeps those
    measured before a failure) and the run's description."""
    import plugins.torch_ext as ext
    from model_def import ops as ref_ops
    from model_def.config import get_config

    if not ext.has_cuda_kernels():
        raise SystemExit("the plugin extension was built without CUDA: reinstall with a CUDA torch and nvcc")
    P = ext.ops()
    cfg = get_config(config)
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(0)
    peak = copy_bandwidth(iters)
    log(f"{torch.cuda.get_device_name()}: copy bandwidth {peak / 1e9:.0f} GB/s; config {config}")
    h4, w4 = cfg.level_hw(4)
    T, R, Hh, C, L, M = cfg.grid_tokens, cfg.top_r, cfg.heads, cfg.d, cfg.deform_levels, cfg.deform_points
    strides = list(cfg.strides[1:])
    sizes = [cfg.level_hw(lvl) for lvl in (2, 3, 4)]
    rows = [] if rows is None else rows

    def report(row):
        rows.append(row)
        log(f"{row['op']:<25} K={row['K']:<5} {row['dtype']:<8} kernel {row['kernel_ms']:8.4f} ms  "
            f"reference {row['reference_ms']:8.3f} ms  x{row['speedup']:7.1f}  "
            f"{row['effective_GBps']:7.0f} GB/s  {row['x_floor']:5.2f}x floor"
            + (f"  (gathered {row['gathered_GBps']:.0f} GB/s)" if "gathered_GBps" in row else ""))

    for K in ks:
        for dtype in (torch.float32, torch.float16):
            esize = torch.finfo(dtype).bits // 8
            # ---- topr_route
            attn = torch.rand(1, K, Hh, T, device=dev, generator=gen).to(dtype)
            tk = _timer(lambda: P.topr_route(attn, R, w4, h4, 32), iters)
            tr = _timer(lambda: ref_ops.topr_route_reference(attn, R, w4, h4, 32), iters)
            report(_row("topr_route", K, dtype, tk, tr, attn.numel() * esize + K * R * 12, peak))
            # ---- deform_read
            vals = [torch.randn(1, C, h, w, device=dev, generator=gen).to(dtype) for h, w in sizes]
            anchors = torch.rand(1, K, R, 2, device=dev, generator=gen) * torch.tensor(
                [cfg.width, cfg.height], device=dev, dtype=torch.float32)
            offsets = (torch.randn(1, K, R, Hh, L, M, 2, device=dev, generator=gen) * 2).to(dtype)
            logits = torch.randn(1, K, R, Hh, L, M, device=dev, generator=gen).to(dtype)
            tr = _timer(lambda: ref_ops.deform_read_reference(*vals, anchors, offsets, logits, strides),
                        max(3, iters // 10))
            unique = (sum(v.numel() for v in vals) + offsets.numel() + logits.numel() + K * R * C) * esize \
                + anchors.numel() * 4
            gathered = K * R * Hh * L * M * 4 * (C // Hh) * esize
            # NCHW maps (copied channel-last per call), then channels-last maps (read in place),
            # as the graphed benchmark's precompute emits them
            for op, maps in (("deform_read", vals),
                             ("deform_read_channels_last",
                              [v.contiguous(memory_format=torch.channels_last) for v in vals])):
                tk = _timer(lambda: P.deform_read(*maps, anchors, offsets, logits, strides), iters)
                report(_row(op, K, dtype, tk, tr, unique, peak,
                            {"gathered_bytes": gathered, "gathered_GBps": gathered / (tk * 1e-3) / 1e9}))
    # ---- event_splat: independent of K
    res = [r for t in cfg.f3_resolutions for r in t]
    table = torch.randn(sum(cfg.f3_table_rows), 2, device=dev, generator=gen)
    n = n_events
    events = torch.stack([torch.rand(n, device=dev, generator=gen) * cfg.width,
                          torch.rand(n, device=dev, generator=gen) * cfg.height,
                          torch.rand(n, device=dev, generator=gen), torch.zeros(n, device=dev)], dim=1)
    tk = _timer(lambda: P.event_splat(events, table, cfg.width, cfg.height, res, cfg.time_scale), iters)
    tr = _timer(lambda: ref_ops.event_splat_reference(events, table, cfg.width, cfg.height, res, cfg.time_scale),
                max(3, iters // 10))
    channels = 2 * len(cfg.f3_resolutions)
    grid = torch.zeros(channels, cfg.height * cfg.width, device=dev)
    idx = (events[:, 1].long() * cfg.width + events[:, 0].long())
    src = torch.randn(channels, n, device=dev, generator=gen)
    t_index_add = _timer(lambda: grid.index_add_(1, idx, src), iters)
    nbytes = events.numel() * 4 + channels * cfg.height * cfg.width * 4 + table.numel() * 4
    report(_row("event_splat", n, torch.float32, tk, tr, nbytes, peak, {"index_add_ms": t_index_add}))
    log(f"(bare index_add_ of {n} x {channels} values: {t_index_add:.4f} ms)")
    bench_convnext_block(cfg, iters, peak, report)
    return run_description(config, iters, rows, peak)


def run_description(config: str, iters: int, rows: list, peak: float | None = None) -> dict:
    return {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "python": platform.python_version(), "config": config,
            "copy_bandwidth_GBps": None if peak is None else peak / 1e9,
            "iters": iters, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "results": rows}


# the model's ConvNeXt-V2 blocks: (row name, map size, channels, depthwise kernel, hidden / channels)
def _convnext_blocks(cfg) -> list[tuple[str, tuple[int, int], int, int, int]]:
    return [("convnext_blk", cfg.f3_hw, cfg.f3_dim, cfg.f3_kernel, cfg.f3_bottleneck),
            ("convnext_blk_l1", cfg.level_hw(1), cfg.dims[0], cfg.l1_kernel, cfg.convnext_expansion),
            ("convnext_blk_l2", cfg.level_hw(2), cfg.dims[1], cfg.l2_kernel, cfg.convnext_expansion)]


TC_WARPS_ENV = "EVENTSPD_CONVNEXT_TC_WARPS"  # kernel.cu's tc_warps: 4 or 8 warps per tensor-core block


def bench_convnext_block(cfg, iters: int, peak: float, report) -> None:
    """The model's ConvNeXt-V2 blocks (one of F^3's six, L1's, L2's) at their map sizes,
    channels-last: the fused op (plugins/convnext_block) against the PyTorch block, eager, in fp32
    and fp16 (the block's own dtype: .half() weights and data, not autocast). In fp16 also the A/B
    of the tensor-core kernels' warps per block (rows <op>_tc4 / _tc8, forced through
    $EVENTSPD_CONVNEXT_TC_WARPS; the plain row is kernel.cu's own choice). The bytes are the floor
    of the two-pass design: x read twice, out written once, the hidden map written and read once."""
    import os

    from model_def import ops as ref_ops
    from model_def.layers import ConvNeXtV2Block

    dev = torch.device("cuda")
    for op, (h, w), c, k, expansion in _convnext_blocks(cfg):
        block = ConvNeXtV2Block(c, k, expansion).to(dev).eval()
        with torch.no_grad():
            for prm in block.parameters():  # GRN's zero init would make it the identity
                prm.normal_(0, 0.05)
        block = block.to(memory_format=torch.channels_last)
        e = block.pwconv1.out_features
        for dtype in (torch.float32, torch.float16):
            blk = block.to(dtype)
            x = torch.randn(1, c, h, w, device=dev, dtype=dtype).contiguous(memory_format=torch.channels_last)
            esize = torch.finfo(dtype).bits // 8
            nbytes = (3 * c + 2 * e) * h * w * esize
            variants = [(op, None)] + ([(f"{op}_tc4", "4"), (f"{op}_tc8", "8")] if dtype == torch.float16 else [])
            with torch.inference_mode():
                tr = _timer(lambda: blk(x), iters)
                want = blk(x)
                for name, warps in variants:
                    saved = os.environ.pop(TC_WARPS_ENV, None)
                    if warps is not None:
                        os.environ[TC_WARPS_ENV] = warps
                    try:
                        with ref_ops.use_backend("plugin"):
                            got = blk(x)
                            tk = _timer(lambda: blk(x), iters)
                    finally:
                        os.environ.pop(TC_WARPS_ENV, None)
                        if saved is not None:
                            os.environ[TC_WARPS_ENV] = saved
                    err = ((got.float() - want.float()).abs().max() / want.float().abs().max()).item()
                    report(_row(name, 0, dtype, tk, tr, nbytes, peak, {"map": [h, w, c], "kernel": k,
                                                                        "hidden": e, "max_rel_vs_torch": err}))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("output", type=Path, help="JSON file to write")
    ap.add_argument("--config", default="hd")
    ap.add_argument("--k", type=int, nargs="+", default=[256, 1024, 4096])
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--events", type=int, default=1_000_000)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: no CUDA device visible to torch", file=sys.stderr)
        return 2
    rows: list = []
    status = 0
    try:
        result = bench(args.config, args.k, args.iters, args.events, rows=rows)
    except Exception as exc:  # a kernel that faults (never run on a GPU before): keep what was measured
        import traceback

        traceback.print_exc()
        result = {**run_description(args.config, args.iters, rows), "error": f"{type(exc).__name__}: {exc}"}
        status = 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_suffix(args.output.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(args.output)
    print(f"wrote {args.output}" + (f" ({len(rows)} rows before the error)" if status else ""))
    return status


if __name__ == "__main__":
    sys.exit(main())
