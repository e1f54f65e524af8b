"""A/B of model_def.packed on one device, eager: decoder time with B2/B5's K/V projections
unpacked and packed (alternating, so drift hits both), and the largest relative difference of
the depths.

    python scripts/ab_packed_kv.py [--config hd] [--k 128] [--device cpu] [--threads 2] [--repeat 5]

(On CUDA, scripts/bench_gpu.sh times the packed decoder inside the graphed benchmark instead.)
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from eventspd_export.data.synthetic import random_queries, synthetic_window
from model_def import EventSPD, get_config
from model_def.packed import pack_decoder_projections


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="hd")
    ap.add_argument("--k", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = get_config(args.config)
    dev = torch.device(args.device)
    plain = EventSPD(cfg, seed=0).eval().to(dev)
    packed = pack_decoder_projections(copy.deepcopy(plain))
    events = synthetic_window(cfg, 100_000, seed=3).to(dev)
    queries = random_queries(cfg, args.k, seed=4).to(dev)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    times = {"unpacked": [], "packed": []}
    with torch.inference_mode():
        pre = plain.precompute(events)
        want, _ = plain.decode(pre, queries)
        got, _ = packed.decode(pre, queries)
        for _ in range(args.repeat):
            for name, model in (("unpacked", plain), ("packed", packed)):
                sync()
                t0 = time.perf_counter()
                model.decode(pre, queries)
                sync()
                times[name].append(time.perf_counter() - t0)
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<9} decoder K={args.k}: median {med * 1e3:8.2f} ms  ({med / args.k * 1e3:.3f} ms/query, "
              f"min {min(ts) * 1e3:.2f}, max {max(ts) * 1e3:.2f})")
    rel = ((got - want).abs() / want.abs().clamp_min(1e-12)).max().item()
    print(f"depth max rel difference packed vs unpacked: {rel:.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
