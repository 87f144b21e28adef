"""An OpenAI-compatible server on loopback that answers after a prompt-dependent wait, using no
CPU while it waits: a remote GPU server as a client sees it (tests and benchmarks).

Each request to ``/v1/chat/completions`` or ``/v1/completions`` is answered after
``delay(prompt)`` seconds: log-normal (median ``median_s``, shape ``sigma``), cut to
``[min_s, max_s]``, drawn from a generator seeded by the prompt's SHA-256, so a prompt waits as
long in every run and for every client, and the ideal time of a job is known
(:func:`ideal_seconds`). The reply's content is ``"answer to <first 40 characters>"``, with
``finish_reason: "stop"`` and token ``usage`` (words, roughly). ``GET /v1/models`` lists the
model (the client's preflight); ``GET /stats`` returns ``{"requests", "in_flight",
"peak_in_flight", "by_prompt"}`` (``by_prompt``: answers per prompt), and ``POST /reset``
clears them.

    python tests/latency_server.py --port 8765 --median-s 0.4      # run it on its own

Plain asyncio streams and HTTP/1.1 with keep-alive; bodies up to 1 MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

MODEL = "latency-model"
MAX_BODY = 1 << 20


@dataclass(frozen=True)
class Latency:
    """Log-normal reply times: ``median_s`` and ``sigma`` of the log, cut to [min_s, max_s]."""

    median_s: float = 0.4
    sigma: float = 0.9
    min_s: float = 0.1
    max_s: float = 7.0

    def delay(self, prompt: str) -> float:
        seed = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big")
        value = random.Random(seed).lognormvariate(math.log(self.median_s), self.sigma)
        return min(self.max_s, max(self.min_s, value))


def ideal_seconds(prompts: list[str], latency: Latency, slots: int) -> float:
    """The shortest time ``slots`` requests in flight can answer ``prompts`` in: the longer of
    the sum of the waits over the slots and the longest single wait."""
    waits = [latency.delay(p) for p in prompts]
    return max(sum(waits) / slots, max(waits, default=0.0))


def prompt_of(body: dict) -> str:
    if "messages" in body:
        return "\n".join(str(m.get("content") or "") for m in body["messages"])
    return str(body.get("prompt", ""))


@dataclass
class Stats:
    requests: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    by_prompt: Counter = field(default_factory=Counter)


class LatencyServer:
    """The server on a thread of its own; ``with LatencyServer(...) as server:`` starts it and
    stops it; ``server.base_url`` is ``http://127.0.0.1:<port>/v1``."""

    def __init__(self, latency: Latency | None = None, port: int = 0) -> None:
        self.latency = latency or Latency()
        self.port = port
        self.stats = Stats()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="latency-server", daemon=True)
        self._server: asyncio.AbstractServer | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> LatencyServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the latency server did not start")

    def stop(self) -> None:
        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    async def _shutdown(self) -> None:
        """Stop listening and end every open connection while the loop still runs."""
        if self._server is not None:
            self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def snapshot(self) -> dict:
        with self._lock:
            s = self.stats
            return {
                "requests": s.requests,
                "in_flight": s.in_flight,
                "peak_in_flight": s.peak_in_flight,
                "by_prompt": dict(s.by_prompt),
            }

    def reset(self) -> None:
        with self._lock:
            self.stats = Stats()

    # -- the server ------------------------------------------------------------------------

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._connection, "127.0.0.1", self.port, backlog=1024)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                length = int(headers.get("content-length", "0"))
                if length > MAX_BODY:
                    await self._send(writer, 413, {"error": {"message": "body too large"}})
                    return
                body = await reader.readexactly(length) if length else b""
                status, payload = await self._answer(method, path.split("?")[0], body)
                await self._send(writer, status, payload)
                if headers.get("connection", "").lower() == "close":
                    return
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            return
        finally:
            writer.close()

    async def _send(self, writer: asyncio.StreamWriter, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 413: "Too Large"}[status]
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        await writer.drain()

    async def _answer(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
        if method == "GET" and path == "/v1/models":
            return 200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]}
        if method == "GET" and path == "/stats":
            return 200, self.snapshot()
        if method == "POST" and path == "/reset":
            self.reset()
            return 200, {}
        if method != "POST" or path not in ("/v1/chat/completions", "/v1/completions"):
            return 404, {"error": {"message": f"no route {method} {path}"}}
        try:
            request = json.loads(body)
            prompt = prompt_of(request)
        except (ValueError, AttributeError):
            return 400, {"error": {"message": "the body is not a JSON request"}}
        with self._lock:
            self.stats.requests += 1
            self.stats.in_flight += 1
            self.stats.peak_in_flight = max(self.stats.peak_in_flight, self.stats.in_flight)
        try:
            await asyncio.sleep(self.latency.delay(prompt))
        finally:
            with self._lock:
                self.stats.in_flight -= 1
                self.stats.by_prompt[prompt] += 1
        text = f"answer to {prompt[:40]}"
        usage = {
            "prompt_tokens": len(prompt.split()),
            "completion_tokens": len(text.split()),
            "total_tokens": len(prompt.split()) + len(text.split()),
        }
        created = int(time.time())
        if path.endswith("/chat/completions"):
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
            kind = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "finish_reason": "stop"}
            kind = "text_completion"
        return 200, {
            "id": f"cmpl-{created}",
            "object": kind,
            "created": created,
            "model": request.get("model", MODEL),
            "choices": [choice],
            "usage": usage,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--median-s", type=float, default=0.4)
    parser.add_argument("--sigma", type=float, default=0.9)
    parser.add_argument("--min-s", type=float, default=0.1)
    parser.add_argument("--max-s", type=float, default=7.0)
    args = parser.parse_args()
    latency = Latency(args.median_s, args.sigma, args.min_s, args.max_s)
    with LatencyServer(latency, args.port) as server:
        print(f"serving {MODEL} on {server.base_url}", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
