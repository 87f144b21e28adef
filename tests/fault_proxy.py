"""A small HTTP/1.1 proxy that injects faults in front of a real server (tests only).

It listens on 127.0.0.1, forwards each request to a loopback upstream (keep-alive on both
sides) and, when a scripted fault matches, answers for the upstream instead:

- ``Fault.http(429, retry_after="1")`` / ``Fault.http(500)``: that status, not forwarded (with
  ``error=`` the body's ``error`` object, e.g. ``{"code": "insufficient_quota", ...}``);
- ``Fault.slow(seconds)``: waits, then forwards (a client with a shorter timeout gives up);
- ``Fault.malformed()``: 200 with a body that is not JSON, not forwarded;
- ``Fault.drop()``: closes the connection without an answer, not forwarded;
- ``Fault.answer(text, finish_reason="stop")``: 200 with a well-formed chat completion whose
  content is ``text`` (None: ``content: null``), not forwarded (a server that answered
  something else than the model would have).

Faults are given by request number (``on_requests={1: fault, 3: fault}``, counting every request
from 1 in arrival order) or by rule (``add_rule(lambda body: b"row-3" in body, fault,
times=2)``). Every request is recorded with its row key (``row-N`` found in the body, by
default), the time it arrived and what happened to it (``forwarded`` with the upstream's status,
or the fault's kind), so a test can check that each row got exactly one clean answer.

Bounded: it refuses bodies over 1 MiB, answers 503 after ``max_requests`` requests and stops by
itself after ``lifetime_s`` seconds.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

MAX_BODY = 1 << 20
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "content-encoding",
    "host",
    "te",
    "upgrade",
    "proxy-connection",
}
ROW_KEY = re.compile(rb"row-\d+")


@dataclass(frozen=True)
class Fault:
    kind: str  # status | slow | malformed | drop | answer
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    delay_s: float = 0.0
    text: str | None = ""
    finish_reason: str = "stop"
    error: str = '{"message": "injected by the fault proxy"}'  # JSON of the error object

    @classmethod
    def http(cls, status: int, retry_after: str | None = None, error: dict | None = None) -> Fault:
        """Answer ``status`` (with a ``Retry-After`` header when given) instead of forwarding;
        the body is ``{"error": error}`` (default: a message naming the proxy)."""
        headers = (("Retry-After", retry_after),) if retry_after is not None else ()
        if error is None:
            return cls("status", status=status, headers=headers)
        return cls("status", status=status, headers=headers, error=json.dumps(error))

    @classmethod
    def slow(cls, seconds: float) -> Fault:
        """Wait ``seconds``, then forward."""
        return cls("slow", delay_s=seconds)

    @classmethod
    def malformed(cls) -> Fault:
        """Answer 200 with a truncated JSON body instead of forwarding."""
        return cls("malformed")

    @classmethod
    def answer(cls, text: str | None, finish_reason: str = "stop") -> Fault:
        """Answer 200 with a chat completion of ``text`` (None: ``content: null``), that
        ``finish_reason`` and usage, instead of forwarding."""
        return cls("answer", text=text, finish_reason=finish_reason)

    @classmethod
    def drop(cls) -> Fault:
        """Close the connection without an answer, instead of forwarding."""
        return cls("drop")


@dataclass
class Record:
    """One request as the proxy saw it."""

    number: int
    path: str
    key: str | None
    arrived: float  # time.monotonic()
    outcome: str  # "forwarded" or the fault's kind
    status: int | None = None  # the status the client was sent (None: no answer)
    authorization: str | None = None


@dataclass
class _Rule:
    match: Callable[[bytes], bool]
    fault: Fault
    times: int | None


@dataclass
class FaultProxy:
    """Start with ``with FaultProxy(upstream) as proxy:``; point clients at ``proxy.base_url``."""

    upstream: str  # e.g. http://127.0.0.1:8000 (a /v1 suffix is fine too)
    on_requests: dict[int, Fault] = field(default_factory=dict)
    max_requests: int = 10_000
    lifetime_s: float = 600.0
    key_of: Callable[[bytes], str | None] = field(
        default=lambda body: m[0].decode() if (m := ROW_KEY.search(body)) else None
    )

    def __post_init__(self) -> None:
        parts = urlsplit(self.upstream)
        if not ipaddress.ip_address(parts.hostname or "0.0.0.0").is_loopback:
            raise ValueError(f"the proxy only forwards to loopback addresses, not {self.upstream}")
        self._upstream_root = f"{parts.scheme}://{parts.netloc}"
        self._suffix = parts.path.rstrip("/")
        self.records: list[Record] = []
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="fault-proxy", daemon=True)
        self.port = 0
        #: Requests being answered now, and the most at once (forwarded and slow ones).
        self.in_flight = 0
        self.max_in_flight = 0

    # -- control, from the test's thread ------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self._suffix}"

    def add_rule(self, match: Callable[[bytes], bool], fault: Fault, times: int | None = 1) -> None:
        """Answer requests whose body ``match``es with ``fault``, ``times`` times (None: always)."""
        with self._lock:
            self._rules.append(_Rule(match, fault, times))

    def script(self, on_requests: dict[int, Fault]) -> None:
        """Faults for request numbers (counting from 1 over the proxy's whole life)."""
        with self._lock:
            self.on_requests.update(on_requests)

    def outcomes(self) -> Counter[str]:
        """How many requests ended how: ``forwarded`` and each fault kind."""
        with self._lock:
            return Counter(r.outcome for r in self.records)

    def clean_answers(self) -> Counter[str]:
        """Row key -> requests forwarded and answered 2xx by the upstream, untouched."""
        with self._lock:
            return Counter(
                r.key
                for r in self.records
                if r.key is not None
                and r.outcome == "forwarded"
                and r.status is not None
                and 200 <= r.status < 300
            )

    def arrivals(self, path_suffix: str = "/completions") -> list[float]:
        """Arrival times (monotonic seconds) of the requests to paths ending so."""
        with self._lock:
            return [r.arrived for r in self.records if r.path.endswith(path_suffix)]

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        if not self._ready.wait(timeout=10):
            raise RuntimeError("the fault proxy did not start")
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._stop_event.set)
        self._thread.join(timeout=15)

    # -- the server, on its own thread ---------------------------------------------------------

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        import httpx2

        self._stop_event = asyncio.Event()
        self._http = httpx2.AsyncClient(
            base_url=self._upstream_root, timeout=300.0, trust_env=False
        )
        server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await asyncio.wait_for(self._stop_event.wait(), self.lifetime_s)
        except asyncio.TimeoutError:
            pass
        server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._http.aclose()

    def _decide(self, body: bytes) -> tuple[int, Fault | None]:
        with self._lock:
            number = len(self.records) + 1
            fault = self.on_requests.get(number)
            if fault is None:
                for rule in self._rules:
                    if rule.times != 0 and rule.match(body):
                        fault = rule.fault
                        if rule.times is not None:
                            rule.times -= 1
                        break
            return number, fault

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._exchange(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:  # the proxy stops; end quietly (no task result to read)
            pass
        finally:
            writer.close()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; False when the connection should close."""
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if length > MAX_BODY:
            await self._answer(writer, 413, b'{"error": "body too large"}')
            return False
        body = await reader.readexactly(length) if length else b""
        number, fault = self._decide(body)
        record = Record(
            number,
            path,
            self.key_of(body),
            time.monotonic(),
            "forwarded" if fault is None else fault.kind,
            authorization=headers.get("authorization"),
        )
        with self._lock:
            self.records.append(record)
        if number > self.max_requests:
            record.outcome, record.status = "refused", 503
            await self._answer(writer, 503, b'{"error": "fault proxy: too many requests"}')
            return False
        if fault is not None and fault.kind == "drop":
            writer.transport.abort()
            return False
        if fault is not None and fault.kind == "status":
            record.status = fault.status
            payload = b'{"error": ' + fault.error.encode() + b"}"
            await self._answer(writer, fault.status, payload, fault.headers)
            return True
        if fault is not None and fault.kind == "answer":
            record.status = 200
            reply = {
                "id": "fault-proxy",
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": fault.text},
                        "finish_reason": fault.finish_reason,
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
            await self._answer(writer, 200, json.dumps(reply).encode())
            return True
        if fault is not None and fault.kind == "malformed":
            record.status = 200
            await self._answer(writer, 200, b'{"id": "x", "choices": [{"message": ')
            return True
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if fault is not None and fault.kind == "slow":
                await asyncio.sleep(fault.delay_s)
            forward = {k: v for k, v in headers.items() if k not in _HOP_BY_HOP}
            response = await self._http.request(method, path, content=body, headers=forward)
        finally:
            with self._lock:
                self.in_flight -= 1
        record.status = response.status_code
        kept = tuple((k, v) for k, v in response.headers.items() if k.lower() not in _HOP_BY_HOP)
        await self._answer(writer, response.status_code, response.content, kept)
        return True

    @staticmethod
    async def _answer(
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        lines = [f"HTTP/1.1 {status} {'OK' if status < 400 else 'Error'}"]
        if not any(k.lower() == "content-type" for k, _ in headers):
            lines.append("Content-Type: application/json")
        lines += [f"{k}: {v}" for k, v in headers]
        lines += [f"Content-Length: {len(body)}", "Connection: keep-alive", "", ""]
        writer.write("\r\n".join(lines).encode("latin-1") + body)
        await writer.drain()
