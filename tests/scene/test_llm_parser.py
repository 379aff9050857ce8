"""The LLM scene-graph parser against the scripted OpenAI-compatible server: a JSON schema, the vocabulary
it is held to, retries, refusals and the disk cache."""

import json

import pytest

from pdgen.judges.openai import ChatClient, ChatError
from pdgen.scene.graph import Relation, SceneGraph, SceneObject
from pdgen.scene.llm_parser import OpenAIParser
from pdgen.testing.fake_openai import FakeOpenAI, Reply

PROMPT = "a corgi-free photo: a red cup to the left of two dogs"
GRAPH = {
    "objects": [{"name": "dog", "count": 2, "color": None}, {"name": "cup", "count": 1, "color": "red"}],
    "relations": [{"subject": 1, "predicate": "left of", "object": 0}],
}


def graph_reply(**changes) -> Reply:
    return Reply(content=json.dumps({**GRAPH, **changes}))


def parser_for(server, **options) -> OpenAIParser:
    client = ChatClient(server.base_url, "parser-1", None, timeout=5.0, max_retries=2, backoff=0.0, **options)
    return OpenAIParser(client)


def test_a_valid_reply_is_the_scene_graph_and_the_request_carries_schema_and_vocabulary():
    with FakeOpenAI([graph_reply()]) as server:
        graph = parser_for(server).parse(PROMPT)
    want = SceneGraph((SceneObject("dog", 2), SceneObject("cup", 1, "red")), (Relation(1, "left of", 0),))
    assert graph == want
    (request,) = server.requests
    assert request["response_format"]["json_schema"]["name"] == "scene_graph"
    system = request["messages"][0]["content"]
    assert "teddy bear" in system and "purple" in system and "right of" in system  # GenEval's vocabulary
    assert PROMPT in request["messages"][1]["content"][0]["text"]


@pytest.mark.parametrize(
    ("bad", "kind"),
    [
        (
            Reply(content=json.dumps({**GRAPH, "objects": [{"name": "corgi", "count": 1, "color": None}]})),
            "invalid",
        ),
        (graph_reply(objects=[{"name": "cup", "count": 1, "color": "teal"}]), "invalid"),
        (graph_reply(relations=[{"subject": 1, "predicate": "near", "object": 0}]), "invalid"),
        (graph_reply(relations=[{"subject": 5, "predicate": "above", "object": 0}]), "invalid"),
        (graph_reply(objects=[{"name": "cup", "count": 0, "color": None}], relations=[]), "invalid"),
        (Reply(content="a dog and a cup"), "malformed"),
    ],
)
def test_a_reply_outside_the_vocabulary_or_the_schema_is_retried(bad, kind):
    with FakeOpenAI([bad, graph_reply()]) as server:
        parser = parser_for(server)
        assert parser.parse(PROMPT).num_instances == 3
    assert parser.counts[kind] == 1 and parser.counts["retried"] == 1 and parser.counts["ok"] == 1


def test_a_refusal_in_every_try_is_a_chat_error_counted_as_refused():
    refusal = Reply(content=json.dumps({"objects": [], "relations": []}))
    with FakeOpenAI([refusal] * 3) as server:
        parser = parser_for(server)
        with pytest.raises(ChatError, match="refused: no object"):
            parser.parse("a photo of a corgi")
    assert parser.counts["refused"] == 3 and parser.counts["failed"] == 1


def test_a_rerun_is_answered_from_the_cache(tmp_path):
    with FakeOpenAI([graph_reply()]) as server:
        first = parser_for(server, cache_dir=tmp_path).parse(PROMPT)
        again = parser_for(server, cache_dir=tmp_path)
        assert again.parse(PROMPT) == first and len(server.requests) == 1
    assert again.counts["cached"] == 1


def test_the_vocabulary_is_the_one_given():
    with FakeOpenAI([graph_reply(), Reply(content=json.dumps(GRAPH))]) as server:
        client = ChatClient(server.base_url, "m", None, max_retries=0, backoff=0.0)
        shapes = OpenAIParser(client, classes=("circle", "square"))
        with pytest.raises(ChatError, match="class 'dog' is not in the vocabulary"):
            shapes.parse(PROMPT)
        assert "circle, square" in server.requests[0]["messages"][0]["content"]
