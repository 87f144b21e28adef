"""The hf_pipeline predictor: text generation and classification on tiny models built here."""

from __future__ import annotations

import pyarrow as pa
import pytest
from contracts import (
    PredictorContract,
    continues_its_prompt,
    is_float,
    is_string,
    is_vector,
    run_job,
    shown_rows,
)

from pipeline.app.main import run_with_overrides
from pipeline.contract.errors import ColumnNotFoundError, ConfigError, DataError
from plugins.predictors.hf_pipeline import HfPipeline, HfPipelineParams

PROMPTS = [{"id": i, "text": t} for i, t in enumerate(["Complete this", "for me", "a b c", "x"])]


class TestTextGenerationContract(PredictorContract):
    predictor = "hf_pipeline"
    rows = PROMPTS
    output_types = {"output": is_string}
    stage = {"concurrency": 2, "batch_size": 2}

    @pytest.fixture(scope="class")
    def params(self, tiny_gpt2):
        return {
            "task": "text-generation",
            "model": str(tiny_gpt2),
            "call_kwargs": {"max_length": 12, "num_return_sequences": 1},
        }


class TestTextClassificationContract(PredictorContract):
    predictor = "hf_pipeline"
    rows = PROMPTS
    output_types = {"label": is_string, "score": is_float}

    @pytest.fixture(scope="class")
    def params(self, tiny_classifier):
        return {
            "task": "text-classification",
            "model": str(tiny_classifier),
            "output_column": "label",
            "score_column": "score",
        }


def test_generated_text_continues_the_prompt(tiny_gpt2):
    predictor = HfPipeline(
        HfPipelineParams(model=str(tiny_gpt2), call_kwargs={"max_new_tokens": 4})
    )
    out = predictor(pa.table({"text": ["Complete this", "for me"]}))
    generated = out.column("output").to_pylist()
    assert generated[0].startswith("Complete this") and generated[1].startswith("for me")
    assert all(len(g) > len(p) for g, p in zip(generated, ["Complete this", "for me"], strict=True))


def test_several_return_sequences_give_a_list_of_strings(tiny_gpt2):
    params = HfPipelineParams(
        model=str(tiny_gpt2),
        call_kwargs={"max_new_tokens": 3, "num_return_sequences": 2, "do_sample": True},
    )
    out = HfPipeline(params)(pa.table({"text": ["Complete this"]}))
    assert out.schema.field("output").type == pa.list_(pa.string())
    assert len(out.column("output")[0]) == 2


def test_a_model_batch_goes_to_the_pipeline_as_one_forward_pass(tiny_classifier):
    predictor = HfPipeline(HfPipelineParams(task="text-classification", model=str(tiny_classifier)))
    calls = []
    pipe = predictor.pipe

    def spy(inputs, **kwargs):
        calls.append((list(inputs), kwargs.get("batch_size")))
        return pipe(inputs, **kwargs)

    predictor.pipe = spy
    predictor(pa.table({"text": [f"row {i}" for i in range(10)]}))
    assert calls == [([f"row {i}" for i in range(10)], 10)]


def test_top_k_classification_gives_lists_of_labels_and_scores(tiny_classifier):
    params = HfPipelineParams(
        task="sentiment-analysis", model=str(tiny_classifier), call_kwargs={"top_k": 2}
    )
    out = HfPipeline(params)(pa.table({"text": ["Complete this"]}))
    assert sorted(out.column("output")[0].as_py()) == ["NEGATIVE", "POSITIVE"]
    assert out.schema.field("output_score").type == pa.list_(pa.float32())


