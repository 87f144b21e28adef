"""Flatten transformers pipeline results into Arrow columns; run pre-tokenized input directly.

Column types by task (documented in the README):

- generation tasks (text-generation, text2text-generation, summarization, translation...): the
  generated text as a string; a list of strings when ``num_return_sequences`` > 1.
- text-classification: the label (string) and its score (float32); lists of both with ``top_k``.
- zero-shot-classification: the best label and its score.
- fill-mask: lists of the candidate tokens and their scores (``top_k`` candidates, default 5).
- token-classification: a list of ``{label, word, score, start, end}`` per row.
- feature-extraction: a float32 vector per row (mean of the real tokens' vectors, or the first
  token's), or a list of token vectors with ``pooling: none``.
- any other task: the pipeline's output for the row as a JSON string.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pipeline.contract.errors import DataError

Pooling = Literal["mean", "first", "none"]

TASK_ALIASES = {"sentiment-analysis": "text-classification", "ner": "token-classification"}
GENERATION_TASKS = {"text-generation", "text2text-generation", "summarization", "image-to-text"}
SCORED_TASKS = {"text-classification", "zero-shot-classification", "fill-mask"}
TOKEN_INPUT_TASKS = ("text-generation", "text-classification", "feature-extraction")
#: Keyword arguments of the text-generation pipeline that generate() does not take.
_PIPELINE_ONLY = {
    "return_full_text",
    "return_tensors",
    "return_text",
    "return_type",
    "clean_up_tokenization_spaces",
    "prefix",
    "handle_long_generation",
    "stop_sequence",
    "truncation",
    "skip_special_tokens",
    "tokenizer_encode_kwargs",
}


def _is_generation(task: str) -> bool:
    return task in GENERATION_TASKS or task.startswith("translation")


def _text_of(item: dict[str, Any]) -> str:
    for key, value in item.items():
        if key.endswith("_text"):
            return value
    raise DataError(f"pipeline output has no *_text field: {sorted(item)}")


def _plain(value: Any) -> Any:
    """numpy scalars and arrays inside pipeline output -> Python values (for JSON)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _entity_type():
    import pyarrow as pa

    return pa.struct(
        [
            ("label", pa.string()),
            ("word", pa.string()),
            ("score", pa.float32()),
            ("start", pa.int64()),
            ("end", pa.int64()),
        ]
    )


def output_types(params: Any) -> dict[str, Any]:
    """The Arrow type of each column the task writes (the table in the module docstring)."""
    import pyarrow as pa

    task, out, scores = params.task, params.output_column, params.scores
    if _is_generation(task):
        many = int(params.call_kwargs.get("num_return_sequences", 1) or 1) > 1
        return {out: pa.list_(pa.string()) if many else pa.string()}
    if task == "text-classification":
        if params.call_kwargs.get("top_k") is not None:
            return {out: pa.list_(pa.string()), scores: pa.list_(pa.float32())}
        return {out: pa.string(), scores: pa.float32()}
    if task == "zero-shot-classification":
        return {out: pa.string(), scores: pa.float32()}
    if task == "fill-mask":
        return {out: pa.list_(pa.string()), scores: pa.list_(pa.float32())}
    if task == "token-classification":
        return {out: pa.list_(_entity_type())}
    if task == "feature-extraction":
        if params.pooling == "none":
            return {out: pa.list_(pa.list_(pa.float32()))}
        return {out: pa.list_(pa.float32())}
    return {out: pa.string()}


def convert(params: Any, results: list[Any]) -> dict[str, Any]:
    """Pipeline results (one per input row) -> ``{column: pyarrow array}``."""
    import pyarrow as pa

    task, out, scores = params.task, params.output_column, params.scores
    if _is_generation(task):
        many = int(params.call_kwargs.get("num_return_sequences", 1) or 1) > 1
        rows = [r if isinstance(r, list) else [r] for r in results]
        if many:
            return {out: pa.array([[_text_of(s) for s in r] for r in rows], pa.list_(pa.string()))}
        return {out: pa.array([_text_of(r[0]) for r in rows], pa.string())}
    if task == "text-classification":
        if params.call_kwargs.get("top_k") is not None:
            return {
                out: pa.array([[c["label"] for c in r] for r in results], pa.list_(pa.string())),
                scores: pa.array(
                    [[c["score"] for c in r] for r in results], pa.list_(pa.float32())
                ),
            }
        results = [r[0] if isinstance(r, list) else r for r in results]
        return {
            out: pa.array([r["label"] for r in results], pa.string()),
            scores: pa.array([r["score"] for r in results], pa.float32()),
        }
    if task == "zero-shot-classification":
        return {
            out: pa.array([r["labels"][0] for r in results], pa.string()),
            scores: pa.array([r["scores"][0] for r in results], pa.float32()),
        }
    if task == "fill-mask":
        rows = [r if isinstance(r, list) else [r] for r in results]
        if rows and rows[0] and isinstance(rows[0][0], list):
            raise DataError(
                "fill-mask rows must hold exactly one mask token", key="predictor.params"
            )
        return {
            out: pa.array([[c["token_str"] for c in r] for r in rows], pa.list_(pa.string())),
            scores: pa.array([[c["score"] for c in r] for r in rows], pa.list_(pa.float32())),
        }
    if task == "token-classification":
        entity = _entity_type()
        rows = [
            [
                {
                    "label": e.get("entity_group", e.get("entity")),
                    "word": e.get("word"),
                    "score": float(e["score"]),
                    "start": e.get("start"),
                    "end": e.get("end"),
                }
                for e in r
            ]
            for r in results
        ]
        return {out: pa.array(rows, pa.list_(entity))}
    return {out: pa.array([json.dumps(_plain(r)) for r in results], pa.string())}


