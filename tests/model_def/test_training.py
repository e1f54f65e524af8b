"""Training-only pieces: losses, the straight-through estimator, fp16-safe GRN."""
import dataclasses
import math

import torch

from eventspd_export.data.synthetic import random_queries, synthetic_window
from model_def import EventSPD, get_config
from model_def import training as T
from model_def.layers import GRN


def test_silog_is_non_negative_and_scale_invariant_at_lambda_one():
    gt = torch.rand(50) * 20 + 1
    valid = torch.ones(50, dtype=torch.bool)
    noisy = gt * torch.exp(torch.randn(50) * 0.1)
    for c in (-3.0, 0.0, 1.0, 3.0, 10.0):
        assert T.silog_loss(noisy * math.exp(c), gt, valid) >= 0
        # lambda_var = 1: a global scale does not change the loss
        torch.testing.assert_close(T.silog_loss(noisy * math.exp(c), gt, valid, lambda_var=1.0),
                                   T.silog_loss(noisy, gt, valid, lambda_var=1.0), rtol=1e-4, atol=1e-5)
    assert T.silog_loss(gt, gt, valid) < 1e-5


def test_point_loss_and_dense_weight_schedule():
    pred = torch.tensor([0.1, 0.2, 0.3])
    gt = torch.tensor([0.1, 0.4, 9.0])
    valid = torch.tensor([True, True, False])
    torch.testing.assert_close(T.point_loss(pred, gt, valid), torch.tensor(0.5 * 0.2 ** 2 / 2))
    assert T.point_loss(pred, gt, torch.zeros(3, dtype=torch.bool)) == 0
    assert T.dense_weight(0, 100) == 1.0 and T.dense_weight(99, 100) == 0.25


def test_feature_loss_weights_event_dense_pixels_up_to_two():
    ours = torch.randn(1, 8, 4, 4)
    counts = torch.zeros(1, 4, 4)
    counts[0, 0, 0] = 100.0  # one busy pixel: weight clamps to 2, the others 0
    loss = T.feature_loss(ours, -ours, counts, lam=0.1)  # cosine -1 -> 1 - cos = 2
    torch.testing.assert_close(loss, torch.tensor(0.1 * 2 * 2 / 16))


def test_straight_through_estimator_gives_routing_a_gradient():
    cfg = dataclasses.replace(get_config("tiny"), attn_dropout=0.0)
    ev = synthetic_window(cfg, 2000, seed=1)
    q = random_queries(cfg, 16, seed=2)
    grads = {}
    for ste in (True, False):
        model = EventSPD(cfg, seed=0).train()
        model.b4.train(ste)  # the STE is active only while B4 is in training mode
        pre = model.precompute(ev)
        depth, _ = model.decode(pre, q)
        depth.sum().backward()
        grads[ste] = model.a3.b3_k[1].weight.grad.clone()
    assert (grads[True] - grads[False]).abs().max() > 1e-3 * grads[False].abs().max()


def test_grn_survives_fp16_on_large_maps():
    grn = GRN(16).half()
    x = (torch.randn(1, 360, 640, 16) * 0.6).half()
    assert torch.isfinite(grn(x)).all()
