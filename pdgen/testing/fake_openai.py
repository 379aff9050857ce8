"""`FakeOpenAI`: a scripted OpenAI-compatible chat server on 127.0.0.1, for tests of judges and clients.

Every `POST /v1/chat/completions` takes the next scripted `Reply` and answers with it; every request body
is recorded. The server is plain stdlib (`http.server` in a daemon thread, port chosen by the OS), so
tests of network clients need no network, no key and no extra package::

    with FakeOpenAI([Reply(content='{"ok": true}'), Reply(status=500), Reply(text="not json")]) as server:
        client = ChatClient(server.base_url, model="m")   # server.base_url == "http://127.0.0.1:PORT/v1"
        ...
        server.requests      # the JSON bodies received, in order (messages, model id, images)
        server.remaining     # scripted replies not taken yet

A `Reply` is one of: `content` (a well-formed chat completion whose message says that), `json` (that body
as it is), `text` (a body that is not JSON), `raw` (bytes sent on the socket as they are, then the
connection closed: a garbage status line, a body shorter than its `Content-Length`), or only a `status`
(an error body). `delay` holds the answer
back that many seconds, so a client with a shorter timeout sees a timeout; closing the server cuts
pending delays short. When the script runs out the server answers 500 with a message saying so, which
a test sees as an unexpected extra request.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CHAT_PATH = "/v1/chat/completions"


@dataclass(frozen=True)
class Reply:
    """One scripted answer; give at most one of `content`, `json`, `text`.

    Args:
        content: the assistant message of a well-formed chat completion.
        json: a response body sent as it is (e.g. a completion without `choices`).
        text: a response body that is not JSON.
        raw: bytes written on the connection instead of an HTTP response, which is then closed.
        status: the HTTP status; with no body given, an OpenAI-style error body is sent.
        delay: seconds to wait before answering.
    """

    content: str | None = None
    json: dict[str, Any] | None = None
    text: str | None = None
    raw: bytes | None = None
    status: int = 200
    delay: float = 0.0

    def __post_init__(self) -> None:
        given = [name for name in ("content", "json", "text", "raw") if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"Reply takes at most one of content, json, text, raw; got {given}")
        if self.delay < 0:
            raise ValueError(f"Reply.delay must be >= 0, got {self.delay}")

    def body(self, model: str, number: int) -> bytes:
        """The response body for the `number`-th request, which asked for `model`."""
        if self.text is not None:
            return self.text.encode()
        if self.json is not None:
            return json.dumps(self.json).encode()
        if self.content is not None:
            return json.dumps(completion(self.content, model, number)).encode()
        error = {"message": f"fake server: scripted status {self.status}", "code": self.status}
        return json.dumps({"error": error}).encode()


def completion(content: str, model: str = "fake", number: int = 0) -> dict[str, Any]:
    """A chat completion body in the OpenAI shape whose one choice says `content`."""
    return {
        "id": f"chatcmpl-fake-{number}",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


class FakeOpenAI:
    """A scripted chat-completions server; use it as a context manager.

    Args:
        replies: the answers, taken in order, one per chat request.
    """

    def __init__(self, replies: Iterable[Reply] = ()) -> None:
        self._script = list(replies)
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.requests: list[Any] = []
        self.headers: list[dict[str, str]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    # ---- script -----------------------------------------------------------------------------------
    def add(self, *replies: Reply) -> None:
        """Append replies to the script (also while the server runs)."""
        with self._lock:
            self._script.extend(replies)

    @property
    def remaining(self) -> int:
        """How many scripted replies have not been taken yet."""
        with self._lock:
            return len(self._script)

    def _take(self, body: Any, headers: dict[str, str]) -> tuple[Reply, int]:
        with self._lock:
            self.requests.append(body)
            self.headers.append(headers)
            number = len(self.requests)
            if not self._script:
                exhausted = {"error": {"message": "fake server: no scripted reply left"}}
                return Reply(json=exhausted, status=500), number
            return self._script.pop(0), number

    # ---- lifecycle --------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT/v1`, the base URL an OpenAI client is given (kept after closing)."""
        if self._port is None:
            raise RuntimeError("FakeOpenAI has not started: use it as `with FakeOpenAI(...) as server:`")
        return f"http://127.0.0.1:{self._port}/v1"

    def __enter__(self) -> FakeOpenAI:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._port = self._server.server_address[1]
        # A short poll interval: `shutdown()` waits for the serving loop's next poll, once per test.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-openai", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._closing.set()
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._server = None


def _handler_for(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    """The request handler class bound to one `FakeOpenAI` (http.server instantiates it per request)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path.rstrip("/") != CHAT_PATH:
                self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}).encode())
                return
            try:
                body: Any = json.loads(raw)
            except ValueError:
                body = raw.decode(errors="replace")
            reply, number = fake._take(body, dict(self.headers.items()))
            model = body.get("model", "fake") if isinstance(body, dict) else "fake"
            if reply.delay and fake._closing.wait(reply.delay):
                self.close_connection = True
                return  # the server is closing: drop the answer
            if reply.raw is not None:
                self.wfile.write(reply.raw)
                self.close_connection = True
                return
            self._send(reply.status, reply.body(model, number), json_body=reply.text is None)

        def _send(self, status: int, payload: bytes, json_body: bool = True) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if json_body else "text/plain")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (its timeout was shorter than the delay): nothing to answer

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (signature of the base)
            pass  # tests read `fake.requests`, not the access log

    return Handler
