"""The plan as a person reads it: what ``run.dry_run=true`` prints and the runner logs."""

from __future__ import annotations

import json

from pipeline.contract.schema import describe_schema
from pipeline.contract.secrets import mask_secrets
from pipeline.contract.settings import StageSettings
from pipeline.plan.model import Plan, Step


def _stage_line(stage: StageSettings) -> str:
    data = stage.model_dump(exclude_defaults=False)
    if data["ray_remote_args"]:  # e.g. a runtime_env with env_vars: {HF_TOKEN: ...}
        data["ray_remote_args"] = json.dumps(mask_secrets(data["ray_remote_args"]))
    else:
        data.pop("ray_remote_args")
    return ", ".join(f"{k}={v}" for k, v in data.items())


def _step_lines(plan: Plan, n: int, step: Step) -> list[str]:
    decoding = step.key == "source" and step is not plan.source  # the source's decoder
    lines = [f"  {n}. {step.key}: {'decoding rows of' if decoding else step.kind} '{step.name}'"]
    if not decoding:
        params = mask_secrets(step.params.model_dump(mode="json"))
        lines.append(f"       params: {json.dumps(params, sort_keys=False)}")
    if step.stage is not None and (decoding or step.kind != "source"):
        lines.append(f"       stage:  {_stage_line(plan.layout.settings(step))}")
    schema = plan.schemas.get(step.key)
    later = plan.maps[plan.pending :] if plan.pending is not None else ()
    if any(step is s for s in later):
        first = later[0]
        why = "the stage declares no output_schema" if step is first else f"after {first.key}"
        lines.append(f"       columns: decided at run time ({why})")
    elif schema is not None and (decoding or step.key != "source" or plan.source.stage is None):
        typed = " (typed from its first batch)" if step.key in plan.run_time_typed else ""
        lines.append(f"       columns: {describe_schema(schema)}{typed}")
    return lines


def describe(plan: Plan) -> str:
    """The plan as a person reads it, secrets masked: what ``run.dry_run=true`` prints and
    what the runner logs before it runs exactly this."""
    lines = [f"bulkinfer plan '{plan.run.name}' (config fingerprint {plan.fingerprint})"]
    for n, step in enumerate(plan.steps, 1):
        lines += _step_lines(plan, n, step)
    if plan.empty:
        lines.append("  input: no rows (run.allow_empty: an empty output is published)")
    elif not plan.schemas:
        lines.append("  columns: known once the source is read")
    elif plan.pending_step is not None:
        step = plan.pending_step
        lines.append(
            f"  columns after {step.key}: decided at run time (the stage declares no "
            "output_schema): typed from its first batch and checked against the sink before "
            "any row is written"
        )
    where = plan.ray.address or "local (embedded)"
    c = plan.cluster
    gpus = f", {c.gpus:g} GPU" if c.gpus else ""
    lines.append(f"  ray: {where}; planned for {c.name} with {c.cpus:g} CPU{gpus}")
    if plan.env_vars:
        shown = ", ".join(f"{k}={v}" for k, v in mask_secrets(plan.env_vars).items())
        lines.append(f"  env: {shown} (every task and actor of the job)")
    for note in plan.layout.notes:
        lines.append(f"  resources: {note}")
    return "\n".join(lines)
