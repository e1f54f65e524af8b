"""Bad input from issue 17's red-team pass, as tests: one `error:` line, exit code 2, nothing
written (items 3 unbounded configuration, 4 NaN weights, 5-6 calibrate options, 8 file modes).
Items 1-2 (corrupt ONNX, manifest hashes) are in test_artifacts.py."""
from __future__ import annotations

import os
import stat

import pytest
import torch
from click.testing import CliRunner

from helpers import one_error_line
from eventspd_export.cli import main
from model_def import EventSPD, ModelConfig, get_config
from model_def.checkpoint import FORMAT, save_checkpoint


@pytest.fixture(scope="module")
def tiny_state():
    return EventSPD(get_config("tiny"), seed=0).state_dict()


@pytest.mark.parametrize("change, message", [
    ({"width": 100_000, "height": 100_000}, "width = 100000 is outside 1..4096"),
    ({"name": "evil/../../x"}, "config name 'evil/../../x'"),
    ({"heads": 10_000}, "heads = 10000 is outside 1..64"),
])
def test_a_checkpoint_with_an_unbounded_configuration_is_refused(tiny_state, tmp_path, change, message):
    cfg = {**get_config("tiny").to_dict(), **change}
    path = tmp_path / "bad.pt"
    torch.save({"format": FORMAT, "config": cfg, "model": tiny_state}, path)
    line = one_error_line(CliRunner().invoke(main, ["onnx", str(path), "--out", str(tmp_path / "out")]), alone=False)
    assert "its stored configuration is not valid" in line and message in line
    assert not (tmp_path / "out").exists()


def test_configuration_bounds_hold_for_every_built_in_configuration():
    from model_def import CONFIGS

    for cfg in CONFIGS.values():
        assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="must be an integer"):
        ModelConfig("x", 256.5, 160)


def test_nan_weights_are_refused_at_load(tmp_path):
    model = EventSPD(get_config("tiny"), seed=0)
    with torch.no_grad():
        next(model.parameters())[0].fill_(float("nan"))
    path = tmp_path / "nan.pt"
    save_checkpoint(model, path)
    for args in (["onnx", str(path), "--out", str(tmp_path / "out")],
                 ["evaluate", str(path), "--windows", "1", "--k", "4"]):
        line = one_error_line(CliRunner().invoke(main, args), alone=False)
        assert "tensors hold NaN or inf values" in line and "use an earlier checkpoint" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    (["--k", "0"], "--k 0: every query count must be in 1..65536"),
    (["--k", "256,70000"], "every query count must be in 1..65536"),
    (["--budget", "-1"], "--budget -1.0: a median relative depth error in (0, 1)"),
    (["--budget", "2"], "--budget 2.0"),
    (["--precision", ""], "--precision names no precision"),
    (["--precision", "fp8"], "unknown precision 'fp8'"),
])
def test_calibrate_refuses_bad_options_before_any_work(tmp_path, args, message):
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["calibrate", "--config", "tiny", "--onnx-dir", str(tmp_path / "onnx"),
                                  "--out", str(out), "--cache-dir", str(tmp_path / "cache"), *args])
    assert message in one_error_line(r, alone=False)
    assert not out.exists() and not (tmp_path / "onnx").exists() and not (tmp_path / "cache").exists()


def test_written_files_follow_the_umask(tmp_path):
    """ONNX files, the manifest and checkpoints are readable by others under the usual 022 umask
    (mkstemp alone would leave them 0600)."""
    from eventspd_export.export.onnx_export import ExportOptions, export_onnx

    old = os.umask(0o022)
    try:
        model = EventSPD(get_config("tiny"), seed=0).eval()
        export_onnx(model, ExportOptions(tmp_path / "onnx"))
        save_checkpoint(model, tmp_path / "ckpt.pt")
        os.umask(0o077)
        save_checkpoint(model, tmp_path / "private.pt")
    finally:
        os.umask(old)
    for f in [*(tmp_path / "onnx").iterdir(), tmp_path / "ckpt.pt"]:
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f
    assert stat.S_IMODE((tmp_path / "private.pt").stat().st_mode) == 0o600


