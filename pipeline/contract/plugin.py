"""What every plugin kind shares: its ``Params`` base, the class attributes every plugin
has, the contract's version, and the I/O settings sources and sinks are built with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class PluginParams(BaseModel):
    """Base for plugin ``Params``: unknown keys are errors, defaults are validated."""

    model_config = ConfigDict(
        extra="forbid",
        validate_default=True,
        protected_namespaces=(),
        # A field may take a name BaseModel reserves (``schema``) through an alias; dumps
        # (the dry-run plan, the fingerprint) use the name users write.
        serialize_by_alias=True,
    )


#: The version of the plugin contract this bulkinfer provides, ``"MAJOR.MINOR"``. 1.0 is
#: bulkinfer 0.1's layout (``pipeline.interfaces``, ``pipeline.errors``, ...); 1.1 is bulkinfer
#: 0.2's ``pipeline.contract`` package; 1.2 adds ``Plugin.extras`` and ``MapStage.env_vars``;
#: 1.3 adds ``MapStage.calls_per_actor`` and ``MapStage.keeps_journal`` (a stage's journal);
#: 1.4 adds ``MapStage.worker_memory`` (the planner's choice of CPU actors x threads); 1.5 adds
#: :mod:`pipeline.contract.halts` (test-only halt points a sink's target may mark).
#: A minor version adds to the contract and keeps every plugin of the same major version
#: working; a new major version may remove or change hooks, and a plugin built for another
#: major version is refused when it loads. docs/plugins.md lists the changes ("Changes to the
#: plugin contract").
PLUGIN_API = "1.5"


class Plugin:
    """Common to every plugin: the params model and a one-line summary (the docstring)."""

    Params: ClassVar[type[PluginParams]] = PluginParams
    #: Distributions (pip names) whose versions decide the plugin's results, e.g. the model
    #: library; a run records their versions in its metrics.
    libraries: ClassVar[tuple[str, ...]] = ()
    #: The contract version (:data:`PLUGIN_API`) the plugin was built for, ``"MAJOR.MINOR"``,
    #: e.g. ``"1.1"``. None (the default): not said, taken as 1.0, the oldest contract, which
    #: this bulkinfer supports. A plugin of another major version is refused when it loads, with
    #: one line naming its package.
    plugin_api: ClassVar[str | None] = None
    #: Extras of the plugin's own distribution that it needs, each with the top-level modules
    #: it brings, e.g. ``{"embeddings": ("sentence_transformers", "torch")}``. Before the plugin
    #: runs (a job, a dry run) or is listed (``bulkinfer-plugins list``) the core looks for each
    #: module with ``importlib.util.find_spec``, importing none, and refuses a missing one in
    #: one line with the pip command (``pip install 'bulkinfer[embeddings]'``). The plugin's own
    #: module must import without them (import them where they are used). Optional: none.
    extras: ClassVar[dict[str, tuple[str, ...]]] = {}


def api_version(text: str) -> tuple[int, int]:
    """``"1.1"`` -> ``(1, 1)``; ``"1"`` is ``(1, 0)``. Raises ``ValueError`` for anything else."""
    parts = str(text).strip().split(".")
    if not 1 <= len(parts) <= 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"{text!r} is not a contract version (MAJOR.MINOR, e.g. {PLUGIN_API!r})")
    return int(parts[0]), int(parts[1]) if len(parts) == 2 else 0


@dataclass(frozen=True)
class IOContext:
    """What the planner decided for read and write tasks; pass it on to Ray's I/O calls."""

    #: Ray remote args for read/write tasks (the planner's CPU share), e.g. ``{"num_cpus": 0.5}``.
    ray_remote_args: dict[str, Any] = field(default_factory=dict)
    #: Blocks the source should produce so every worker of every stage gets work (None: Ray's).
    num_blocks: int | None = None
    #: The job's config fingerprint (what determines the output), for sinks that record it.
    fingerprint: str | None = None
    #: Target size of a work unit, for sources that split their input (``run.unit_rows``).
    unit_rows: int | None = None
    #: Target bytes of input files per work unit (``run.unit_bytes``).
    unit_bytes: int | None = None


class _IOPlugin(Plugin):
    def __init__(self, io: IOContext | None = None) -> None:
        self.io = io or IOContext()
