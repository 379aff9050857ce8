import base64
import io
import json

import pytest
from PIL import Image

from pdgen.judges.openai import (
    RESPONSE_FORMAT,
    ChatClient,
    ChatError,
    InvalidReply,
    OpenAIJudge,
    image_part,
    parse_verdict,
)
from pdgen.scene.parser import parse
from pdgen.scene.plan import plan
from pdgen.testing.fake_openai import FakeOpenAI, Reply

PROMPT = "a red circle left of a blue square"
GOOD = json.dumps({"ok": True, "analysis": "The circle is left of the square.", "refine": None})
BAD = json.dumps({"ok": False, "analysis": "The circle is above the square.", "refine": "Move it left."})


def client_for(server: FakeOpenAI, **overrides) -> ChatClient:
    settings = {"model": "judge-1", "timeout": 5.0, "max_retries": 2, "backoff": 0.0} | overrides
    return ChatClient(server.base_url, **settings)


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_retries_timeouts_5xx_and_malformed_replies_then_answers(monkeypatch):
    monkeypatch.setenv("PDGEN_TEST_KEY", "sk-test")
    script = [
        Reply(delay=3.0, content="late"),
        Reply(status=502),
        Reply(text="<html>oops</html>"),
        Reply(content="hi"),
    ]
    with FakeOpenAI(script) as server:
        client = client_for(server, timeout=0.3, max_retries=3, api_key_env="PDGEN_TEST_KEY")
        reply = client.complete(user("hello"))
    assert reply.content == "hi" and not reply.cached
    assert reply.raw["choices"][0]["message"]["content"] == "hi"
    assert [line.split(" ")[0] for line in reply.attempts] == ["timeout", "HTTP", "malformed:"]
    assert client.counts == {"timeout": 1, "http": 1, "malformed": 1, "retried": 3, "ok": 1}
    assert server.requests[-1] == {"model": "judge-1", "messages": user("hello"), "temperature": 0.0}
    assert server.headers[-1]["Authorization"] == "Bearer sk-test"


def test_spent_retries_raise_one_error_naming_the_url_and_every_try():
    with FakeOpenAI([Reply(status=500), Reply(json={"choices": []}), Reply(status=503)]) as server:
        client = client_for(server)
        with pytest.raises(ChatError) as error:
            client.complete(user("hello"))
    assert error.value.url == server.base_url + "/chat/completions"
    assert str(error.value).count("try ") == 3 and "HTTP 503" in str(error.value)
    assert client.counts["failed"] == 1 and client.counts["retried"] == 2
    assert "Authorization" not in server.headers[0]  # no key in the environment: none sent


def test_client_errors_are_not_retried_and_a_missing_key_is_named(monkeypatch):
    monkeypatch.delenv("PDGEN_UNSET_KEY", raising=False)
    with FakeOpenAI([Reply(status=401), Reply(content="never asked")]) as server:
        client = client_for(server, api_key_env="PDGEN_UNSET_KEY")
        with pytest.raises(ChatError, match="PDGEN_UNSET_KEY is not set"):
            client.complete(user("hello"))
        assert server.remaining == 1


def test_a_bad_base_url_is_a_user_error_naming_it():
    from pdgen.errors import UserError

    with pytest.raises(UserError, match="ftp://judge"):
        ChatClient("ftp://judge")


def test_backoff_doubles(monkeypatch):
    waits = []
    monkeypatch.setattr("pdgen.judges.openai.time.sleep", waits.append)
    with FakeOpenAI([Reply(status=500)] * 3 + [Reply(content="ok")]) as server:
        client_for(server, max_retries=3, backoff=0.5).complete(user("hello"))
    assert waits == [0.5, 1.0, 2.0]


def test_the_cache_answers_reruns_and_every_raw_reply_is_logged(tmp_path):
    with FakeOpenAI([Reply(text="garbage"), Reply(content="first")]) as server:
        first = client_for(server, cache_dir=tmp_path).complete(user("hello"), temperature=0.5)
    with FakeOpenAI([]) as server_again:  # the server restarted on another port: the answer is the same
        assert server_again.base_url != server.base_url
        rerun = ChatClient(server_again.base_url, model="judge-1", cache_dir=tmp_path)
        again = rerun.complete(user("hello"), temperature=0.5)
    assert (again.content, again.raw, again.cached) == (first.content, first.raw, True)
    assert rerun.counts == {"cached": 1} and server_again.requests == []
    other = ChatClient(server.base_url, model="judge-2", cache_dir=tmp_path, max_retries=0, timeout=0.5)
    with pytest.raises(ChatError):  # another model is another request: not in the cache
        other.complete(user("hello"), temperature=0.5)
    log = [json.loads(line) for line in (tmp_path / "replies.jsonl").read_text().splitlines()]
    assert [entry["outcome"] for entry in log] == ["malformed", "ok"]
    assert log[0]["raw"] == "garbage" and log[1]["raw"]["choices"][0]["message"]["content"] == "first"