def test_a_plain_state_dict_gets_the_configuration_that_fits(tmp_path):
    """Item 7: `demo` shares `tiny`'s sensor, so the hint compares every tensor shape."""
    path = tmp_path / "demo_state.pt"
    torch.save(EventSPD(get_config("demo"), seed=0).state_dict(), path)
    line = one_error_line(CliRunner().invoke(main, ["onnx", str(path), "--config", "tiny", "--out", str(tmp_path / "o")]), alone=False)
    assert line.endswith("these weights look like configuration 'demo': pass --config demo")
    assert not (tmp_path / "o").exists()


# ---- item 10: the small ones -------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_export(tmp_path_factory):
    """A tiny export for K <= 64 and at most 500 events per window."""
    out = tmp_path_factory.mktemp("small") / "exp"
    r = CliRunner().invoke(main, ["onnx", "--config", "tiny", "--out", str(out), "--k-max", "64",
                                  "--events-max", "500", "--no-verify"])
    assert r.exit_code == 0, r.output
    return out


@pytest.mark.parametrize("args, message", [
    (["--k", "1,100"], "--k 100 is above the K the graphs in"),
    (["--k", "1", "--events", "1000"], "a window has 1000 events, above the 500"),
])
def test_check_refuses_what_the_export_was_not_made_for(small_export, args, message):
    before = sorted(p.name for p in small_export.iterdir())
    r = CliRunner().invoke(main, ["check", "--onnx-dir", str(small_export), "--windows", "1", *args])
    line = one_error_line(r)
    assert message in line and ("--k-max" in line or "--events-max" in line)
    assert sorted(p.name for p in small_export.iterdir()) == before  # no check/ folder written


def test_write_events_config_must_match_the_given_export(small_export, tmp_path):
    out = tmp_path / "ev.bin"
    r = CliRunner().invoke(main, ["write-events", "--onnx-dir", str(small_export), "--config", "dsec",
                                  "--windows", "1", "--out", str(out)])
    assert "contradicts --onnx-dir" in one_error_line(r) and "'tiny'" in r.output
    assert not out.exists()
    r = CliRunner().invoke(main, ["write-events", "--onnx-dir", str(small_export), "--config", "tiny",
                                  "--windows", "1", "--k", "4", "--out", str(out)])
    assert r.exit_code == 0 and out.is_file(), r.output


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def test_an_exploit_pickle_is_named_as_such_and_never_runs(tmp_path, capfd):
    path = tmp_path / "evil.pt"
    torch.save({"model": _Exploit()}, path)
    line = one_error_line(CliRunner().invoke(main, ["onnx", str(path), "--out", str(tmp_path / "o")]))
    assert "refused: loading it would run pickled Python code (posix.system)" in line
    assert "truncated" not in line and "this must never run" not in capfd.readouterr().out
    assert not (tmp_path / "o").exists()


def test_a_plain_pickle_gets_its_own_message_and_no_torch_warning(tmp_path, tiny_state):
    import pickle

    path = tmp_path / "raw.pkl"
    path.write_bytes(pickle.dumps(tiny_state))
    for extra in ([], ["--trust-checkpoint"]):
        r = CliRunner().invoke(main, ["onnx", str(path), *extra, "--out", str(tmp_path / "o")])
        line = one_error_line(r)
        assert "a plain pickle file, not a torch.save checkpoint" in line and "torch.save(state_dict" in line
    # in a fresh process (pytest would swallow the warning): stderr is that one line, no UserWarning
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "eventspd_export", "onnx", str(path), "--out",
                           str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.splitlines() == [line], proc.stderr
    assert not (tmp_path / "o").exists()
