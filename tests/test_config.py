import pytest

from fercore.config import PROFILES, build_config, parse_overrides
from fercore.errors import ConfigError


def test_defaults_profile_yaml_and_overrides_layer_in_order(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  epochs: 7\n  batch_size: 16\ndata:\n  noise: sym:0.2\n")
    cfg = build_config("smoke", f, ["train.epochs=3", "optim.lr=0.01"])
    assert cfg.profile == "smoke"
    assert cfg.data.image_size == PROFILES["smoke"]["data"]["image_size"]  # from the smoke profile
    assert cfg.train.batch_size == 16         # from the YAML file
    assert cfg.train.epochs == 3              # the override wins over the YAML file
    assert cfg.optim.lr == 0.01 and cfg.data.noise == "sym:0.2"


def test_int_is_accepted_for_float_and_list_for_tuple():
    cfg = build_config("smoke", overrides=["optim.lr=1", "data.synthfer.intensity=[0.2, 0.9]"])
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.data.synthfer.intensity == (0.2, 0.9)


@pytest.mark.parametrize("override, names", [
    (["train.epoch=3"], "'train.epoch' (did you mean 'epochs'?)"),
    (["trian.epochs=3"], "'trian'"),
    (["data.synthfer.blend=0.1"], "'data.synthfer.blend'"),
])
def test_unknown_key_names_the_key(override, names):
    with pytest.raises(ConfigError, match="unknown config key") as e:
        build_config("smoke", overrides=override)
    assert names in str(e.value) and "\n" not in str(e.value)


def test_wrong_type_names_key_and_value():
    with pytest.raises(ConfigError, match=r"'train.epochs' must be int, got 'ten'"):
        build_config("smoke", overrides=["train.epochs=ten"])


def test_unknown_profile_is_one_line_error():
    with pytest.raises(ConfigError,
                       match=r"unknown profile 'fast'; expected one of \['paper', 'quick', 'real', 'smoke'\]"):
        build_config("fast")


def test_unknown_method_and_stray_method_section():
    with pytest.raises(ConfigError, match="unknown method 'xyz'"):
        build_config("smoke", overrides=["method=xyz"])
    with pytest.raises(ConfigError, match="unknown config key 'ce.beta'"):
        build_config("smoke", overrides=["ce.beta=0.7"])


def test_section_given_a_scalar_and_bad_override_syntax():
    with pytest.raises(ConfigError, match="'train' is a section"):
        build_config("smoke", overrides=["train=3"])
    with pytest.raises(ConfigError, match="not of the form key=value"):
        parse_overrides(["epochs"])


def test_yaml_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        build_config("smoke", tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=f"{bad} must hold a mapping"):
        build_config("smoke", bad)


def test_config_round_trips_through_json():
    import json
    cfg = build_config("quick", overrides=["seed=3"])
    d = json.loads(cfg.to_json())
    assert d["seed"] == 3 and d["profile"] == "quick" and d["ce"] == {}
    assert cfg.run_name == "synthfer-ce-none-s3"
