"""`eventspd-export train` under torchrun (gloo on CPU): 2 processes x 1 sequence train exactly as
1 process with --batch-sequences 2 over the same sequences; a run stopped and resumed ends at the
weights of an uninterrupted one; a missing rendezvous or a failing rank ends the run with an error
line in bounded time, never a hang."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
import torch

TRAIN = ["train", "--config", "tiny", "--steps", "3", "--bptt", "2", "--k-train", "32", "--warmup-steps", "1",
         "--threads", "1"]
TOL = 1e-5


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK",
                                                           "MASTER_ADDR", "MASTER_PORT")}
    return {**env, **extra}


def torchrun(args, cwd, nproc=2, timeout=240, env=None):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
           "--master-addr", "127.0.0.1", "--master-port", str(_port()), "-m", "eventspd_export", *args]
    return subprocess.run(cmd, cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=timeout)


def single(args, cwd, timeout=240, env=None):
    return subprocess.run([sys.executable, "-m", "eventspd_export", *args], cwd=cwd, env=env or _env(),
                          capture_output=True, text=True, timeout=timeout)


def weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def max_diff(a, b) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    d = tmp_path_factory.mktemp("ddp")
    r = torchrun([*TRAIN, "--out", str(d / "w2.pt")], d)
    assert r.returncode == 0, r.stdout + r.stderr
    return d / "w2.pt", r


def test_two_processes_equal_one_process_with_two_sequences(two_ranks, tmp_path):
    path, run = two_ranks
    r = single([*TRAIN, "--batch-sequences", "2", "--out", str(tmp_path / "b2.pt")], tmp_path)
    assert r.returncode == 0, r.stderr
    assert max_diff(weights(path), weights(tmp_path / "b2.pt")) <= TOL
    # only rank 0 logs (one start line), and the run is really two processes of one sequence each
    assert run.stdout.count("training tiny on") == 1 and "(2 processes x 1)" in run.stdout
    # and the pair trains on other sequences than one process of one sequence (the check can fail)
    r = single([*TRAIN, "--out", str(tmp_path / "b1.pt")], tmp_path)
    assert r.returncode == 0 and max_diff(weights(path), weights(tmp_path / "b1.pt")) > 1e-3


def test_a_stopped_and_resumed_run_ends_where_an_uninterrupted_one_does(two_ranks, tmp_path):
    path, _ = two_ranks
    out = tmp_path / "r.pt"
    r = torchrun([*TRAIN, "--time-limit", "0.001", "--out", str(out)], tmp_path)
    assert r.returncode == 0 and "time limit" in r.stdout, r.stdout + r.stderr
    assert torch.load(out, weights_only=False)["train_state"]["step"] == 1
    r = torchrun([*TRAIN, "--resume", str(out), "--out", str(out)], tmp_path)
    assert r.returncode == 0 and "resumed from" in r.stdout, r.stdout + r.stderr
    assert max_diff(weights(path), weights(out)) <= TOL


def test_a_missing_rendezvous_is_an_error_line_in_bounded_time(tmp_path):
    env = _env(WORLD_SIZE="2", RANK="0", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_port()))
    t0 = time.time()
    r = single([*TRAIN, "--dist-timeout", "3", "--out", str(tmp_path / "x.pt")], tmp_path, timeout=60, env=env)
    assert time.time() - t0 < 45
    assert r.returncode == 2 and r.stderr.splitlines()[-1].startswith("error: rank 0: no rendezvous"), r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "x.pt").exists()
    r = single([*TRAIN, "--out", str(tmp_path / "x.pt")], tmp_path, env=_env(WORLD_SIZE="2"))
    assert r.returncode == 2 and "launch with torchrun" in r.stderr.splitlines()[-1]


TEACHER = '''
import os
import torch

def factory():
    rank = int(os.environ.get("RANK", "0"))
    def teacher(window, cfg):
        (h3, w3), (h4, w4) = cfg.level_hw(3), cfg.level_hw(4)
        return {"l3": torch.zeros(1, 384, 1 if rank == 1 else h3, w3), "l4": torch.zeros(1, 384, h4, w4)}
    return teacher
'''


def test_a_failing_rank_ends_every_rank_with_an_error(tmp_path):
    """Rank 1's teacher gives a wrong shape: rank 1 stops with its error, rank 0 (waiting in the
    gradient all-reduce) stops with 'another rank stopped', torchrun exits non-zero."""
    (tmp_path / "rank_teacher.py").write_text(TEACHER)
    t0 = time.time()
    r = torchrun([*TRAIN, "--teacher", "rank_teacher:factory", "--dist-timeout", "60",
                  "--out", str(tmp_path / "f.pt")], tmp_path, env=_env(PYTHONPATH=str(tmp_path)), timeout=120)
    assert time.time() - t0 < 100
    errors = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith("error: ")]
    assert r.returncode != 0
    assert any("teacher: l3 has shape (1, 384, 1, 16)" in e for e in errors), errors
    assert all("[rank" not in ln or "Traceback" not in ln for ln in r.stderr.splitlines())
    assert not (tmp_path / "f.pt").exists()
