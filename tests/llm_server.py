"""A real OpenAI-compatible server for tests: ``transformers serve`` on a tiny local model.

    transformers serve MODEL_FOLDER --host 127.0.0.1 --port PORT --device cpu

(from transformers' ``serving`` extra) loads the folder at start-up and answers only for it:
requests name the model exactly as the folder was given on the command line (or leave
``model`` out). It serves ``/v1/chat/completions``, ``/v1/completions`` and ``/v1/models``
with ``usage``; ``/health`` says when it is up. Generation is sequential unless
``--continuous-batching`` is given (then ``stop`` is ignored). The server keeps a stop string
at the end of the text, samples only when the model's generation config says ``do_sample``,
ignores ``response_format`` and answers 422 for a field it does not know.

:func:`start_server` runs it as a child process on a free loopback port, waits (bounded) until
``/health`` answers, and :meth:`LLMServer.stop` ends it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

#: Longest wait for the server to answer /health (start-up is ~10 s on an idle 2-core machine).
START_TIMEOUT_S = 180.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LLMServer:
    """A running ``transformers serve``: its API root, the model name to send, its process."""

    base_url: str  # http://127.0.0.1:PORT/v1
    model: str
    process: subprocess.Popen
    log: Path
    started_s: float  # seconds from launch until /health answered

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def start_server(
    model_dir: str | Path,
    continuous_batching: bool = False,
    timeout_s: float = START_TIMEOUT_S,
    log_dir: str | Path | None = None,
) -> LLMServer:
    """Start ``transformers serve`` on ``model_dir`` and wait until it answers.

    Raises ``RuntimeError`` with the end of its log if it exits or is not up within
    ``timeout_s`` seconds.
    """
    model = str(model_dir)
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="llm-server-"))
    for _ in range(3):  # a free port can be taken between the check and the bind
        port = free_port()
        log = log_dir / f"serve-{port}.log"
        command = [
            sys.executable,
            "-m",
            "transformers.cli.transformers",
            "serve",
            model,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--device",
            "cpu",
        ]
        if continuous_batching:
            command.append("--continuous-batching")
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        start = time.perf_counter()
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        server = LLMServer(f"http://127.0.0.1:{port}/v1", model, process, log, 0.0)
        health = f"http://127.0.0.1:{port}/health"
        while time.perf_counter() - start < timeout_s and process.poll() is None:
            if _healthy(health):
                server.started_s = time.perf_counter() - start
                return server
            time.sleep(0.25)
        server.stop()
        if "address already in use" not in server.log_tail().lower():
            break
    raise RuntimeError(
        f"transformers serve did not come up on port {port} within {timeout_s:g} s "
        f"(exit code {process.poll()}); its log ends:\n{server.log_tail()}"
    )
