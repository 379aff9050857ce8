"""An OpenAI-compatible chat client (`ChatClient`) and the judge built on it (`OpenAIJudge`).

`ChatClient.complete(messages)` posts to `{base_url}/chat/completions` (GPT-4o, or a local vLLM / llama.cpp
server speaking the same protocol) with the stdlib's `urllib`, so it needs no extra package. It is made
for long judging runs where every call costs money:

- **retries**: a timeout, a connection error (anything the socket or `http.client` raises: a reset, a
  garbage status line, a body cut short), HTTP 429 or 5xx, a body that is not a chat completion, or a
  reply the caller's `validate` refuses is a failed *try*; the client waits `backoff * 2**k` seconds and
  tries again, up to `max_retries` times, then raises `ChatError` naming the URL and every try. Other
  HTTP errors (400, 401, 404) are not retried: asking again would get the same answer.
- **cache**: with `cache_dir`, a valid reply is stored under the SHA-256 of the request (model, messages,
  response format, temperature: what decides the answer; not the server's address, so a local server
  restarted on another port still hits) and a rerun answers from disk (`ChatReply.cached`), so a judging
  run interrupted halfway costs nothing to resume. Only replies that passed `validate` are cached; an entry
  that cannot be read (a file cut short) is a miss, counted as `cache_corrupt`, and is written again.
- **raw replies**: with `cache_dir`, every reply the server sent (valid or not) is appended to
  `cache_dir/replies.jsonl` with the request key and what was wrong with it, for audits.
- **counts**: `counts` tallies requests (`ok`, `cached`, `failed`), failed tries by kind (`timeout`,
  `connection`, `http`, `malformed`, and whatever kinds `validate` raises) and unreadable cache entries
  (`cache_corrupt`); `retried` is the tries that were followed by another.

`OpenAIJudge` asks the model for a `Verdict` as JSON under a JSON schema (`response_format`), and treats
a verdict that contradicts itself (ok with a correction, not ok with no analysis or no correction) as a
failed try. It never returns a verdict it could not validate: when retries are spent it raises
`ChatError`, and callers skip the sample.

The API key is read from the environment variable `api_key_env` when a request is sent; when the
variable is unset no `Authorization` header is sent (local servers need none) and a 401 names the
variable.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from pdgen.errors import UserError
from pdgen.io import atomic_write
from pdgen.judges.base import Verdict
from pdgen.scene.plan import StepGoal

Message = dict[str, Any]
"""One chat message: {"role": ..., "content": str | list of text / image_url parts}."""


class ChatError(RuntimeError):
    """A chat request that gave no usable reply: names the URL and every try.

    Args:
        url: the endpoint.
        attempts: one line per failed try ("timeout after 60.0 s", "HTTP 500: ...", "malformed: ...").
    """

    def __init__(self, url: str, attempts: Sequence[str]) -> None:
        self.url = url
        self.attempts = list(attempts)
        tries = "\n".join(f"  try {i}: {line}" for i, line in enumerate(self.attempts, 1))
        super().__init__(f"no usable reply from {url} after {len(self.attempts)} tries:\n{tries}")


class InvalidReply(ValueError):
    """Raised by a `validate` callback: the reply is unusable; `kind` is the name it is counted under.

    Args:
        message: what is wrong with the reply.
        kind: the count key, e.g. "malformed" or "contradictory".
    """

    def __init__(self, message: str, kind: str = "invalid") -> None:
        self.kind = kind
        super().__init__(message)


@dataclass(frozen=True)
class ChatReply:
    """`content`: the assistant message; `raw`: the whole completion body; `attempts`: one line per failed
    try before this reply; `cached`: answered from the disk cache."""

    content: str
    raw: dict[str, Any]
    attempts: list[str] = field(default_factory=list)
    cached: bool = False


def image_part(image: Image.Image) -> Message:
    """A chat content part carrying `image` as a base64 PNG data URL."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    return {"type": "image_url", "image_url": {"url": url}}


