import pytest
import torch

from eventspd_export.synthetic import random_queries, synthetic_window
from model_def import EventSPD, get_config


@pytest.fixture(scope="session")
def tiny_cfg():
    return get_config("tiny")


@pytest.fixture(scope="session")
def tiny_model(tiny_cfg):
    return EventSPD(tiny_cfg, seed=0).eval()


@pytest.fixture(scope="session")
def tiny_events(tiny_cfg):
    return synthetic_window(tiny_cfg, 5000, seed=3)


@pytest.fixture(scope="session")
def tiny_pre(tiny_model, tiny_events):
    with torch.inference_mode():
        return tiny_model.precompute(tiny_events)


@pytest.fixture()
def tiny_queries(tiny_cfg):
    return random_queries(tiny_cfg, 7, seed=4)
