#!/usr/bin/env python
"""Where each stage's time goes: a per-kernel profile (torch.profiler) of one precompute and one
decode, each kernel (CUDA) or top-level op (CPU) attributed to the model stage that launched it.
Writes profile-OPS-PRECISION.json / .txt and the two chrome traces into --out; prints the table.
Not a test and no timed assertions (eventspd_export/bench/profile.py holds the logic).

    python scripts/profile_stages.py --config hd --device cuda --precision fp16 --ops plugin --out results/x
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from eventspd_export.bench.profile import format_profile, profile_stages


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="hd")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--precision", choices=["fp32", "fp16"], default="fp32")
    ap.add_argument("--ops", choices=["reference", "plugin"], default="reference", help="model_def.ops backend")
    ap.add_argument("--k", type=int, default=256)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: torch sees no CUDA device", file=sys.stderr)
        return 2
    stem = f"profile-{args.ops}-{args.precision}"
    trace_dir = args.out / f"{stem}-traces"
    trace_dir.mkdir(parents=True, exist_ok=True)
    result = profile_stages(args.config, args.device, args.precision, args.ops, args.k, args.events,
                            trace_dir=trace_dir)
    table = format_profile(result)
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    (args.out / f"{stem}.txt").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
