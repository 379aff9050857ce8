import json
import socket
import urllib.error
import urllib.request

import pytest

from pdgen.testing.fake_openai import FakeOpenAI, Reply


def post(url: str, body: dict | str, timeout: float = 5.0) -> tuple[int, bytes]:
    data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    request = urllib.request.Request(
        url + "/chat/completions", data=data, headers={"Content-Type": "application/json", "X-Test": "1"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_replies_follow_the_script_and_requests_are_recorded():
    script = [
        Reply(content="hello"),
        Reply(json={"choices": []}),
        Reply(status=503),
        Reply(text="not json"),
    ]
    with FakeOpenAI(script) as server:
        assert server.base_url.startswith("http://127.0.0.1:") and server.base_url.endswith("/v1")
        messages = [{"role": "user", "content": "hi"}]
        status, body = post(server.base_url, {"model": "m-1", "messages": messages})
        assert status == 200
        answer = json.loads(body)
        assert answer["model"] == "m-1"
        assert answer["choices"][0]["message"] == {"role": "assistant", "content": "hello"}
        assert post(server.base_url, {"model": "m"}) == (200, b'{"choices": []}')
        status, body = post(server.base_url, {"model": "m"})
        assert status == 503 and "503" in json.loads(body)["error"]["message"]
        assert post(server.base_url, "{broken") == (200, b"not json")
        assert server.remaining == 0
        status, body = post(server.base_url, {"model": "m"})
        assert status == 500 and "no scripted reply left" in json.loads(body)["error"]["message"]
    assert server.requests[0]["messages"][0]["content"] == "hi"
    assert server.requests[3] == "{broken"  # a body that is not JSON is kept as text
    assert len(server.requests) == 5 and server.headers[0]["X-Test"] == "1"


def test_a_delay_longer_than_the_client_timeout_is_a_timeout():
    with FakeOpenAI([Reply(delay=5.0, content="late"), Reply(content="on time")]) as server:
        with pytest.raises((TimeoutError, socket.timeout, urllib.error.URLError)):
            post(server.base_url, {"model": "m"}, timeout=0.2)
        status, body = post(server.base_url, {"model": "m"})
        assert json.loads(body)["choices"][0]["message"]["content"] == "on time"


def test_scripts_grow_and_unknown_routes_take_no_reply():
    with FakeOpenAI() as server:
        server.add(Reply(content="added"))
        request = urllib.request.Request(server.base_url + "/embeddings", data=b"{}")
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(request, timeout=5)
        assert server.remaining == 1
        assert json.loads(post(server.base_url, {})[1])["choices"][0]["message"]["content"] == "added"


def test_reply_rejects_two_bodies():
    with pytest.raises(ValueError, match="at most one"):
        Reply(content="a", text="b")