def test_pre_tokenized_input_gives_the_same_predictions_as_text(tiny_classifier, tiny_gpt2):
    from transformers import AutoTokenizer

    texts = ["Complete this", "for me", "the lazy dog jumps"]
    for task, model, kwargs in [
        ("text-classification", tiny_classifier, {}),
        ("text-generation", tiny_gpt2, {"max_new_tokens": 5, "do_sample": False}),
        ("feature-extraction", tiny_classifier, {}),
    ]:
        tokenizer = AutoTokenizer.from_pretrained(model)
        tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
        encoded = tokenizer(texts, padding="max_length", max_length=12)
        ids = pa.table(
            {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
        )
        from_text = HfPipeline(HfPipelineParams(task=task, model=str(model), call_kwargs=kwargs))
        from_ids = HfPipeline(
            HfPipelineParams(
                task=task, model=str(model), input_column="input_ids", call_kwargs=kwargs
            )
        )
        expected = from_text(pa.table({"text": texts}))
        got = from_ids(ids)
        if task == "feature-extraction":
            import numpy as np

            np.testing.assert_allclose(
                np.stack(got.column("output").to_numpy(zero_copy_only=False)),
                np.stack(expected.column("output").to_numpy(zero_copy_only=False)),
                rtol=1e-4,
                atol=1e-5,
            )
        else:
            assert got.column("output").to_pylist() == expected.column("output").to_pylist()


def test_feature_extraction_pools_real_tokens_only(tiny_classifier):
    predictor = HfPipeline(HfPipelineParams(task="feature-extraction", model=str(tiny_classifier)))
    alone = predictor(pa.table({"text": ["for me"]})).column("output").to_pylist()[0]
    padded = predictor(pa.table({"text": ["for me", "a much longer sentence than that"]}))
    together = padded.column("output").to_pylist()[0]
    assert is_vector(padded.schema.field("output").type, 32)
    assert together == pytest.approx(alone, abs=1e-5)


@pytest.mark.model  # loads a model: seconds
def test_token_classification_and_fill_mask_give_plain_values(tmp_path):
    from plugins.samples.models import build_encoder

    tagger = build_encoder(tmp_path / "tagger", "token-classifier")
    masked = build_encoder(tmp_path / "mlm", "masked-lm")
    entities = HfPipeline(
        HfPipelineParams(
            task="ner", model=str(tagger), model_kwargs={"aggregation_strategy": "simple"}
        )
    )(pa.table({"text": ["the lazy dog"]}))
    first = entities.column("output")[0].as_py()[0]
    assert set(first) == {"label", "word", "score", "start", "end"}
    assert first["label"] in ("NEGATIVE", "POSITIVE")
    filled = HfPipeline(
        HfPipelineParams(task="fill-mask", model=str(masked), call_kwargs={"top_k": 3})
    )(pa.table({"text": ["the [MASK] dog"]}))
    assert filled.schema.field("output").type == pa.list_(pa.string())
    assert len(filled.column("output_score")[0]) == 3


def test_a_missing_model_folder_is_a_clear_data_error(tmp_path):
    with pytest.raises(DataError) as error:
        HfPipeline(HfPipelineParams(model=str(tmp_path / "no-such-model")))
    assert error.value.key == "predictor.params.model"
    assert "no-such-model" in error.value.message


def test_an_unknown_task_names_the_task_key(tiny_gpt2):
    with pytest.raises(ConfigError) as error:
        HfPipeline(HfPipelineParams(task="text-poetry", model=str(tiny_gpt2)))
    assert error.value.key == "predictor.params.task"


def test_params_refuse_remote_code_and_shadowed_keys():
    with pytest.raises(ValueError, match="trust_remote_code"):
        HfPipelineParams(model="m", model_kwargs={"trust_remote_code": True})
    with pytest.raises(ValueError, match="predictor.stage.batch_size"):
        HfPipelineParams(model="m", call_kwargs={"batch_size": 4})


def test_missing_column_is_refused_before_the_model_loads(ray_session, tmp_path):
    job = {"type": "hf_pipeline", "params": {"model": str(tmp_path / "never-loaded")}}
    with pytest.raises(ColumnNotFoundError) as error:
        run_job(job, [{"id": 1, "prompt": "x"}], tmp_path / "out")
    assert error.value.key == "predictor.params.input_column"


def test_quickstart_experiment_runs_by_config_alone(ray_session, tiny_gpt2, capsys):
    result = run_with_overrides(
        [
            "+experiment=quickstart",
            f"predictor.params.model={tiny_gpt2}",
            "run.progress=false",
            "sink.params.max_chars=2000",  # the row whole, so that it parses back
        ]
    )
    printed = capsys.readouterr().out
    assert result.rows_out == 1
    # limit: 1 shows whichever row Ray Data finishes first; its text continues its own prompt.
    (row,) = shown_rows(printed)
    assert continues_its_prompt(row), row


def test_cpu_preprocessing_experiment_tokenizes_in_its_own_stage(ray_session, tiny_gpt2, capsys):
    result = run_with_overrides(
        [
            "+experiment=cpu_preprocessing",
            f"predictor.params.model={tiny_gpt2}",
            "run.progress=false",
            # the untrained model's text varies in length: keep the row whole whatever it is
            "sink.params.max_chars=100000",
        ]
    )
    printed = capsys.readouterr().out
    assert result.rows_out == 1
    # The shown row is parsed back: an output holding ' prints in double quotes.
    (row,) = shown_rows(printed)
    assert row["input_ids"] and all(isinstance(token, int) for token in row["input_ids"])
    assert continues_its_prompt(row, column="text"), row


def test_a_model_that_fails_to_load_in_an_actor_is_reported_with_its_key(ray_session, tmp_path):
    job = {"type": "hf_pipeline", "params": {"model": str(tmp_path / "missing-model")}}
    with pytest.raises(DataError) as error:
        run_job(job, [{"id": 1, "text": "x"}], tmp_path / "out")
    assert error.value.key == "predictor.params.model"
    assert not (tmp_path / "out").exists()
