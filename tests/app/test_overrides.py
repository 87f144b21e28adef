"""Hydra's refusals of a command-line override, as the one line ``bulkinfer`` prints
(``pipeline.app.overrides.one_line``): what the user wrote, which key, what is allowed."""

from __future__ import annotations

import hydra
import pytest
from hydra.errors import ConfigCompositionException, OverrideParseException

from pipeline.app import configs
from pipeline.app.overrides import one_line, relaxed


def refusal(*overrides: str) -> str:
    """The line for Hydra's refusal of ``overrides``, composed as the command line does."""
    with hydra.initialize_config_module(config_module=configs.CONF_PACKAGE, version_base="1.3"):
        with pytest.raises((ConfigCompositionException, OverrideParseException)) as caught:
            hydra.compose("config", overrides=relaxed(list(overrides)))
    return one_line(caught.value)


@pytest.mark.parametrize(
    ("override", "says"),
    [
        (
            "sink.parms.path=x",
            "sink.parms: unknown key (did you mean 'params'?); allowed keys: type, params, stage",
        ),
        ("predictor.stag.concurrency=2", "predictor.stag: unknown key (did you mean 'stage'?)"),
        ("sinc.params.path=x", "sinc: unknown key (did you mean 'sink'?); allowed keys: source,"),
    ],
)
def test_a_misspelt_key_names_its_wrong_part_and_the_closest_key(override, says):
    assert refusal(override).startswith(says)


def test_a_config_group_missing_from_the_defaults_keeps_hydras_advice_to_add_it():
    line = refusal("experiment=quickstart")
    assert "No match in the defaults list" in line and "+experiment=quickstart" in line


def test_a_key_of_hydras_own_keeps_hydras_message():
    assert refusal("hydra.nothing_here=1").startswith("Could not override 'hydra.nothing_here'")


def test_an_override_that_does_not_parse_is_one_line_as_the_user_wrote_it():
    line = refusal("run.tag='unclosed")
    assert "\n" not in line
    assert line.startswith("""cannot parse the override "run.tag='unclosed": """)
    assert "++" not in line  # bulkinfer's own ++ for run.* keys is not shown
