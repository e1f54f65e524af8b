import pytest

from model_def import CONFIGS, ModelConfig, get_config


def test_hd_sizes_follow_the_seed():
    cfg = get_config("hd")
    assert cfg.f3_hw == (360, 640)
    assert [cfg.level_hw(i) for i in range(1, 5)] == [(180, 320), (90, 160), (45, 80), (22, 40)]
    assert cfg.grid_tokens == 880  # the seed's 880 L4 tokens: 720/32 rounds down
    assert cfg.f3_resolutions[0] == (8, 8, 1) and cfg.f3_resolutions[-1] == (320, 180, 8)
    assert abs(cfg.time_scale - (1 / 120) / 0.020) < 1e-12


@pytest.mark.parametrize("name,l4", [("dsec", (15, 20)), ("mvsec", (8, 10)), ("tiny", (5, 8))])
def test_other_configs(name, l4):
    cfg = get_config(name)
    assert cfg.level_hw(4) == l4
    assert cfg.grid_tokens >= cfg.top_r


def test_mvsec_odd_sizes_round_as_documented():
    cfg = get_config("mvsec")  # 346 x 260
    assert cfg.f3_hw == (130, 173)  # ceil
    assert cfg.level_hw(1) == (65, 87)  # ceil
    assert cfg.level_hw(2) == (32, 43)  # floor from here on


def test_config_round_trip_and_errors():
    for cfg in CONFIGS.values():
        assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown configuration fields: bogus"):
        ModelConfig.from_dict({**CONFIGS["tiny"].to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="fewer than top_r"):
        ModelConfig("small", 128, 96)
    with pytest.raises(KeyError, match="choose one of"):
        get_config("vga")