def text_part(text: str) -> Message:
    """A chat content part carrying `text`."""
    return {"type": "text", "text": text}


class _FailedTry(Exception):
    """One failed try: `kind` is its count key, `line` its attempt line, `retry` whether to try again."""

    def __init__(self, kind: str, line: str, retry: bool = True) -> None:
        self.kind, self.line, self.retry = kind, line, retry
        super().__init__(line)


class ChatClient:
    """An OpenAI-compatible `/chat/completions` client with retries, a disk cache and outcome counts.

    Args:
        base_url: the API root, e.g. "https://api.openai.com/v1" or "http://127.0.0.1:8000/v1".
        model: the model id sent with every request.
        api_key_env: the environment variable holding the API key (None: never send a key).
        timeout: seconds to wait for one reply.
        max_retries: how many times a failed try is retried (so at most `max_retries + 1` tries).
        backoff: seconds before the first retry, doubled for each next one (0 retries at once).
        cache_dir: folder of the reply cache and of `replies.jsonl`; None disables both.
    """

    def __init__(
        self,
        base_url: str,
        model: str = "gpt-4o-2024-08-06",
        api_key_env: str | None = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff: float = 1.0,
        cache_dir: str | Path | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise UserError(f"ChatClient base_url must start with http:// or https://, got {base_url!r}")
        if max_retries < 0 or timeout <= 0 or backoff < 0:
            raise UserError(
                f"ChatClient needs max_retries >= 0, timeout > 0, backoff >= 0; "
                f"got {max_retries}, {timeout}, {backoff}"
            )
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()  # counts and replies.jsonl are shared by threads judging in parallel

    # ---- public -----------------------------------------------------------------------------------
    def complete(
        self,
        messages: Sequence[Message],
        response_format: dict[str, Any] | None = None,
        temperature: float = 0.0,
        validate: Callable[[str], object] | None = None,
    ) -> ChatReply:
        """The assistant's reply to `messages`; `validate(content)` may raise `InvalidReply` to retry.

        Raises:
            ChatError: when every try failed, or the server refused the request (HTTP 4xx but 429).
        """
        request: dict[str, Any] = {
            "model": self.model,
            "messages": list(messages),
            "temperature": temperature,
        }
        if response_format is not None:
            request["response_format"] = response_format
        key = self._key(request)
        if (hit := self._cached(key)) is not None:
            self._count("cached")
            return hit
        attempts: list[str] = []
        for attempt in range(self.max_retries + 1):
            if attempt:
                self._count("retried")
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                raw, content = self._try(request, key, validate)
            except _FailedTry as failure:
                self._count(failure.kind)
                attempts.append(failure.line)
                if failure.retry:
                    continue
                break
            self._log(key, raw, "ok", None)
            reply = ChatReply(content, raw, attempts)
            self._store(key, reply)
            self._count("ok")
            return reply
        self._count("failed")
        raise ChatError(self.url, attempts)

    # ---- one try ----------------------------------------------------------------------------------
    def _try(
        self, request: dict[str, Any], key: str, validate: Callable[[str], object] | None
    ) -> tuple[dict[str, Any], str]:
        """One request and the caller's check of its reply, or `_FailedTry`."""
        raw, content = self._post(request, key)
        if validate is not None:
            try:
                validate(content)
            except InvalidReply as error:
                self._log(key, raw, error.kind, str(error))
                raise _FailedTry(error.kind, f"{error.kind}: {error}") from None
        return raw, content

    def _post(self, request: dict[str, Any], key: str) -> tuple[dict[str, Any], str]:
        """One HTTP round trip: (completion body, message content), or `_FailedTry`."""
        headers = {"Content-Type": "application/json"}
        if self.api_key_env is not None and (api_key := os.environ.get(self.api_key_env)):
            headers["Authorization"] = f"Bearer {api_key}"
        outgoing = urllib.request.Request(self.url, data=json.dumps(request).encode(), headers=headers)
        try:
            with urllib.request.urlopen(outgoing, timeout=self.timeout) as response:
                text = response.read().decode("utf-8", errors="replace")
        except urllib.error.HTTPError as error:
            text = error.read().decode("utf-8", errors="replace")
            self._log(key, text, f"http {error.code}", None)
            line = f"HTTP {error.code}: {text[:200]}"
            if error.code == 429 or error.code >= 500:
                raise _FailedTry("http", line) from None
            if error.code == 401 and self.api_key_env and not os.environ.get(self.api_key_env):
                line += f" (the environment variable {self.api_key_env} is not set)"
            raise _FailedTry("http", line, retry=False) from None
        except TimeoutError:
            raise _FailedTry("timeout", f"timeout after {self.timeout} s") from None
        except urllib.error.URLError as error:
            if isinstance(error.reason, (TimeoutError, socket.timeout)):
                raise _FailedTry("timeout", f"timeout after {self.timeout} s") from None
            raise _FailedTry("connection", f"connection error: {error.reason}") from None
        except (ConnectionError, OSError) as error:  # a reset or a half-sent body while reading
            raise _FailedTry("connection", f"connection error: {error}") from None
        except http.client.HTTPException as error:  # a garbage status line, a body cut short, ...
            raise _FailedTry("connection", f"connection error: {type(error).__name__}: {error!r}") from None
        try:
            raw = json.loads(text)
            content = raw["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            self._log(key, text, "malformed", "not a chat completion")
            raise _FailedTry("malformed", f"malformed: not a chat completion: {text[:200]!r}") from None
        if not isinstance(content, str):
            self._log(key, raw, "malformed", "content is not a string")
            raise _FailedTry("malformed", f"malformed: message content is {type(content).__name__}, not text")
        return raw, content

    # ---- cache, log, counts -----------------------------------------------------------------------
    def _key(self, request: dict[str, Any]) -> str:
        canonical = json.dumps(request, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def _cache_path(self, key: str) -> Path:
        assert self.cache_dir is not None
        return self.cache_dir / key[:2] / f"{key}.json"

    def _cached(self, key: str) -> ChatReply | None:
        if self.cache_dir is None or not (path := self._cache_path(key)).exists():
            return None
        try:
            entry = json.loads(path.read_text())
            return ChatReply(str(entry["content"]), dict(entry["raw"]), [], cached=True)
        except (OSError, ValueError, KeyError, TypeError):
            self._count("cache_corrupt")  # asked again, and the entry rewritten
            return None

    def _store(self, key: str, reply: ChatReply) -> None:
        if self.cache_dir is None:
            return
        path = self._cache_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {"key": key, "model": self.model, "content": reply.content, "raw": reply.raw}
        with atomic_write(path) as file:
            file.write(json.dumps(entry).encode())

    def _log(self, key: str, raw: object, outcome: str, problem: str | None) -> None:
        """Append one raw reply to `replies.jsonl`: every answer the server gave is kept."""
        if self.cache_dir is None:
            return
        entry = {"key": key, "time": time.time(), "outcome": outcome, "problem": problem, "raw": raw}
        line = json.dumps(entry)
        with self._lock:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            with open(self.cache_dir / "replies.jsonl", "a") as log:
                log.write(line + "\n")

    def _count(self, outcome: str) -> None:
        with self._lock:
            self.counts[outcome] += 1


# --------------------------------------------------------------------------------------------------------
# The judge

VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "ok": {"type": "boolean", "description": "true when nothing is wrong"},
        "analysis": {"type": "string", "description": "what was checked, naming every violation"},
        "refine": {
            "type": ["string", "null"],
            "description": "one instruction that fixes the first violation; null when ok",
        },
    },
    "required": ["ok", "analysis", "refine"],
    "additionalProperties": False,
}
"""The JSON schema a judge's reply must follow: the fields of `Verdict`."""

RESPONSE_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "verdict", "strict": True, "schema": VERDICT_SCHEMA},
}

