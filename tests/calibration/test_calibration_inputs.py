"""``calibrate``'s user errors are found before any work, and a failure leaves nothing behind:
bad --out/--cache-dir folders, bad --data, too few windows, a failure after --out was created.
No fp32 graphs are exported here: every check below must fire before the export."""
import pytest
from click.testing import CliRunner

from calibration import int8 as q8
from calibration import pipeline
from calibration.pipeline import CalibrationOptions, calibrate
from eventspd_export.cli import main
from model_def import EventSPD, get_config
from model_def.errors import UserError


def _cli(tmp_path, *args, out=None):
    """``calibrate`` on tiny with an --onnx-dir that does not exist (an export would create it)."""
    return CliRunner().invoke(main, ["calibrate", "--config", "tiny", "--onnx-dir", str(tmp_path / "fp32"),
                                     "--out", str(out or tmp_path / "out"), "--calib-windows", "1",
                                     "--eval-windows", "1", "--k", "32", "--budget", "0", *args])


def _nothing_written(tmp_path, *keep):
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)


@pytest.mark.parametrize("option", ["--out", "--cache-dir"])
def test_a_folder_under_a_regular_file_is_refused_up_front(tmp_path, option):
    (tmp_path / "afile").write_text("user data")
    bad = tmp_path / "afile" / "sub"
    args = ["--cache-dir", str(bad)] if option == "--cache-dir" else []
    res = _cli(tmp_path, *args, out=bad if option == "--out" else None)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and isinstance(res.exception, SystemExit)
    line = res.output.strip().splitlines()[-1]
    assert line.startswith("error: ") and option in line and "is a file, not a folder" in line, line
    _nothing_written(tmp_path, "afile")
    assert (tmp_path / "afile").read_text() == "user data"


@pytest.mark.parametrize("option", ["--out", "--cache-dir"])
def test_an_existing_regular_file_is_refused_as_a_folder(tmp_path, option):
    (tmp_path / "afile").write_text("user data")
    res = _cli(tmp_path, option, str(tmp_path / "afile"))
    assert res.exit_code == 2 and option in res.output and "Traceback" not in res.output, res.output
    _nothing_written(tmp_path, "afile")


def test_an_unwritable_folder_is_refused(tmp_path, monkeypatch):
    # root may write anywhere, so the probe write itself is made to fail
    import tempfile

    def refuse(*a, dir=None, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    with pytest.raises(UserError, match=r"--out .*not writable"):
        CalibrationOptions(tmp_path, tmp_path / "out").validate()


def test_a_missing_data_source_is_found_before_the_export_and_before_out(tmp_path):
    res = _cli(tmp_path, "--data", f"dsec:{tmp_path / 'nonexistent'}")
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert res.output.strip().splitlines()[-1].startswith("error: dsec:")
    _nothing_written(tmp_path)  # neither the 45 MB fp32 export nor an empty --out


def test_too_few_windows_are_found_before_the_export_and_before_out(tmp_path):
    res = _cli(tmp_path, "--calib-windows", "300")  # the simulator gives 256
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    line = res.output.strip().splitlines()[-1]
    assert "--data synthetic: the source has 256 windows" in line and "--calib-windows 300" in line, line
    _nothing_written(tmp_path)


def test_a_failure_after_out_was_created_removes_only_the_new_empty_folders(tmp_path, monkeypatch):
    model = EventSPD(get_config("tiny"), seed=0).eval()
    monkeypatch.setattr(pipeline, "ensure_fp32_graphs", lambda m, d, load=None: {})

    def fail(out, *a, **k):  # the work inside the locked --out fails (a late error, a kill ...)
        assert out.is_dir()
        raise q8.CalibrationError("late failure")

    monkeypatch.setattr(pipeline, "_calibrate_into", fail)
    opts = dict(data="synthetic", calib_windows=1, eval_windows=1, budget=None, k_calib=8, k_eval=(8,))
    with pytest.raises(q8.CalibrationError, match="late failure"):
        calibrate(model, CalibrationOptions(tmp_path / "fp32", tmp_path / "new" / "out", **opts))
    _nothing_written(tmp_path)  # new/ and new/out were ours, and empty: removed
    # a folder the user had (even empty) stays, and so does what is in it
    (tmp_path / "mine").mkdir()
    with pytest.raises(q8.CalibrationError, match="late failure"):
        calibrate(model, CalibrationOptions(tmp_path / "fp32", tmp_path / "mine", **opts))
    (tmp_path / "mine" / "keep.txt").write_text("x")
    with pytest.raises(q8.CalibrationError, match="late failure"):
        calibrate(model, CalibrationOptions(tmp_path / "fp32", tmp_path / "mine" / "sub", **opts))
    _nothing_written(tmp_path, "mine")
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["keep.txt"]


def test_graphs_of_other_weights_are_refused_and_a_new_export_records_the_checkpoint(tmp_path):
    """calibrate quantises the graphs in --onnx-dir and reports them against the model: graphs of
    other weights would report the difference of two models as quantisation error."""
    import json

    from model_def.checkpoint import load_checkpoint, save_checkpoint

    ckpt = tmp_path / "seed1.pt"
    save_checkpoint(EventSPD(get_config("tiny"), seed=1), ckpt)
    model, load = load_checkpoint(ckpt)
    # an export calibrate makes from the checkpoint records it, as `onnx CKPT` does (evaluate and
    # check then accept the pairing)
    pipeline.ensure_fp32_graphs(model, tmp_path / "fp32", load)
    manifest = json.loads((tmp_path / "fp32" / "eventspd.manifest.json").read_text())
    assert manifest["checkpoint"]["sha256"] == load.sha256
    # the built-in weights' export is refused for the checkpoint, before anything is written
    assert CliRunner().invoke(main, ["onnx", "--config", "tiny", "--out", str(tmp_path / "builtin"),
                                     "--no-verify"]).exit_code == 0
    res = CliRunner().invoke(main, ["calibrate", str(ckpt), "--onnx-dir", str(tmp_path / "builtin"), "--out",
                                    str(tmp_path / "out"), "--calib-windows", "1", "--eval-windows", "1",
                                    "--k", "32", "--budget", "0"])
    assert res.exit_code == 2, res.output
    assert res.output.strip().splitlines()[-1] == (
        f"error: the graphs in {tmp_path / 'builtin'} were exported from the built-in default weights, not from "
        f"{ckpt}: pass that checkpoint, or re-export from this one")
    assert not (tmp_path / "out").exists()