def features(pipe: Any, params: Any, ids: Any, mask: Any) -> dict[str, Any]:
    """feature-extraction from token ids: pooled over real tokens only (padding excluded)."""
    import numpy as np
    import pyarrow as pa
    import torch

    model = pipe.model
    pooled: list[Any] = []
    with torch.inference_mode():
        part = slice(None)  # one forward pass: the core cut the model batch
        t_ids = torch.as_tensor(ids[part], dtype=torch.long, device=model.device)
        t_mask = torch.as_tensor(mask[part], dtype=torch.long, device=model.device)
        hidden = model(input_ids=t_ids, attention_mask=t_mask)[0].float()
        if params.pooling == "mean":
            weights = t_mask.unsqueeze(-1).to(hidden.dtype)
            vectors = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
            pooled.extend(vectors.cpu().numpy())
        elif params.pooling == "first":
            pooled.extend(hidden[:, 0].cpu().numpy())
        else:
            for row, row_mask in zip(hidden.cpu().numpy(), mask[part], strict=True):
                pooled.append(row[np.asarray(row_mask) == 1].tolist())
    if params.pooling == "none":
        return {params.output_column: pa.array(pooled, pa.list_(pa.list_(pa.float32())))}
    matrix = np.asarray(pooled, dtype=np.float32)
    flat = pa.array(matrix.reshape(-1), pa.float32())
    return {params.output_column: pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1])}


def _classify(pipe: Any, params: Any, ids: Any, mask: Any) -> dict[str, Any]:
    import pyarrow as pa
    import torch

    model = pipe.model
    config = model.config
    top_k = params.call_kwargs.get("top_k")
    labels: list[Any] = []
    scores: list[Any] = []
    with torch.inference_mode():
        part = slice(None)  # one forward pass: the core cut the model batch
        logits = model(
            input_ids=torch.as_tensor(ids[part], dtype=torch.long, device=model.device),
            attention_mask=torch.as_tensor(mask[part], dtype=torch.long, device=model.device),
        ).logits.float()
        if config.num_labels == 1 or config.problem_type == "multi_label_classification":
            probs = logits.sigmoid()
        else:
            probs = logits.softmax(-1)
        k = probs.shape[-1] if top_k is None else min(int(top_k), probs.shape[-1])
        values, index = probs.topk(k if top_k is not None else 1, dim=-1)
        for row_values, row_index in zip(values.tolist(), index.tolist(), strict=True):
            names = [config.id2label[i] for i in row_index]
            labels.append(names if top_k is not None else names[0])
            scores.append(row_values if top_k is not None else row_values[0])
    out, score = params.output_column, params.scores
    if top_k is not None:
        return {
            out: pa.array(labels, pa.list_(pa.string())),
            score: pa.array(scores, pa.list_(pa.float32())),
        }
    return {out: pa.array(labels, pa.string()), score: pa.array(scores, pa.float32())}


def _left_packed(ids: Any, mask: Any, pad_id: int):
    """Re-pad token rows on the left (decoder-only models continue from the right end)."""
    import numpy as np

    rows = [np.asarray(r)[np.asarray(m) == 1] for r, m in zip(ids, mask, strict=True)]
    width = max(len(r) for r in rows)
    packed = np.full((len(rows), width), pad_id, dtype=np.int64)
    packed_mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        if len(row):
            packed[i, width - len(row) :] = row
            packed_mask[i, width - len(row) :] = 1
    return packed, packed_mask


def _generate(pipe: Any, params: Any, ids: Any, mask: Any) -> dict[str, Any]:
    import pyarrow as pa
    import torch

    model, tokenizer = pipe.model, pipe.tokenizer
    kwargs = {k: v for k, v in params.call_kwargs.items() if k not in _PIPELINE_ONLY}
    # The pipeline's own defaults (sampling, max_new_tokens) as its text path applies them.
    prepare = getattr(pipe, "_prepare_generate_kwargs", None)
    if prepare is not None:
        kwargs = prepare(kwargs)
    full_text = params.call_kwargs.get("return_full_text", True)
    n = int(kwargs.get("num_return_sequences", 1) or 1)
    texts: list[Any] = []
    with torch.inference_mode():
        part = slice(None)  # one forward pass: the core cut the model batch
        packed, packed_mask = _left_packed(ids[part], mask[part], tokenizer.pad_token_id)
        generated = model.generate(
            input_ids=torch.as_tensor(packed, device=model.device),
            attention_mask=torch.as_tensor(packed_mask, device=model.device),
            **kwargs,
        )
        if not full_text:
            generated = generated[:, packed.shape[1] :]
        decoded = tokenizer.batch_decode(generated, skip_special_tokens=True)
        if n > 1:
            texts.extend(decoded[i : i + n] for i in range(0, len(decoded), n))
        else:
            texts.extend(decoded)
    kind = pa.list_(pa.string()) if n > 1 else pa.string()
    return {params.output_column: pa.array(texts, kind)}


def from_token_ids(pipe: Any, params: Any, table: Any) -> dict[str, Any]:
    """Run the pipeline's model on pre-tokenized rows (a tokenize stage ran before)."""
    from plugins.batches import token_ids

    key = "predictor.params.input_column"
    if params.task not in TOKEN_INPUT_TASKS:
        raise DataError(
            f"column {params.input_column!r} holds token ids, but task {params.task!r} takes "
            f"text; pre-tokenized input works with {', '.join(TOKEN_INPUT_TASKS)}",
            key=key,
        )
    ids, mask = token_ids(table, params.input_column, params.attention_mask_column, key)
    if params.task == "feature-extraction":
        return features(pipe, params, ids, mask)
    if params.task == "text-classification":
        return _classify(pipe, params, ids, mask)
    return _generate(pipe, params, ids, mask)
