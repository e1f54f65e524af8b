"""Training throughput on CPU: 1 process vs 2 processes under torchrun (gloo), `tiny`.

    python scripts/bench_train_ddp.py [--steps 6] [--bptt 2] [--k-train 256] [--out results/...json]

Each run trains from the same seed; the first step (model build, first simulator scenes) is not
timed: the steps/s are from the step log times of steps 2..N. Prints steps/s and sequences/s per
configuration. On a 2-core machine two processes share the cores, so the sequences/s of
"2 processes x 1" against "1 process x 1" shows the data-parallel overhead, not a speed-up; on a
machine with a core (or GPU) per rank the same figure is the scaling.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(nproc: int, batch: int, args, folder: Path) -> dict:
    train = ["train", "--config", "tiny", "--steps", str(args.steps), "--bptt", str(args.bptt),
             "--k-train", str(args.k_train), "--warmup-steps", "1", "--threads", "1",
             "--checkpoint-every", "1", "--batch-sequences", str(batch), "--out", str(folder / "t.pt")]
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    if nproc == 1:
        cmd = [sys.executable, "-m", "eventspd_export", *train]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
               "--master-addr", "127.0.0.1", "--master-port", str(_port()), "-m", "eventspd_export", *train]
    stamps = []
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:  # rank 0 logs "step N: ..." after every step (checkpoint-every 1)
        if re.match(r"step \d+:", line):
            stamps.append(time.perf_counter())
    if proc.wait() != 0:
        raise SystemExit(f"error: {' '.join(cmd)} exited {proc.returncode}")
    timed = len(stamps) - 1
    seconds = stamps[-1] - stamps[0]
    sequences = nproc * batch
    return {"processes": nproc, "batch_sequences": batch, "sequences_per_step": sequences,
            "timed_steps": timed, "seconds": round(seconds, 2), "steps_per_s": round(timed / seconds, 4),
            "sequences_per_s": round(timed * sequences / seconds, 4),
            "wall_s": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--bptt", type=int, default=2)
    ap.add_argument("--k-train", type=int, default=256)
    ap.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for nproc, batch in ((1, 1), (1, 2), (2, 1)):
            rows.append(run(nproc, batch, args, Path(tmp)))
    print(f"tiny, {args.steps} steps (first untimed), bptt {args.bptt}, K_train {args.k_train}, "
          f"{os.cpu_count()} CPUs, one torch thread per process")
    print(f"{'processes x sequences':>22} {'steps/s':>9} {'sequences/s':>12}")
    for r in rows:
        print(f"{r['processes']:>12} x {r['batch_sequences']:<8} {r['steps_per_s']:>9.3f} {r['sequences_per_s']:>12.3f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
