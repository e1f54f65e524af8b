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
    # (with the matching --config the export's limits apply: test_write_events_refuses_what_the_named_export_cannot_run)


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


# ---- the second red-team pass (2026-12-03): outputs, manifests, exports and their consumers ------

def _listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_outputs_are_checked_before_any_work(small_export, tmp_path):
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    before = _listing(small_export)
    half = tmp_path / "half"  # save_reference wrote precompute/ and then failed on a file named decoder
    half.mkdir()
    (half / "decoder").write_text("x")
    cases = [
        (["check", "--onnx-dir", str(small_export), "--k", "1", "--windows", "1", "--save", str(a_file / "sub")],
         f"--save {a_file / 'sub'}: {a_file} is a file, not a folder"),
        (["check", "--onnx-dir", str(small_export), "--k", "1", "--windows", "1", "--save", str(half)],
         f"--save {half / 'decoder'} is a file, not a folder"),
        (["evaluate", "checkpoints/demo.pt", "--windows", "1", "--k", "4", "--json", str(a_file / "x.json")],
         f"--json {a_file / 'x.json'}: folder {a_file} is a file"),
        (["train", "--config", "tiny", "--steps", "1", "--out", str(a_file / "t.pt")],
         f"--out {a_file / 't.pt'}: folder {a_file} is a file"),
        (["build-plugins", "--build-dir", str(a_file / "sub")], f"--build-dir {a_file / 'sub'}: {a_file} is a file"),
    ]
    for args, message in cases:
        line = one_error_line(CliRunner().invoke(main, args), alone=False)
        assert line == f"error: {message}" or line.startswith(f"error: {message}"), (args, line)
    assert _listing(small_export) == before and _listing(half) == ["decoder"]


def test_a_path_error_the_checks_did_not_foresee_is_one_line_with_exit_2():
    import click

    from eventspd_export.cli.options import user_errors

    @click.command()
    @user_errors
    def fails():
        raise PermissionError(13, "Permission denied", "/somewhere/out.json")

    assert one_error_line(CliRunner().invoke(fails, [])) == "error: /somewhere/out.json: Permission denied"


def test_negative_seeds_are_refused_by_the_option():
    for args in (["evaluate", "checkpoints/demo.pt", "--seed", "-1"], ["train", "--config", "tiny", "--seed", "-1"]):
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 2 and "-1 is not in the range x>=0" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(graphs=[1, 2]), "graphs is not an object of graph entries"),
    (lambda m: m.update(config="tiny"), "config is not an object"),
    (lambda m: m.update(checkpoint="abc"), "checkpoint is not an object"),
    (lambda m: m["dynamic_axes"].update(num_queries="big"), "dynamic_axes.num_queries is not an object of integer"),
    (lambda m: m["dynamic_axes"]["num_queries"].update(max=-5), "dynamic_axes.num_queries is not an object of integer"),
    (lambda m: m["dynamic_axes"]["num_events"].update(min=9, max=3), "dynamic_axes.num_events has min 9 above max 3"),
    (lambda m: m.update(plugin_ops="x"), "plugin_ops is not a list of objects"),
])
def test_a_manifest_of_the_wrong_types_is_refused_by_name(small_export, tmp_path, edit, message):
    import json
    import shutil

    folder = tmp_path / "exp"
    shutil.copytree(small_export, folder)
    manifest = json.loads((folder / "eventspd.manifest.json").read_text())
    edit(manifest)
    (folder / "eventspd.manifest.json").write_text(json.dumps(manifest))
    line = one_error_line(CliRunner().invoke(main, ["check", "--onnx-dir", str(folder), "--k", "1", "--windows", "1"]))
    assert "is not a valid eventspd-export manifest: " + message in line, line


def test_evaluate_refuses_graphs_exported_from_other_weights(small_export, tmp_path):
    ckpt = tmp_path / "seed1.pt"
    save_checkpoint(EventSPD(get_config("tiny"), seed=1), ckpt)
    r = CliRunner().invoke(main, ["evaluate", str(ckpt), "--onnx", str(small_export), "--windows", "1", "--k", "4"])
    line = one_error_line(r, alone=False)
    assert "were exported from the built-in default weights, not from the checkpoint evaluated" in line
    assert "AbsRel" not in r.output  # refused before the evaluation ran


def test_json_files_are_standard_json():
    """evaluate's report had bare NaN tokens for empty depth cut-offs: not JSON to a strict parser."""
    import json

    from eventspd_export.artifacts import json_bytes

    text = json_bytes({"abs_rel": float("nan"), "rows": [float("inf"), 1.5, {"x": -float("inf")}], "n": 3}).decode()

    def refuse(token):
        raise ValueError(f"not JSON: {token}")

    assert json.loads(text, parse_constant=refuse) == {"abs_rel": None, "rows": [None, 1.5, {"x": None}], "n": 3}


def test_write_events_refuses_what_the_named_export_cannot_run(small_export, tmp_path):
    out = tmp_path / "ev.bin"
    for args, message in ((["--k", "100"], "--k 100 is above the 64 queries the export was made for (--k-max)"),
                          (["--k", "4", "--data", "synthetic"], "events, above the 500 the export was made for")):
        r = CliRunner().invoke(main, ["write-events", "--onnx-dir", str(small_export), "--windows", "1",
                                      "--out", str(out), *args])
        assert message in one_error_line(r, alone=False)
        assert not out.exists()


def test_a_new_export_removes_what_calibrate_made_from_the_graphs_it_replaces(tmp_path):
    from eventspd_export.artifacts import DERIVED_FILES

    out = tmp_path / "exp"
    export = ["onnx", "--config", "tiny", "--out", str(out), "--no-verify"]
    assert CliRunner().invoke(main, export).exit_code == 0
    for name in DERIVED_FILES:
        (out / name).write_text("made from the first export")
    assert CliRunner().invoke(main, export).exit_code == 0  # the same graphs again: still theirs
    assert all((out / name).is_file() for name in DERIVED_FILES)
    ckpt = tmp_path / "seed1.pt"
    save_checkpoint(EventSPD(get_config("tiny"), seed=1), ckpt)
    r = CliRunner().invoke(main, ["onnx", str(ckpt), "--out", str(out), "--no-verify"])
    assert r.exit_code == 0, r.output
    assert not any((out / name).exists() for name in DERIVED_FILES)


@pytest.mark.parametrize("args, env, message", [
    (["--teacher", "os:getcwd"], {}, "--teacher 'os:getcwd': getcwd() returned a str, expected a callable teacher"),
    (["--teacher", "os:sep"], {}, "--teacher 'os:sep': sep is a str, not a factory to call"),
    (["--time-limit", "nan"], {}, "--time-limit nan: expected a finite number of seconds > 0"),
    ([], {"WORLD_SIZE": "abc"}, "$WORLD_SIZE='abc' is not an integer"),
    ([], {"WORLD_SIZE": "2", "RANK": "5", "LOCAL_RANK": "0", "MASTER_ADDR": "localhost", "MASTER_PORT": "29512"},
     "RANK=5 is not in 0..1 (WORLD_SIZE=2)"),
])
def test_train_refuses_a_bad_teacher_time_limit_or_torchrun_environment(tmp_path, monkeypatch, args, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    r = CliRunner().invoke(main, ["train", "--config", "tiny", "--steps", "1", "--k-train", "4", "--bptt", "1",
                                  "--out", str(tmp_path / "t.pt"), *args])
    assert message in one_error_line(r, alone=False)
    assert not (tmp_path / "t.pt").exists()
