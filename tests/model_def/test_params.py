"""HD parameter counts against the seed's tables (±10 % per stage, total ≈ 11.1M)."""
import pytest

from model_def import SEED_PARAMS, EventSPD, get_config


@pytest.fixture(scope="module")
def hd_params():
    return EventSPD(get_config("hd"), seed=None).stage_parameters()


@pytest.mark.parametrize("stage", sorted(SEED_PARAMS))
def test_stage_within_ten_percent_of_seed(hd_params, stage):
    ref = SEED_PARAMS[stage]
    assert abs(hd_params[stage] - ref) <= 0.10 * ref, (stage, hd_params[stage], ref)


def test_totals_are_sums_of_stages(hd_params):
    p = hd_params
    assert p["backbone_total"] == sum(p[s] for s in ("stem", "l1", "l2", "l3", "l4", "convgru"))
    assert p["decoder_total"] == sum(p[s] for s in ("b1", "b2", "b3", "b4", "b5"))
    assert p["total"] == p["backbone_total"] + p["a3"] + p["a4"] + p["decoder_total"]
    assert p["f3"] > 0 and "f3" not in ("total",)


def test_weights_do_not_depend_on_sensor_except_f3():
    a = EventSPD(get_config("hd"), seed=None).state_dict()
    b = EventSPD(get_config("tiny"), seed=None).state_dict()
    assert a.keys() == b.keys()
    differ = [k for k in a if a[k].shape != b[k].shape]
    assert differ == ["f3.table"]
