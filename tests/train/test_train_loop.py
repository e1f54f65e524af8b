"""`eventspd-export train`: targets, schedule, parameter groups, resume, errors (train.py)."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from eventspd_export.data.windows import EventWindow
from eventspd_export.cli import main
from eventspd_export.train.inputs import SequenceSource, event_counts, level_targets
from eventspd_export.train.loop import Trainer, inference_checkpoint, lr_factor, parameter_groups, run_training
from eventspd_export.train.options import TrainingError, TrainOptions
from model_def import EventSPD, get_config
from model_def.checkpoint import load_checkpoint, save_checkpoint

FAST = dict(config="demo", steps=3, k_train=24, bptt=2, warmup_steps=1, checkpoint_every=1)


def test_level_targets_average_inverse_depth_per_cell():
    cfg = get_config("demo")
    depth = np.full((cfg.height, cfg.width), 4.0, np.float32)
    depth[:8, :8] = 2.0                      # L2 cell (0, 0): all pixels 2 m
    depth[:8, 8:16] = np.nan                 # L2 cell (0, 1): no valid pixel
    depth[8:16, :8] = 1.0
    depth[8:11, :8] = np.nan                 # L2 cell (1, 0): 5 of 8 rows valid at 1 m
    depth[16:24, :8][:6] = np.nan            # L2 cell (2, 0): 2 of 8 rows valid -> 25 %, valid
    depth[24:32, :8][:7] = np.nan            # L2 cell (3, 0): 1 of 8 rows valid -> invalid
    targets, valid = level_targets(depth, cfg)
    t2, v2 = targets["l2"][0].numpy(), valid["l2"][0].numpy()
    assert t2.shape == cfg.level_hw(2) and targets["l3"].shape[1:] == cfg.level_hw(3)
    assert t2[0, 0] == pytest.approx(0.5) and v2[0, 0]
    assert not v2[0, 1]
    assert t2[1, 0] == pytest.approx(1.0) and v2[1, 0]
    assert v2[2, 0] and t2[2, 0] == pytest.approx(0.25)
    assert not v2[3, 0]
    assert t2[5, 5] == pytest.approx(0.25) and v2[5, 5]
    # L3 cell (0, 0) covers 16x16 pixels of mixed validity: the mean over its valid ones
    block = depth[:16, :16]
    ok = np.isfinite(block)
    assert targets["l3"][0, 0, 0].item() == pytest.approx(float(np.mean(1.0 / block[ok])), rel=1e-6)
    none_t, none_v = level_targets(None, cfg)
    assert not none_v["l2"].any() and not none_v["l3"].any()


def test_event_counts_per_level_cell():
    cfg = get_config("demo")
    ev = np.array([[0, 0, 0, 1], [15.9, 15.9, 0.5, -1], [16, 0, 0.2, 1], [300, 5, 0.1, 1]], np.float32)
    c3 = event_counts(ev, cfg, 3)[0].numpy()
    assert c3.shape == cfg.level_hw(3)
    assert c3[0, 0] == 2 and c3[0, 1] == 1 and c3.sum() == 3  # the off-sensor event is dropped


def test_lr_schedule_warms_up_then_decays_to_ten_percent():
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(100, 100, 10) == pytest.approx(0.1)
    values = [lr_factor(s, 100, 10) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_parameter_groups_cover_every_parameter_once():
    model = EventSPD(get_config("demo"), training_heads=True)
    groups = parameter_groups(model, 1e-3, 0.01)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    low = {id(p) for p in groups[2]["params"]}
    assert id(model.b4.w_offset.weight) in low and groups[2]["lr_scale"] == 0.1
    no_decay = {id(p) for p in groups[1]["params"]}
    assert id(model.f3.table) in no_decay and groups[1]["weight_decay"] == 0.0


def test_training_writes_resumable_checkpoints(tmp_path):
    torch.set_num_threads(1)
    straight = run_training(TrainOptions(**FAST), tmp_path / "a.pt", log=lambda s: None)
    assert [h["step"] for h in straight.history] == [1, 2, 3]
    assert all(np.isfinite(h["loss"]) for h in straight.history)
    # a 3-step run stopped after two steps, then resumed: same weights as the uninterrupted run
    interrupted = Trainer(TrainOptions(**FAST))
    data = SequenceSource("synthetic", interrupted.cfg, FAST["bptt"], FAST["steps"], 0)
    for step in range(2):
        interrupted.train_step(data.sequence(step))
    interrupted.save(tmp_path / "b.pt")
    resumed = run_training(TrainOptions(**FAST), tmp_path / "b.pt", resume=tmp_path / "b.pt",
                           log=lambda s: None)
    assert resumed.step == 3 and len(resumed.history) == 3
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    # the training checkpoint loads for inference (training heads dropped); the inference copy
    # is fp16 and smaller, and gives the same model up to fp16 rounding
    model, report = load_checkpoint(tmp_path / "a.pt")
    assert report.dropped_training_keys and model.cfg.name == "demo"
    inference_checkpoint(tmp_path / "a.pt", tmp_path / "w.pt")
    small, report2 = load_checkpoint(tmp_path / "w.pt")
    assert not report2.dropped_training_keys
    assert (tmp_path / "w.pt").stat().st_size < 0.6 * (tmp_path / "a.pt").stat().st_size / 2
    for (name, a), b in zip(model.state_dict().items(), small.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=name)


def test_one_step_updates_every_trained_stage():
    torch.set_num_threads(1)
    trainer = Trainer(TrainOptions(**{**FAST, "steps": 1}))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    data = SequenceSource("synthetic", trainer.cfg, 2, 1, 0)
    result = trainer.train_step(data.sequence(0))
    assert np.isfinite(result.loss) and result.valid_queries > 0 and result.grad_norm > 0
    after = trainer.model.state_dict()
    for stage in ("f3.", "stem.", "l1.", "l2.", "l3.", "l4.", "convgru.", "a3.", "a4.", "b1.",
                  "b2.", "b3.", "b5.", "train_heads.dense_l2."):
        changed = [k for k in before if k.startswith(stage) and not torch.equal(before[k], after[k])]
        assert changed, f"no parameter of {stage} changed"
    assert not trainer.sampler.hard_map.empty  # the EMA loss map saw the queries' losses


class _NoDepth:
    has_depth = False

    def __len__(self):
        return 10

    def close(self):
        pass


def test_data_without_depth_is_refused(monkeypatch):
    import eventspd_export.train.inputs as train_mod

    monkeypatch.setattr(train_mod, "open_source", lambda *a, **k: _NoDepth())
    with pytest.raises(TrainingError, match="no depth ground truth"):
        SequenceSource("m3ed:/some/file.h5", get_config("demo"), 4, 10, 0)


def test_window_without_depth_still_advances_the_state():
    torch.set_num_threads(1)
    trainer = Trainer(TrainOptions(**{**FAST, "steps": 1}))
    ev = np.array([[10, 10, 0.1, 1], [20, 30, 0.5, -1]], np.float32)
    windows = [EventWindow(ev, None, 0, 8333, "test", 0), EventWindow(ev, None, 8333, 8333, "test", 1)]
    result = trainer.train_step(windows)
    assert np.isnan(result.loss) and result.valid_queries == 0 and trainer.step == 1


def test_train_cli(tmp_path):
    runner = CliRunner()
    out = tmp_path / "t.pt"
    res = runner.invoke(main, ["train", "--steps", "1", "--k-train", "16", "--bptt", "1",
                               "--threads", "1", "--out", str(out), "--weights-out",
                               str(tmp_path / "w.pt")])
    assert res.exit_code == 0, res.output
    assert out.is_file() and (tmp_path / "w.pt").is_file()
    assert "step 1:" in res.output
    # --time-limit: stops after the first step that passes it, with a resumable checkpoint there
    res = runner.invoke(main, ["train", "--steps", "5", "--k-train", "16", "--bptt", "1",
                               "--threads", "1", "--out", str(out), "--time-limit", "1e-3"])
    assert res.exit_code == 0, res.output
    assert "time limit of 0 s reached at step 1 of 5" in res.output
    assert torch.load(out, weights_only=False)["train_state"]["step"] == 1
    assert_train_user_errors(tmp_path, (
        (["--out", str(tmp_path / "missing" / "t.pt")], "does not exist"),
        (["--resume", str(tmp_path / "nope.pt")], "no such file"),
        (["--resume", str(tmp_path / "w.pt")], "no training state"),
        (["--resume", str(out), "--config", "tiny"], "configuration 'demo'"),
        (["--data", "mvsec:" + str(tmp_path / "none.hdf5")], "does not exist"),
        (["--lr", "-1"], "--lr must be a positive number"),
        (["--teacher", "nomodule"], "module:factory"),
        (["--device", "tpu"], "expected cpu, cuda"),
        (["--time-limit", "0"], "--time-limit")))


def assert_train_user_errors(tmp_path, cases):
    """Each (extra args, message) of `train`: exit code 2, the message, no traceback, nothing
    written."""
    runner = CliRunner()
    for args, message in cases:
        res = runner.invoke(main, ["train", "--steps", "1", "--k-train", "8", "--bptt", "1",
                                   "--out", str(tmp_path / "x.pt"), *args])
        assert res.exit_code == 2, (args, res.output)
        assert message in res.output, (args, res.output)
        assert "Traceback" not in res.output
    assert not (tmp_path / "x.pt").exists()


def test_bf16_autocast_path_trains():
    """The bf16 autocast path (on by default on CUDA devices with bf16) runs the model, the
    plugin ops' reference implementations and the losses; checked here with CPU autocast."""
    torch.set_num_threads(1)
    trainer = Trainer(TrainOptions(**{**FAST, "steps": 1}))
    trainer.autocast = True
    data = SequenceSource("synthetic", trainer.cfg, 2, 1, 0)
    result = trainer.train_step(data.sequence(0))
    assert np.isfinite(result.loss) and np.isfinite(result.grad_norm) and result.grad_norm > 0
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # fp32 master weights


