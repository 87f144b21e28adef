"""The torch_module predictor: a registered nn.Module + state dict, TorchScript, torch.export."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from contracts import PredictorContract, run_job

from pipeline.contract.errors import ConfigError, DataError
from plugins.predictors.torch_module import TorchModule, TorchModuleParams
from plugins.predictors.torch_modules import MLP

ROWS = [{"id": i, "x": float(i), "y": float(i) / 10, "z": -float(i)} for i in range(12)]
FEATURES = ["x", "y", "z"]


@pytest.fixture(scope="module")
def mlp_files(tmp_path_factory):
    """An MLP (3 -> 8 -> 2), its state dict, a TorchScript and a torch.export copy of it."""
    torch.manual_seed(0)
    model = MLP(3, 2, hidden=[8]).eval()
    folder = tmp_path_factory.mktemp("torch")
    torch.save(model.state_dict(), folder / "mlp.pt")
    torch.jit.script(model).save(str(folder / "mlp.ts"))
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, (torch.ones(2, 3),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(folder / "mlp.pt2"))
    return model, folder


def _expected(model) -> np.ndarray:
    x = torch.tensor([[r[c] for c in FEATURES] for r in ROWS], dtype=torch.float32)
    with torch.inference_mode():
        return model(x).numpy()


class TestRegisteredModuleContract(PredictorContract):
    predictor = "torch_module"
    rows = ROWS
    input_column = "y"
    output_types = {"logits": lambda kind: pa.types.is_fixed_size_list(kind)}
    stage = {"concurrency": 1, "batch_size": 5}

    @pytest.fixture(scope="class")
    def params(self, mlp_files):
        _, folder = mlp_files
        return {
            "module": "mlp",
            "module_kwargs": {"in_features": 3, "out_features": 2, "hidden": [8]},
            "state_dict": str(folder / "mlp.pt"),
            "input_columns": FEATURES,
            "output_columns": ["logits"],
        }

    def test_outputs_equal_the_module_run_by_hand(self, output, mlp_files):
        model, _ = mlp_files
        got = dict(
            zip(output.column("id").to_pylist(), output.column("logits").to_pylist(), strict=True)
        )
        np.testing.assert_allclose([got[r["id"]] for r in ROWS], _expected(model), rtol=1e-5)


@pytest.mark.parametrize("file", ["mlp.ts", "mlp.pt2"])
def test_torchscript_and_export_files_give_the_same_outputs(mlp_files, file):
    model, folder = mlp_files
    predictor = TorchModule(
        TorchModuleParams(
            model_file=str(folder / file), input_columns=FEATURES, output_columns=["a", "b"]
        )
    )
    out = predictor(pa.Table.from_pylist(ROWS))
    assert out.schema.field("a").type == pa.float32()  # [rows, 2] split over two columns
    got = np.stack([out.column("a").to_numpy(), out.column("b").to_numpy()], axis=1)
    np.testing.assert_allclose(got, _expected(model), rtol=1e-5, atol=1e-6)


def test_bfloat16_runs_and_stores_float32(mlp_files):
    model, folder = mlp_files
    params = TorchModuleParams(
        model_file=str(folder / "mlp.ts"), input_columns=FEATURES, dtype="bfloat16"
    )
    out = TorchModule(params)(pa.Table.from_pylist(ROWS))
    assert out.schema.field("predictions").type == pa.list_(pa.float32(), 2)
    got = np.stack(out.column("predictions").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(got, _expected(model), atol=0.1)


def test_args_mode_passes_token_ids_as_int64_tensors(tmp_path):
    class Pool(torch.nn.Module):
        def forward(self, ids, mask):
            assert ids.dtype == torch.int64 and mask.dtype == torch.int64
            return (ids * mask).sum(1).float(), mask.sum(1)

    torch.jit.script(Pool()).save(str(tmp_path / "pool.ts"))
    params = TorchModuleParams(
        model_file=str(tmp_path / "pool.ts"),
        input_columns=["input_ids", "attention_mask"],
        input_mode="args",
        output_columns=["total", "length"],
    )
    table = pa.table(
        {"input_ids": [[5, 6, 0], [7, 0, 0]], "attention_mask": [[1, 1, 0], [1, 0, 0]]}
    )
    out = TorchModule(params)(table)
    assert out.column("total").to_pylist() == [11.0, 7.0]
    assert out.column("length").to_pylist() == [2, 1]


def test_a_state_dict_that_needs_unpickling_code_is_refused(tmp_path):
    torch.save({"layers.0.weight": torch.ones(2, 3), "evil": object()}, tmp_path / "bad.pt")
    params = TorchModuleParams(
        module="mlp",
        module_kwargs={"in_features": 3, "out_features": 2},
        state_dict=str(tmp_path / "bad.pt"),
        input_columns=FEATURES,
    )
    with pytest.raises(DataError) as error:
        TorchModule(params)
    assert error.value.key == "predictor.params.state_dict"


def test_an_unregistered_module_name_is_a_config_error_with_suggestions(ray_session, tmp_path):
    job = {
        "type": "torch_module",
        "params": {"module": "mpl", "state_dict": "w.pt", "input_columns": ["x"]},
    }
    with pytest.raises(ConfigError) as error:
        run_job(job, ROWS, tmp_path / "out")
    assert error.value.key == "predictor.params.module"
    assert "Did you mean 'mlp'?" in error.value.message


def test_params_need_exactly_one_model_source():
    with pytest.raises(ValueError, match="exactly one"):
        TorchModuleParams(input_columns=["x"])
    with pytest.raises(ValueError, match="state_dict"):
        TorchModuleParams(module="mlp", input_columns=["x"])


def test_ragged_list_columns_are_a_data_error(mlp_files):
    _, folder = mlp_files
    predictor = TorchModule(
        TorchModuleParams(model_file=str(folder / "mlp.ts"), input_columns=["v"])
    )
    with pytest.raises(DataError, match="different lengths"):
        predictor(pa.table({"v": [[1.0, 2.0, 3.0], [1.0]]}))