GARBAGE_STATUS_LINE = b"garbage\r\n\r\n"
SHORT_BODY = b"HTTP/1.1 200 OK\r\nContent-Length: 400\r\n\r\n{\"choices\": ["


@pytest.mark.parametrize(
    ("broken", "error"),
    [(GARBAGE_STATUS_LINE, "BadStatusLine"), (SHORT_BODY, "IncompleteRead"), (b"", "Remote end closed")],
)
def test_transport_failures_from_http_client_are_retried_and_counted(broken, error):
    with FakeOpenAI([Reply(raw=broken), Reply(content="hi")]) as server:
        client = client_for(server)
        reply = client.complete(user("hello"))
    assert reply.content == "hi" and len(server.requests) == 2
    assert reply.attempts[0].startswith("connection error") and error in reply.attempts[0]
    assert client.counts == {"connection": 1, "retried": 1, "ok": 1}


def test_a_corrupt_cache_entry_is_a_miss_that_is_counted_and_rewritten(tmp_path):
    with FakeOpenAI([Reply(content="first"), Reply(content="second")]) as server:
        client_for(server, cache_dir=tmp_path).complete(user("hello"))
        [entry] = tmp_path.glob("*/*.json")
        entry.write_text(entry.read_text()[:30])  # a cache file cut short
        again = client_for(server, cache_dir=tmp_path)
        reply = again.complete(user("hello"))
    assert (reply.content, reply.cached) == ("second", False)
    assert again.counts == {"cache_corrupt": 1, "ok": 1}
    assert json.loads(entry.read_text())["content"] == "second"


def test_image_part_is_a_png_data_url():
    image = Image.new("RGB", (8, 6), (255, 0, 0))
    url = image_part(image)["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert decoded.size == (8, 6) and decoded.getpixel((0, 0)) == (255, 0, 0)


@pytest.mark.parametrize(
    "content, kind",
    [
        ('{"ok": true, "analysis": "fine", "refine": "Move it."}', "contradictory"),
        ('{"ok": false, "analysis": "", "refine": "Move it."}', "contradictory"),
        ('{"ok": false, "analysis": "The circle is missing.", "refine": null}', "contradictory"),
        ('{"ok": "yes", "analysis": "fine", "refine": null}', "malformed"),
        ("Sure! The image looks fine.", "malformed"),
    ],
)
def test_parse_verdict_refuses_contradictions_and_schema_breaks(content, kind):
    with pytest.raises(InvalidReply) as error:
        parse_verdict(content)
    assert error.value.kind == kind


def test_judge_retries_a_contradictory_verdict_and_reports_counts():
    contradictory = json.dumps({"ok": True, "analysis": "Fine.", "refine": "Move the circle."})
    goal, image = plan(parse(PROMPT), 0)[-1], Image.new("RGB", (32, 32), "white")
    with FakeOpenAI([Reply(content=contradictory), Reply(status=500), Reply(content=BAD)]) as server:
        judge = OpenAIJudge(client_for(server, max_retries=2))
        verdict = judge.check_image(image, goal)
    assert (verdict.ok, verdict.refine) == (False, "Move it left.")
    expected = {"ok": 1, "cached": 0, "retried": 2, "failed": 0, "contradictory": 1, "malformed": 0}
    assert judge.counts == expected
    body = server.requests[0]
    assert body["model"] == "judge-1" and body["response_format"] == RESPONSE_FORMAT
    parts = body["messages"][1]["content"]
    assert parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert goal.ins in parts[1]["text"] and goal.des in parts[1]["text"]


def test_judge_gives_no_verdict_without_a_valid_reply(tmp_path):
    contradictory = json.dumps({"ok": False, "analysis": "Wrong.", "refine": None})
    with FakeOpenAI([Reply(content=contradictory)] * 2) as server:
        judge = OpenAIJudge(client_for(server, max_retries=1, cache_dir=tmp_path))
        with pytest.raises(ChatError, match="contradictory"):
            judge.check_plan(PROMPT, plan(parse(PROMPT), 0))
    assert judge.counts["failed"] == 1 and judge.counts["contradictory"] == 2
    assert list(tmp_path.glob("*/*.json")) == []  # nothing invalid is cached


def test_judge_plan_check_reads_the_cache_on_rerun(tmp_path):
    steps = plan(parse(PROMPT), 0)
    with FakeOpenAI([Reply(content=GOOD)]) as server:
        first = OpenAIJudge(client_for(server, cache_dir=tmp_path)).check_plan(PROMPT, steps)
        rerun = OpenAIJudge(client_for(server, cache_dir=tmp_path))
        assert rerun.check_plan(PROMPT, steps) == first and first.ok
    assert rerun.counts["cached"] == 1 and len(server.requests) == 1
    assert steps[0].ins in server.requests[0]["messages"][1]["content"][0]["text"]
