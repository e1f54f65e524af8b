"""Two writers of one output folder (issue 17): while another process holds the folder's lock
(``model_def.atomic.folder_lock``: a non-blocking flock on ``.eventspd.lock``), ``onnx``, ``trt``
and ``calibrate`` into that folder exit 2 with one error line naming the holder's pid and write
nothing; once the holder is gone (killed: flock dies with the process, so no stale lock) the same
command succeeds and leaves no lock file behind."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from eventspd_export.cli import main
from helpers import REPO, one_error_line
from model_def.atomic import LOCK_FILE, FolderBusy, folder_lock

HOLDER = """
import sys
from model_def.atomic import folder_lock
with folder_lock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()
"""


class Holder:
    """A child process holding ``folder``'s lock until killed."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], cwd=REPO, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdout.readline().strip() == "locked"
        self.pid = self.proc.pid

    def kill(self):
        self.proc.kill()
        self.proc.wait(timeout=30)


@pytest.fixture()
def holder():
    started = []

    def start(folder):
        h = Holder(folder)
        started.append(h)
        return h

    yield start
    for h in started:
        if h.proc.poll() is None:
            h.kill()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _refused(result, folder: Path, pid: int) -> None:
    line = one_error_line(result, alone=False)
    assert line == (f"error: {folder} is being written by another eventspd-export process (pid {pid}); "
                    "wait for it or choose another --out"), line


def test_lock_is_refused_across_processes_reentrant_within_one_and_removed_on_release(tmp_path, holder):
    d = tmp_path / "out"
    h = holder(d)
    with pytest.raises(FolderBusy, match=f"pid {h.pid}"):
        with folder_lock(d):
            pass
    h.kill()  # the kernel dropped its lock; its lock file is still there and locks nothing
    assert (d / LOCK_FILE).exists()
    with folder_lock(d):
        with folder_lock(d):  # calibrate may export into the folder it holds
            assert (d / LOCK_FILE).read_text().strip() == str(__import__("os").getpid())
        assert (d / LOCK_FILE).exists()
    assert list(d.iterdir()) == []


def test_onnx_into_a_folder_being_written_is_refused_then_succeeds(tmp_path, holder):
    d = tmp_path / "art"
    h = holder(d)
    before = _snapshot(d)
    args = ["onnx", "--config", "tiny", "--no-verify", "--out", str(d)]
    _refused(CliRunner().invoke(main, args), d, h.pid)
    assert _snapshot(d) == before  # only the holder's lock file
    h.kill()
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in d.iterdir()) == ["decoder.onnx", "eventspd.manifest.json", "precompute.onnx"]


def test_trt_into_a_folder_being_written_is_refused_then_succeeds(tmp_path, holder, monkeypatch):
    from test_trt import fake_export, install_fake_tensorrt  # tests/trt (conftest puts it on the path)

    from eventspd_export.cli.trt_commands import trt
    from eventspd_export.trt import engine_build as trt_engine

    src = fake_export(tmp_path / "onnx")
    (src / trt_engine.PLUGIN_LIBRARY).write_bytes(b"\x7fELF not really a library")
    install_fake_tensorrt(monkeypatch)
    out = tmp_path / "engines"
    h = holder(out)
    args = ["--fp32", "--onnx-dir", str(src), "--out", str(out)]
    _refused(CliRunner().invoke(trt, args), out, h.pid)
    assert _snapshot(out) == {LOCK_FILE: f"{h.pid}\n".encode()}
    h.kill()
    r = CliRunner().invoke(trt, args)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["decoder.engine", "eventspd.manifest.json",
                                                    trt_engine.PLUGIN_LIBRARY, "precompute.engine"]


def test_calibrate_into_a_folder_being_written_is_refused_then_succeeds(tmp_path, holder, tiny_model):
    from eventspd_export.export.onnx_export import ExportOptions, export_onnx

    src = tmp_path / "onnx"
    export_onnx(tiny_model, ExportOptions(src))
    out = tmp_path / "calib"
    h = holder(out)
    args = ["calibrate", "--config", "tiny", "--onnx-dir", str(src), "--out", str(out), "--precision", "fp16",
            "--calib-windows", "1", "--eval-windows", "1", "--budget", "0", "--k", "16",
            "--cache-dir", str(tmp_path / "cache")]
    _refused(CliRunner().invoke(main, args), out, h.pid)
    assert _snapshot(out) == {LOCK_FILE: f"{h.pid}\n".encode()}
    h.kill()
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert {"precompute.fp16.onnx", "decoder.fp16.onnx"} <= {p.name for p in out.iterdir()}
    assert not (out / LOCK_FILE).exists()