SYSTEM_PROMPT = (
    "You are a strict, exact judge of image generation steps. Check counts, colours, spatial relations "
    "(left of, right of, above, below), missing objects and objects that should not be there. Reply with "
    'JSON only: {"ok": bool, "analysis": str, "refine": str or null}. "analysis" names every violation '
    '(or says why everything is right); "refine" is one short imperative instruction fixing the first '
    "violation, and null when ok is true."
)

JUDGE_COUNTS = ("ok", "cached", "retried", "failed", "contradictory", "malformed")
"""The outcome counts an `OpenAIJudge` reports."""


def parse_verdict(content: str) -> Verdict:
    """The `Verdict` in a judge's reply, or `InvalidReply` ("malformed" or "contradictory")."""
    try:
        data = json.loads(content)
    except ValueError:
        raise InvalidReply(f"not JSON: {content[:120]!r}", "malformed") from None
    if not isinstance(data, dict):
        raise InvalidReply(f"expected a JSON object, got {type(data).__name__}", "malformed")
    ok, analysis, refine = data.get("ok"), data.get("analysis"), data.get("refine")
    if not isinstance(ok, bool) or not isinstance(analysis, str) or not isinstance(refine, (str, type(None))):
        raise InvalidReply(f"fields do not follow the verdict schema: {data}", "malformed")
    refine = refine.strip() if refine else None
    if ok and refine:
        raise InvalidReply(f"ok is true but refine says {refine!r}", "contradictory")
    if not ok and not analysis.strip():
        raise InvalidReply("ok is false but the analysis is empty", "contradictory")
    if not ok and not refine:
        raise InvalidReply("ok is false but there is no refine instruction", "contradictory")
    return Verdict(ok, analysis.strip(), refine)


