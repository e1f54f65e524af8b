"""Checkpoint round trips in the three layouts, and every bad-checkpoint case, through the
library (typed errors) and through the CLI (one line on stderr, exit code 2, no traceback)."""
import logging

import pytest
import torch
from click.testing import CliRunner

from eventspd_export.cli import main
from model_def import EventSPD, get_config
from model_def.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def model():
    return EventSPD(get_config("tiny"), seed=5).eval()


def test_round_trip_model_config_layout(tmp_path, model):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(model, path)
    loaded, report = load_checkpoint(path)
    assert report.layout == "model+config" and report.config_source == "checkpoint"
    assert loaded.cfg == model.cfg and _same_weights(loaded, model)
    assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves no temp file


def test_round_trip_plain_state_dict_needs_config(tmp_path, model):
    path = tmp_path / "plain.pt"
    torch.save(model.state_dict(), path)
    loaded, report = load_checkpoint(path, get_config("tiny"))
    assert report.layout == "state_dict" and _same_weights(loaded, model)
    with pytest.raises(CheckpointError, match="look like configuration 'tiny': pass --config tiny"):
        load_checkpoint(path)  # default hd: the F^3 table says otherwise


def test_round_trip_lightning_layout_and_training_keys_dropped(tmp_path, model, caplog):
    trained = EventSPD(get_config("tiny"), training_heads=True, seed=5)
    sd = {f"model.{k}": v for k, v in trained.state_dict().items()}
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": sd, "epoch": 3, "config": get_config("tiny").to_dict()}, path)
    with caplog.at_level(logging.INFO):
        loaded, report = load_checkpoint(path)
    assert report.layout == "lightning"
    assert len(report.dropped_training_keys) == 12
    assert all(k.startswith("train_heads.") for k in report.dropped_training_keys)
    assert "dropped 12 training-only parameters" in caplog.text
    assert _same_weights(loaded, model)


def test_missing_unexpected_and_wrong_shape_keys_are_named(tmp_path, model):
    sd = dict(model.state_dict())
    sd.pop("b5.head.mlp.fc2.bias")
    sd["b9.extra"] = torch.zeros(3)
    sd["b2.layers.0.q.weight"] = torch.zeros(10, 10)
    path = tmp_path / "bad.pt"
    torch.save({"model": sd, "config": model.cfg.to_dict()}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert "missing 1 keys: b5.head.mlp.fc2.bias" in msg
    assert "unexpected 1 keys: b9.extra" in msg
    assert "b2.layers.0.q.weight (10, 10) (expected (192, 192))" in msg


def test_truncated_file(tmp_path, model):
    good = tmp_path / "good.pt"
    save_checkpoint(model, good)
    data = good.read_bytes()
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.pt: not a readable PyTorch checkpoint"):
        load_checkpoint(bad)


@pytest.mark.parametrize("content,match", [
    (b"hello, I am a text file\n", "not a readable PyTorch checkpoint"),
    (b"", "the file is empty"),
])
def test_non_checkpoint_files(tmp_path, content, match):
    path = tmp_path / "notes.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


def test_foreign_torch_file(tmp_path):
    path = tmp_path / "tensor.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(CheckpointError, match="holds a list, not a checkpoint dictionary"):
        load_checkpoint(path)
    torch.save({"optimizer": {"lr": 1}}, path)
    with pytest.raises(CheckpointError, match="no model weights found.*top-level keys are: optimizer"):
        load_checkpoint(path)


def test_checkpoint_of_another_configuration(tmp_path, model):
    path = tmp_path / "tiny.pt"
    save_checkpoint(model, path)
    with pytest.raises(CheckpointError, match="configuration 'tiny' \\(256x160\\), but configuration "
                                              "'dsec' \\(640x480\\) was requested"):
        load_checkpoint(path, get_config("dsec"))


def test_missing_file():
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint("/nonexistent/ckpt.pt")


@pytest.mark.parametrize("content", [b"garbage", None])
def test_cli_reports_bad_checkpoint_without_traceback(tmp_path, content):
    path = tmp_path / "ckpt.pt"
    if content is not None:
        path.write_bytes(content)
    result = CliRunner().invoke(main, ["inspect", "--checkpoint", str(path)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert result.output.startswith("error: ") and str(path) in result.output


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod."])
def test_wrapper_prefixes_are_stripped_in_every_layout(tmp_path, model, prefix):
    sd = {prefix + k: v for k, v in model.state_dict().items()}
    path = tmp_path / "wrapped.pt"
    torch.save({"model": sd, "config": model.cfg.to_dict()}, path)
    loaded, _ = load_checkpoint(path)
    assert _same_weights(loaded, model)


def test_config_mismatch_names_the_fields(tmp_path, model):
    import dataclasses
    path = tmp_path / "ckpt.pt"
    other = dataclasses.replace(model.cfg, window_s=0.01)
    torch.save({"model": model.state_dict(), "config": other.to_dict()}, path)
    with pytest.raises(CheckpointError, match="differences: window_s: 0.01 vs 0.0083"):
        load_checkpoint(path, model.cfg)


def test_pickled_objects_need_trust(tmp_path, model):
    import pathlib
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {"data_root": pathlib.PurePosixPath("/data")},
                "config": model.cfg.to_dict()}, path)
    with pytest.raises(CheckpointError, match="--trust-checkpoint"):
        load_checkpoint(path)
    loaded, _ = load_checkpoint(path, trusted=True)
    assert _same_weights(loaded, model)
    result = CliRunner().invoke(main, ["inspect", "--checkpoint", str(path), "--trust-checkpoint",
                                       "--events", "100", "--queries", "2"])
    assert result.exit_code == 0, result.output
