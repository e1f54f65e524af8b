"""Engine sizes and build times per configuration, graph and precision (TensorRT-RTX, no GPU).

    python scripts/bench_engine_builds.py --configs tiny,dsec,hd --precisions fp32,fp16,int8 \
        [--plugins build/tensorrt_plugins/libeventspd_plugins.so] [--json out.json] [--work DIR]

For each configuration: export the seeded default model (`eventspd-export onnx`), make its fp16
graph (calibration.fp16) and its Q/DQ int8 graph (calibration.int8, max ranges over
``--calib-windows`` synthetic windows: enough to time a build, not a calibration to deploy), then
build both engines per precision with `eventspd-export trt --runtime tensorrt-rtx` (its default
targets 8.6, 8.9, 12.0) and print one row per engine. A benchmark, not a test: the numbers depend on
the machine and its load.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def precision_graphs(model, folder: Path, precisions, windows: int) -> dict[str, float]:
    """*.fp16.onnx / *.int8.onnx next to the export; returns seconds per step."""
    import onnx
    import torch

    from calibration import int8 as q8
    from calibration.fp16 import convert_to_fp16
    from eventspd_export.data.synthetic import random_queries, synthetic_window
    from model_def import contract

    seconds = {}
    if "fp16" in precisions:
        t0 = time.perf_counter()
        for graph in ("precompute", "decoder"):
            onnx.save(convert_to_fp16(onnx.load(str(folder / f"{graph}.onnx"))), str(folder / f"{graph}.fp16.onnx"))
        seconds["fp16 graphs"] = time.perf_counter() - t0
    if "int8" in precisions:
        t0 = time.perf_counter()
        cfg, hidden = model.cfg, model.initial_state()
        pre_feeds, dec_feeds = [], []
        for i in range(windows):
            ev = synthetic_window(cfg, 20_000, seed=10 + i)
            with torch.inference_mode():
                pre = model.precompute(ev, hidden)
            pre_feeds.append({"events": ev.numpy(), "hidden": hidden.numpy()})
            dec_feeds.append({**{n: pre[n].numpy() for n in contract.SHARED_NAMES},
                              "queries": random_queries(cfg, 256, seed=i).numpy()})
            hidden = pre["hidden_out"]
        for graph, feeds in (("precompute", pre_feeds), ("decoder", dec_feeds)):
            path = folder / f"{graph}.onnx"
            ranges, _ = q8.collect_ranges(path, feeds, "max")
            onnx.save(q8.quantize(path, ranges), str(folder / f"{graph}.int8.onnx"))
        seconds["int8 graphs"] = time.perf_counter() - t0
    return seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default="tiny,dsec")
    ap.add_argument("--precisions", default="fp32,fp16,int8")
    ap.add_argument("--plugins", default=None, help="libeventspd_plugins.so for TensorRT-RTX [default: build one]")
    ap.add_argument("--calib-windows", type=int, default=2)
    ap.add_argument("--json", default=None)
    ap.add_argument("--work", default=None, help="Folder for the graphs and engines [default: a temporary one]")
    args = ap.parse_args()

    import torch

    from eventspd_export.export.onnx_export import ExportOptions, export_onnx
    from eventspd_export.trt.engine_build import BuildOptions, build_engines
    from eventspd_export.runtime.trt_flavour import load_runtime
    from model_def import EventSPD, get_config

    runtime = load_runtime("tensorrt-rtx")
    torch.set_num_threads(2)
    work = Path(args.work or tempfile.mkdtemp(prefix="eventspd-engine-bench-"))
    plugins = Path(args.plugins) if args.plugins else None
    if plugins is None:
        from plugins.trt_build import build_plugins

        t0 = time.perf_counter()
        plugins = build_plugins(build_dir=work / "plugin-build", runtime="tensorrt-rtx", log=lambda m: None)
        print(f"plugin library built in {time.perf_counter() - t0:.1f} s ({plugins.stat().st_size / 1e6:.2f} MB)")
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    rows, prep = [], {}
    print(f"{runtime.title}, targets 8.6, 8.9, 12.0 (its default), plugin library {plugins}")
    print(f"{'config':<6} {'graph':<10} {'precision':<9} {'ONNX MB':>8} {'engine MB':>9} {'build s':>8}")
    for name in [c.strip() for c in args.configs.split(",") if c.strip()]:
        cfg = get_config(name)
        onnx_dir = work / name / "onnx"
        model = EventSPD(cfg, seed=0).eval()
        t0 = time.perf_counter()
        export_onnx(model, ExportOptions(onnx_dir))
        prep[name] = {"export": time.perf_counter() - t0, **precision_graphs(model, onnx_dir, precisions,
                                                                            args.calib_windows)}
        for precision in precisions:
            manifest = build_engines(BuildOptions(onnx_dir, work / name / precision, precision=precision,
                                                  runtime="tensorrt-rtx", plugins=plugins), log_fn=lambda m: None)
            for graph, e in manifest["engines"].items():
                onnx_mb = (onnx_dir / e["onnx"]["file"]).stat().st_size / 1e6
                row = {"config": name, "graph": graph, "precision": precision, "onnx_mb": round(onnx_mb, 1),
                       "engine_mb": round(e["bytes"] / 1e6, 1), "build_s": e["build_seconds"]}
                rows.append(row)
                print(f"{name:<6} {graph:<10} {precision:<9} {row['onnx_mb']:>8.1f} {row['engine_mb']:>9.1f} "
                      f"{row['build_s']:>8.1f}", flush=True)
    for name, steps in prep.items():
        print(f"{name}: " + ", ".join(f"{k} {v:.1f} s" for k, v in steps.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"runtime": runtime.manifest_entry(), "rows": rows,
                                               "preparation_s": prep}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
