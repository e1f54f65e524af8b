import json

import pytest
from click.testing import CliRunner

from helpers import one_error_line

from eventspd_export.cli import main
from model_def import EventSPD, get_config
from model_def.checkpoint import save_checkpoint

PARAM_KEYS = {"f3", "stem", "l1", "l2", "l3", "l4", "convgru", "a3", "a4", "b1", "b2", "b3",
              "b4", "b5", "backbone_total", "decoder_total", "total"}


def test_inspect_json_default_model():
    result = CliRunner().invoke(main, ["inspect", "--config", "tiny", "--json", "--queries", "8",
                                       "--events", "2000"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert PARAM_KEYS <= set(report["params"])
    assert report["config"]["name"] == "tiny"
    assert report["forward"]["finite"] and report["forward"]["queries"] == 8
    names = [s["name"] for s in report["decoder_inputs"]]
    assert names[-1] == "queries" and "hidden" not in names
    assert report["decoder_inputs"][-1]["shape"] == [1, "num_queries", 2]


def test_inspect_table_with_checkpoint(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(EventSPD(get_config("tiny"), seed=1), path)
    result = CliRunner().invoke(main, ["inspect", "--checkpoint", str(path), "--queries", "4",
                                       "--events", "500"])
    assert result.exit_code == 0, result.output
    assert "config tiny: sensor 256x160" in result.output
    assert f"checkpoint {path} (model+config, config from checkpoint" in result.output
    assert "b3_key1      float32  [1, 40, 192]" in result.output


def test_inspect_zero_events_and_bad_option():
    ok = CliRunner().invoke(main, ["inspect", "--config", "tiny", "--events", "0", "--queries", "2"])
    assert ok.exit_code == 0, ok.output
    bad = CliRunner().invoke(main, ["inspect", "--config", "vga"])
    # Click's own refusals are one error line too (cli/app.py: _OneLineUsageError), with the help hint
    assert one_error_line(bad) == ("error: Invalid value for '--config': 'vga' is not one of 'demo', 'dsec', 'hd', "
                                   "'mvsec', 'tiny' (see `eventspd-export inspect --help`)")
    for args, message in ((["check", "--bogus"], "No such option '--bogus'"),
                          (["evaluate"], "Missing argument 'CHECKPOINT'"),
                          (["nosuchcmd"], "No such command 'nosuchcmd'"),
                          (["onnx", "--opset", "abc"], "'abc' is not a valid integer")):
        assert message in one_error_line(CliRunner().invoke(main, args)), args
    bare = CliRunner().invoke(main, [])  # the bare command still shows its help
    assert "Usage: main [OPTIONS] COMMAND" in bare.output and "Commands:" in bare.output


def test_build_plugins_says_what_is_missing(tmp_path):
    result = CliRunner().invoke(main, ["build-plugins", "--tensorrt-root", str(tmp_path)])
    assert result.exit_code == 2
    assert "TensorRT not found in the given TensorRT root" in result.output
    assert "libnvinfer.so" in result.output and "Traceback" not in result.output
