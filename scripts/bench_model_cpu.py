#!/usr/bin/env python
"""CPU timing of the PyTorch model: precompute, decoder at several K, and the fit
T(K) = T_pre + beta * K (seed eq. 1). Prints a table; not a test (no timed assertions).
`eventspd-export bench` is the full benchmark (backends, dense baseline, crossover, plot).

    python scripts/bench_model_cpu.py --config hd --k 1,64,256,1024 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

# The timer and the least-squares fit are shared with `eventspd-export bench` (the fuller
# benchmark: backends, dense baseline, crossover, plot).
from eventspd_export.bench.timing import Clock, fit_linear
from eventspd_export.data.synthetic import random_queries, synthetic_window
from model_def import EventSPD, get_config


def timed(fn, repeat: int) -> list[float]:
    return Clock("cpu").time(fn, warmup=1, repeat=repeat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="hd")
    ap.add_argument("--k", default="1,64,256,1024")
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()

    cfg = get_config(args.config)
    ks = [int(k) for k in args.k.split(",")]
    model = EventSPD(cfg, seed=0).eval()
    events = synthetic_window(cfg, args.events, seed=0)
    print(f"{cfg.name} {cfg.width}x{cfg.height}, {args.events} events, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, median of {args.repeat}")
    with torch.inference_mode():
        pre_times = timed(lambda: model.precompute(events), args.repeat)
        pre = model.precompute(events)
        dec = {}
        for k in ks:
            q = random_queries(cfg, k, seed=k)
            dec[k] = timed(lambda: model.decode(pre, q), args.repeat)
    t_pre = statistics.median(pre_times)
    med = [statistics.median(dec[k]) for k in ks]
    c, beta = fit_linear(ks, med)
    print(f"{'stage':<16}{'median ms':>12}{'min ms':>10}{'max ms':>10}")
    print(f"{'precompute':<16}{t_pre * 1e3:>12.1f}{min(pre_times) * 1e3:>10.1f}{max(pre_times) * 1e3:>10.1f}")
    for k, m in zip(ks, med):
        print(f"{'decode K=' + str(k):<16}{m * 1e3:>12.1f}{min(dec[k]) * 1e3:>10.1f}{max(dec[k]) * 1e3:>10.1f}")
    print(f"fit: T(K) = T_pre + c + beta*K with T_pre = {t_pre * 1e3:.1f} ms, decoder offset "
          f"c = {c * 1e3:.1f} ms, beta = {beta * 1e6:.1f} us/query")
    for k, m in zip(ks, med):
        print(f"  K={k:<6} total {(t_pre + m) * 1e3:9.1f} ms  (fit {(t_pre + c + beta * k) * 1e3:9.1f} ms)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": cfg.name, "events": args.events, "precompute_s": pre_times,
                       "decode_s": {str(k): v for k, v in dec.items()}, "fit": {
                           "t_pre_s": t_pre, "decoder_offset_s": c, "beta_s": beta}}, f, indent=1)


if __name__ == "__main__":
    main()
