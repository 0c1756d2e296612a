"""Bad input fails before any compute, naming the valid choices."""

import pytest

import lossbook
from lossbook import book, cli, presets
from lossbook.presets import ConfigError


def test_resolve_applies_and_checks_overrides():
    cfg = presets.resolve("01_compsum", "smoke", {"epochs": 3, "lr": 1, "taus": [0, 1]})
    assert cfg.epochs == 3 and cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.taus == (0.0, 1.0)


@pytest.mark.parametrize("chapter, preset, overrides, message", [
    ("99_nope", "book", {}, "valid chapters: 01_compsum"),
    ("01_compsum", "huge", {}, "valid presets: smoke, book, full"),
    ("01_compsum", "book", {"epochz": 3}, "valid parameters: taus, tasks"),
    ("01_compsum", "book", {"epochs": "3"}, "epochs must be int"),
    ("01_compsum", "book", {"epochs": 2.5}, "epochs must be int"),
    ("01_compsum", "book", {"epochs": True}, "must be int, got bool"),
    ("01_compsum", "book", {"taus": 1.0}, "taus must be a list of float"),
    ("01_compsum", "book", {"taus": [1.0, "x"]}, r"taus\[1\] must be float"),
])
def test_bad_config_is_rejected(chapter, preset, overrides, message):
    with pytest.raises(ConfigError, match=message):
        presets.resolve(chapter, preset, overrides)


def test_start_validates_before_compute(monkeypatch):
    import lossbook.session as session

    def no_compute(*args, **kw):
        raise AssertionError("computed before validating")

    monkeypatch.setattr(session, "seed_everything", no_compute)
    with pytest.raises(ConfigError, match="valid presets"):
        lossbook.start("01_compsum", preset="paper")
    with pytest.raises(ConfigError, match="seed must be an int"):
        lossbook.start("01_compsum", preset="smoke", seed="3")
    with pytest.raises(ConfigError, match="valid devices: auto, cpu, cuda"):
        lossbook.start("01_compsum", preset="smoke", device="tpu")
    with pytest.raises(ConfigError, match="overrides must be a JSON object"):
        lossbook.start("01_compsum", preset="smoke", overrides="{epochs: 3")


def test_start_accepts_papermill_string_overrides():
    ch = lossbook.start("01_compsum", preset="smoke", overrides='{"epochs": 1}')
    assert ch.cfg.epochs == 1 and ch.device == "cpu"


def test_cli_parameter_routing_and_errors(capsys):
    assert book.split_parameters("01_compsum", "smoke", {"seed": 3, "epochs": 2}) == {
        "preset": "smoke", "seed": 3, "overrides": {"epochs": 2}}
    with pytest.raises(ConfigError, match="notebook parameters: preset, seed, device"):
        book.split_parameters("01_compsum", "smoke", {"sead": 3})
    with pytest.raises(ConfigError, match="seed must be an int"):
        book.split_parameters("01_compsum", "smoke", {"seed": 1.5})
    assert cli.main(["run", "01_compsum", "--preset", "paper"]) == 2
    assert "valid presets: smoke, book, full" in capsys.readouterr().err
    assert cli.main(["run", "01_compsum", "--preset", "smoke", "-p", "lr=fast"]) == 2
    assert "lr must be float" in capsys.readouterr().err
    assert cli.main(["run", "nope", "--preset", "smoke"]) == 2
    assert "valid chapters" in capsys.readouterr().err


def test_cli_values_are_literals():
    assert presets.parse_cli_value("3") == 3
    assert presets.parse_cli_value("[0, 1.5]") == [0, 1.5]
    assert presets.parse_cli_value("true") is True
    assert presets.parse_cli_value("cuda") == "cuda"


def test_every_preset_of_every_chapter_is_valid():
    for chapter in presets.CHAPTERS:
        module = presets.chapter_module(chapter)
        assert {"smoke", "book", "full"} <= set(module.PRESETS)
        for name in module.PRESETS:
            presets.resolve(chapter, name)
        assert presets.describe(chapter).startswith("parameter")


def test_every_constraint_names_a_config_field():
    for chapter in presets.CHAPTERS:
        module = presets.chapter_module(chapter)
        assert module.CONSTRAINTS, f"{chapter} declares no CONSTRAINTS"
        assert set(module.CONSTRAINTS) <= set(presets.field_types(module.Config)), chapter


def test_default_rules_follow_field_names():
    assert presets.default_rule("deep_steps", 3) is presets.positive
    assert presets.default_rule("hparam_draws", 0)(0) is None  # counts may be 0 unless named
    assert presets.default_rule("weight_decay", -1.0)(-1.0) == "must be ≥ 0"
