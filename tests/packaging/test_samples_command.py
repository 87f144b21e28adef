"""``bulkinfer-samples``: the data and tiny models the documentation's examples build.

The model builders themselves are the tests' own fixtures (``tests/conftest.py``: tiny GPT-2, the
chat model, the classifier; the image tests' models and files), and every documentation example
runs the command from the wheel (``tests/e2e/test_doc_examples.py``); here: the command's
own contract, the tables, and the models the tests do not build elsewhere.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from plugins.samples.cli import KINDS, main
from plugins.samples.tables import SAMPLE_TEXTS


def test_list_names_every_kind_with_the_extra_it_needs(capsys):
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(KINDS)
    assert any(line.startswith("tiny-gpt2") and "[transformers]" in line for line in lines)
    assert any(line.startswith("texts") and "(core)" in line for line in lines)


@pytest.mark.parametrize("name", ["texts.parquet", "texts.csv", "texts.jsonl"])
def test_texts_are_the_shipped_sentences_in_the_format_of_the_suffix(tmp_path, name, capsys):
    assert main(["texts", str(tmp_path / name)]) == 0
    path = tmp_path / name
    if path.suffix == ".parquet":
        rows = pq.read_table(path).to_pylist()
    elif path.suffix == ".csv":
        rows = pacsv.read_csv(path).to_pylist()
    else:
        rows = [json.loads(line) for line in path.read_text().splitlines()]
    shipped = [json.loads(x)["text"] for x in SAMPLE_TEXTS.read_text().splitlines() if x.strip()]
    assert [r["text"] for r in rows] == shipped
    assert [r["id"] for r in rows] == list(range(len(shipped)))
    assert "wrote 300 rows" in capsys.readouterr().out


def test_bad_arguments_are_one_line_and_exit_2(tmp_path, capsys):
    assert main(["tiny-gtp2", str(tmp_path)]) == 2
    assert main(["texts", str(tmp_path / "x.txt")]) == 2
    assert main(["images"]) == 2
    assert main(["images", str(tmp_path / "i"), "--count", "0"]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 4 and all(e.startswith("bulkinfer-samples: error: ") for e in errors)
    assert "no kind 'tiny-gtp2'" in errors[0] and ".parquet, .csv, .jsonl" in errors[1]


@pytest.mark.subprocess
def test_a_kind_whose_libraries_are_missing_names_its_extra(tmp_path):
    code = (
        "import sys, importlib.abc\n"
        "class Hide(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'transformers':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Hide())\n"
        "from plugins.samples.cli import main\n"
        "sys.exit(main(['tiny-gpt2', sys.argv[1]]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "m")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "bulkinfer-samples: error: tiny-gpt2 needs transformers, which is not installed: "
        "pip install 'bulkinfer[transformers]'"
    )


@pytest.mark.model
def test_tiny_xgboost_is_a_booster_for_its_features(tmp_path):
    import xgboost

    assert main(["tiny-xgboost", str(tmp_path)]) == 0
    features = pq.read_table(tmp_path / "features.parquet").to_pandas()
    labels = pq.read_table(tmp_path / "labels.parquet").column("target").to_numpy()
    booster = xgboost.Booster(model_file=str(tmp_path / "model.json"))
    assert booster.feature_names == list(features.columns) and features.shape == (569, 30)
    predicted = booster.inplace_predict(features) > 0.5
    assert (predicted == labels).mean() > 0.9  # it learned the training data


@pytest.mark.model
def test_tiny_mlp_is_an_exported_program_for_its_features(tmp_path):
    import torch

    assert main(["tiny-mlp", str(tmp_path)]) == 0
    table = pq.read_table(tmp_path / "features.parquet")
    assert table.column_names == ["x", "y", "z"] and table.num_rows == 1000
    module = torch.export.load(str(tmp_path / "model.pt2")).module()
    inputs = torch.stack([torch.from_numpy(table.column(c).to_numpy()) for c in "xyz"], dim=1)
    assert module(inputs).shape == (1000, 1)
