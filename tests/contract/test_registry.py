"""Plugin discovery: names from entry-point metadata, classes only when selected."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline.contract.errors import PluginNotFoundError
from pipeline.contract.sink import Sink
from pipeline.contract.source import Source
from pipeline.contract.stage import Predictor
from pipeline.plan import registry

BUILT_INS = {
    "source": {"parquet", "csv", "json", "text", "items"},
    "sink": {"parquet", "csv", "json", "show"},
    "predictor": {"sentence_embedding"},
}


@pytest.mark.parametrize("kind", sorted(BUILT_INS))
def test_built_ins_are_registered_through_entry_points(kind):
    infos = registry.available(kind)
    assert BUILT_INS[kind] <= set(infos)
    assert all(
        info.distribution == "bulkinfer" for name, info in infos.items() if name in BUILT_INS[kind]
    )


def test_listing_plugins_imports_no_plugin_module():
    code = (
        "import sys; from pipeline.plan import registry\n"
        "for kind in registry.KINDS: registry.available(kind)\n"
        "loaded = [m for m in sys.modules if m.startswith('plugins') or m in ('torch', 'ray')]\n"
        "print(loaded)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_loading_returns_the_class_of_the_right_kind():
    assert issubclass(registry.load("source", "parquet"), Source)
    assert issubclass(registry.load("sink", "show"), Sink)
    assert issubclass(registry.load("predictor", "sentence_embedding"), Predictor)


def test_selecting_the_embedding_model_does_not_import_torch_until_a_worker_loads_it():
    code = (
        "import sys; from pipeline.plan import registry\n"
        "registry.load('predictor', 'sentence_embedding')\n"
        "print('torch' in sys.modules, 'sentence_transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_an_unknown_name_suggests_the_closest_and_lists_the_rest():
    with pytest.raises(PluginNotFoundError) as err:
        registry.load("predictor", "sentence_embeding", key="predictor.type")
    message = str(err.value)
    assert message.startswith("predictor.type: ")
    assert "Did you mean 'sentence_embedding'?" in message
    assert "Available:" in message and "sentence_embedding" in message


def test_a_python_path_is_refused_with_how_to_register_a_plugin():
    with pytest.raises(PluginNotFoundError, match="entry-point group 'bulkinfer.predictors'"):
        registry.load("predictor", "my_team.models:Model")


def test_an_unknown_kind_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown plugin kind"):
        registry.available("model")
