"""Shared fixtures: one local Ray per test module, a CLI runner, tiny models, servers.

Fixtures live here, each once; plain helpers (the kit's environment, the local Ray's start,
job configs) live in ``kit.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ray_session():
    """Local Ray with 2 CPUs, started once per test module (start-up costs seconds)."""
    import ray
    from kit import start_local_ray

    if not ray.is_initialized():
        start_local_ray()
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    from pipeline.execute.ray_session import shutdown_ray

    shutdown_ray()


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 300):
    """Run ``python -m pipeline ARGS`` as a user would; returns the CompletedProcess."""
    full_env = {**os.environ, "HYDRA_FULL_ERROR": "0", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=cwd or ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def cli():
    return run_cli


# -- tiny models, built once per test session (no model hub: GPT2Config / BertConfig + BPE) -----

if str(ROOT) not in sys.path:  # tools/ and benchmarks/ are folders of the clone, not the wheel
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> Path:
    """A 2-layer GPT-2 with a byte-level BPE tokenizer, saved with save_pretrained."""
    from plugins.samples.models import build_gpt2

    return build_gpt2(tmp_path_factory.mktemp("models") / "tiny-gpt2")


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory) -> Path:
    """A 2-layer BERT text classifier (labels NEGATIVE, POSITIVE), saved with save_pretrained."""
    from plugins.samples.models import build_encoder

    return build_encoder(tmp_path_factory.mktemp("models") / "tiny-classifier", "classifier")


@pytest.fixture(scope="session")
def image_classifier_folder(tmp_path_factory) -> Path:
    """A tiny transformers image classifier (labels IMAGE_LABELS), saved with save_pretrained."""
    from plugins.samples.models import build_image_classifier

    return build_image_classifier(tmp_path_factory.mktemp("models") / "image-classifier")


@pytest.fixture(scope="session")
def image_encoder_folder(tmp_path_factory) -> Path:
    """A tiny transformers image encoder (for image_embedding), saved with save_pretrained."""
    from plugins.samples.models import build_image_encoder

    return build_image_encoder(tmp_path_factory.mktemp("models") / "image-encoder")


@pytest.fixture(scope="session")
def torch_resnet_files(tmp_path_factory) -> dict[str, Path]:
    """A tiny ResNet-18 as TorchScript, a state dict and a labels file (paths by the keys
    ``model_file``, ``state_dict``, ``labels``)."""
    from plugins.samples.models import build_torch_resnet

    return build_torch_resnet(tmp_path_factory.mktemp("resnet"))


# -- a PostgreSQL server for the SQL sink's tests (Debian's postgresql package) ----------------


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL server on 127.0.0.1 for the session, or a skip saying why not."""
    pytest.importorskip("psycopg", reason="psycopg (the PostgreSQL driver) is not installed")
    from postgres_server import Unavailable, postgres_server

    server = postgres_server()
    try:
        running = server.__enter__()
    except Unavailable as exc:
        pytest.skip(f"no PostgreSQL server: {exc}")
    yield running
    server.__exit__(None, None, None)


@pytest.fixture(scope="session")
def tiny_gpt2_chat(tmp_path_factory) -> Path:
    """A tiny GPT-2 with a chat template that answers every chat prompt with CHAT_REPLY."""
    from plugins.samples.models import build_gpt2_chat

    return build_gpt2_chat(tmp_path_factory.mktemp("models") / "tiny-gpt2-chat")


@pytest.fixture(scope="session")
def llm_server(tiny_gpt2_chat, tmp_path_factory):
    """``transformers serve`` on the tiny chat model, on a free loopback port (see llm_server)."""
    from llm_server import start_server

    server = start_server(tiny_gpt2_chat, log_dir=tmp_path_factory.mktemp("llm-server"))
    yield server
    server.stop()


@pytest.fixture
def llm_proxy(llm_server):
    """A :class:`fault_proxy.FaultProxy` in front of ``llm_server`` for one test: it injects
    the faults a test adds and records what each row got."""
    from fault_proxy import FaultProxy

    with FaultProxy(llm_server.base_url, lifetime_s=300) as proxy:
        yield proxy


#: Markers by cost, from the fixtures a test uses; a test that has the cost without one of these
#: fixtures carries the marker itself (or its module's ``pytestmark``).
COSTS = {
    "ray_session": "ray",
    "cli": "subprocess",
    "tiny_gpt2": "model",
    "tiny_classifier": "model",
    "tiny_gpt2_chat": "model",
    "image_classifier_folder": "model",
    "image_encoder_folder": "model",
    "torch_resnet_files": "model",
    "llm_server": "server",
    "postgres": "server",
}
#: Every marker of a cost; a test with any of them is also ``slow``.
COSTLY = ("ray", "subprocess", "model", "server", "packaging")


def pytest_collection_modifyitems(items):
    """Mark every test by what it costs (``ray``, ``subprocess``, ``model``, ``server``,
    ``packaging``) and every such test ``slow``: ``python -m pytest -m "not slow"`` runs the
    others alone in about a minute."""
    for item in items:
        for fixture in set(getattr(item, "fixturenames", ())) & COSTS.keys():
            item.add_marker(COSTS[fixture])
        if any(item.get_closest_marker(name) for name in COSTLY):
            item.add_marker(pytest.mark.slow)
