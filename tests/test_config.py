import subprocess
import sys

import pytest
import yaml

from sensor import config


def test_defaults_render_and_reload_identically():
    rendered = config.render_defaults()
    cfg = config.from_mapping(yaml.safe_load(rendered))
    for opt in config.OPTIONS:
        assert cfg[opt.key] == opt.default, opt.key


@pytest.mark.parametrize(
    "tree, message",
    [
        ({"tracker": {"nope": 1}}, "tracker.nope: unknown option"),
        ({"bogus": {}}, "bogus: unknown option"),
        ({"tracker": {"udp_inactivity_timeout": "soon"}}, "tracker.udp_inactivity_timeout: expected a number"),
        ({"model": {"dropout": 2}}, "model.dropout: 2.0 is above the maximum"),
        ({"capture": {"promiscuous": "yes"}}, "capture.promiscuous: expected true/false"),
        ({"capture": 3}, "capture: expected a mapping"),
        ({"logging": {"format": "xml"}}, "logging.format: 'xml' is not one of"),
        ({"tracker": {"max_connections": True}}, "tracker.max_connections: expected an integer, got a boolean"),
    ],
)
def test_bad_values_are_rejected_naming_the_key(tree, message):
    with pytest.raises(config.ConfigError) as exc:
        config.from_mapping(tree)
    assert message in str(exc.value)


def test_int_accepted_for_float_and_null_only_where_allowed():
    cfg = config.from_mapping({"tracker": {"udp_inactivity_timeout": 30, "active_timeout": None}})
    assert cfg["tracker.udp_inactivity_timeout"] == 30.0
    with pytest.raises(config.ConfigError, match="tracker.tcp_close_linger: must not be null"):
        config.from_mapping({"tracker": {"tcp_close_linger": None}})


def test_shipped_default_config_matches_option_table(tmp_path):
    from tests.conftest import ROOT

    shipped = (ROOT / "deploy" / "netwarden.yaml").read_text()
    assert shipped == config.render_defaults(), "regenerate: netwarden check-config --print-defaults"


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "sensor.cli", *args], capture_output=True, text=True)


def test_check_config_cli_exit_codes(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("windows:\n  time_window: 5\n")
    assert _cli("check-config", "--config", str(good)).returncode == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("windows:\n  time_window: [\n")
    res = _cli("check-config", "--config", str(bad))
    assert res.returncode == 2
    assert "not valid YAML" in res.stderr and "Traceback" not in res.stderr
    res = _cli("check-config", "--config", str(tmp_path / "missing.yaml"))
    assert res.returncode == 2 and "cannot read config" in res.stderr


def test_list_options_check_their_elements():
    with pytest.raises(config.ConfigError, match=r"model.encoder_layers\[1\]: expected int"):
        config.from_mapping({"model": {"encoder_layers": [32, "wide"]}})
    assert config.from_mapping({"model": {"encoder_layers": [16, 8]}})["model.encoder_layers"] == [16, 8]


def test_readme_config_reference_is_current():
    from tests.conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    start = readme.index("<!-- config-reference:start -->\n") + len("<!-- config-reference:start -->\n")
    end = readme.index("<!-- config-reference:end -->")
    assert readme[start:end] == config.render_markdown(), "regenerate: netwarden check-config --print-reference"