class OpenAIJudge:
    """A `Judge` that asks an OpenAI-compatible chat model for JSON-schema'd verdicts.

    Args:
        client: the chat client (its cache makes reruns free).
        system_prompt: the judge's standing instructions.
        temperature: sampling temperature; above 0 a retried try can give a different answer.
    """

    def __init__(
        self, client: ChatClient, system_prompt: str = SYSTEM_PROMPT, temperature: float = 0.0
    ) -> None:
        self.client = client
        self.system_prompt = system_prompt
        self.temperature = temperature

    @property
    def counts(self) -> dict[str, int]:
        """How the judge's requests went: answered (`ok`), from the cache, retried tries, requests that
        gave up (`failed`), and the failed tries whose verdict contradicted itself or broke the schema."""
        return {name: self.client.counts[name] for name in JUDGE_COUNTS}

    def check_plan(self, prompt: str, plan: Sequence[StepGoal]) -> Verdict:
        """Does the plan build what the prompt asks for? Raises `ChatError` when no valid verdict came."""
        steps = "\n".join(f"{i}. <ins>{s.ins}</ins> <des>{s.des}</des>" for i, s in enumerate(plan, 1))
        question = (
            f"Prompt: {prompt}\nPlan, one step per line (ins: what the step does; des: the scene after it):\n"
            f"{steps or '(empty)'}\nDoes this plan build exactly what the prompt asks for, with every object "
            "that a relation refers to complete before the relation is used?"
        )
        return self._ask([text_part(question)])

    def check_image(self, image: Image.Image, instruction: StepGoal) -> Verdict:
        """Does the image show the scene the instruction leads to? Raises `ChatError` when no valid
        verdict came."""
        question = (
            f"Instruction for this step: {instruction.ins}\n"
            f"The whole scene after the step: {instruction.des}\n"
            "Does the image show exactly this scene?"
        )
        return self._ask([image_part(image), text_part(question)])

    def _ask(self, content: list[Message]) -> Verdict:
        messages = [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": content}]
        reply = self.client.complete(messages, RESPONSE_FORMAT, self.temperature, validate=parse_verdict)
        return parse_verdict(reply.content)
