import pytest

from hw_asr import datasets, model
from hw_asr.config import ConfigError, apply_overrides, get_path, load_config, resolve


def test_invalid_json_names_file_and_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n  "a": 1,\n  "b": 2\n  "c": 3\n}\n')
    with pytest.raises(ConfigError, match=r"bad\.json:4:3"):
        load_config(path)


def test_missing_file_is_clear(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.json")


def test_unknown_type_lists_known_names():
    with pytest.raises(ConfigError) as err:
        resolve({"type": "DeepSpeech3", "args": {}}, model, "arch")
    msg = str(err.value)
    assert "arch.type" in msg and "DeepSpeech3" in msg
    assert "DeepSpeech2" in msg and "BaselineModel" in msg


def test_bad_argument_names_path_and_accepted_args():
    with pytest.raises(ConfigError) as err:
        resolve({"type": "BaselineModel", "args": {"hiden": 3}}, model, "arch", n_tokens=5)
    assert "arch.args" in str(err.value) and "hidden" in str(err.value)


def test_missing_required_argument_is_reported():
    with pytest.raises(ConfigError, match=r"data\.train\.datasets\.0\.args.*manifest_path"):
        resolve({"type": "ManifestDataset", "args": {}}, datasets, "data.train.datasets.0")


def test_missing_required_key_names_path():
    with pytest.raises(ConfigError, match="'trainer.epochs'"):
        get_path({"trainer": {}}, "trainer.epochs")
    assert get_path({"trainer": {}}, "trainer.epochs", 3) == 3


def test_overrides_parse_json_else_string():
    cfg = {"trainer": {"epochs": 1}, "data": {"train": {"datasets": [{"args": {"limit": 1}}]}}}
    out = apply_overrides(
        cfg,
        [
            "trainer.epochs=5",
            "trainer.amp=bf16",
            'trainer.extra={"a": [1, 2]}',
            "data.train.datasets.0.args.limit=null",
            "name=run 1",
        ],
    )
    assert out["trainer"]["epochs"] == 5
    assert out["trainer"]["amp"] == "bf16"
    assert out["trainer"]["extra"] == {"a": [1, 2]}
    assert out["data"]["train"]["datasets"][0]["args"]["limit"] is None
    assert out["name"] == "run 1"
    assert cfg["trainer"]["epochs"] == 1, "the original config is not modified"


@pytest.mark.parametrize("bad", ["noequals", "a..b=1", "data.train.datasets.x.args=1", "data.train.datasets.9.a=1"])
def test_bad_overrides_are_errors(bad):
    cfg = {"data": {"train": {"datasets": [{}]}}}
    with pytest.raises(ConfigError):
        apply_overrides(cfg, [bad])


def test_block_with_extra_keys_is_rejected():
    with pytest.raises(ConfigError, match="unexpected keys"):
        resolve({"type": "BaselineModel", "arg": {}}, model, "arch")


def test_framework_args_cannot_be_overridden():
    with pytest.raises(ConfigError, match="set by the framework"):
        resolve({"type": "BaselineModel", "args": {"n_tokens": 3}}, model, "arch", n_tokens=5)


def test_base_configs_merge_in_order(tmp_path):
    (tmp_path / "arch").mkdir()
    (tmp_path / "a.json").write_text('{"name": "a", "trainer": {"epochs": 1, "log_step": 5}, "metrics": [1, 2]}')
    (tmp_path / "arch" / "m.json").write_text('{"arch": {"type": "M", "args": {"x": 1}}, "trainer": {"epochs": 2}}')
    (tmp_path / "run.json").write_text(
        '{"base": ["a.json", "arch/m.json"], "name": "run", "metrics": [3], "arch": {"args": {"y": 2}}}'
    )
    cfg = load_config(tmp_path / "run.json")
    assert cfg == {
        "name": "run",
        "trainer": {"epochs": 2, "log_step": 5},
        "metrics": [3],
        "arch": {"type": "M", "args": {"x": 1, "y": 2}},
    }


def test_base_cycle_is_an_error(tmp_path):
    (tmp_path / "a.json").write_text('{"base": "b.json"}')
    (tmp_path / "b.json").write_text('{"base": "a.json"}')
    with pytest.raises(ConfigError, match="includes itself"):
        load_config(tmp_path / "a.json")


def test_base_block_of_another_type_is_replaced(tmp_path):
    (tmp_path / "a.json").write_text('{"arch": {"type": "DeepSpeech2", "args": {"rnn_hidden": 8, "frontend": {}}}}')
    (tmp_path / "b.json").write_text('{"base": "a.json", "arch": {"type": "QuartzNet", "args": {"blocks": 5}}}')
    (tmp_path / "c.json").write_text('{"base": "a.json", "arch": {"args": {"rnn_layers": 2}}}')
    assert load_config(tmp_path / "b.json")["arch"] == {"type": "QuartzNet", "args": {"blocks": 5}}
    assert load_config(tmp_path / "c.json")["arch"]["args"] == {"rnn_hidden": 8, "frontend": {}, "rnn_layers": 2}


def test_null_removes_an_inherited_key(tmp_path):
    (tmp_path / "a.json").write_text('{"data": {"train": {"x": 1}, "val": {"y": 2}}, "keep": 1}')
    (tmp_path / "b.json").write_text('{"base": "a.json", "data": {"val": null, "val_crowd": {"z": 3}}}')
    assert load_config(tmp_path / "b.json") == {"data": {"train": {"x": 1}, "val_crowd": {"z": 3}}, "keep": 1}