def test_absrel_loss_is_the_metric():
    from model_def.training import absrel_loss

    pred, gt = torch.tensor([2.0, 1.0, 9.0]), torch.tensor([1.0, 2.0, 3.0])
    valid = torch.tensor([True, True, False])
    assert absrel_loss(pred, gt, valid).item() == pytest.approx((1.0 + 0.5) / 2)
    assert absrel_loss(pred, gt, torch.zeros(3, dtype=torch.bool)).item() == 0.0


def test_init_fine_tunes_from_a_checkpoint_with_the_absrel_term(tmp_path):
    torch.set_num_threads(1)
    start = EventSPD(get_config("demo"), seed=7).eval()
    save_checkpoint(start, tmp_path / "start.pt")
    trainer = Trainer(TrainOptions(**{**FAST, "steps": 1, "init": str(tmp_path / "start.pt"),
                                      "absrel_weight": 1.0}))
    # the inference weights are the checkpoint's; the training heads are fresh
    for name, value in start.state_dict().items():
        torch.testing.assert_close(trainer.model.state_dict()[name], value, msg=name)
    data = SequenceSource("synthetic", trainer.cfg, 2, 1, 0)
    result = trainer.train_step(data.sequence(0))
    assert result.terms["absrel"] > 0 and np.isfinite(result.loss)
    assert_train_user_errors(tmp_path, (
        (["--init", str(tmp_path / "none.pt")], "no such file"),
        (["--init", str(tmp_path / "start.pt"), "--resume", str(tmp_path / "start.pt")],
         "exclude each other"),
        (["--init", str(tmp_path / "start.pt"), "--config", "tiny"], "--init"),
        (["--absrel-weight", "-1"], "--absrel-weight must be")))
