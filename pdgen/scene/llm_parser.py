"""`OpenAIParser`: prompt -> `SceneGraph` by a chat model, the paper's GPT step, behind the `Parser` protocol.

The template parser reads GenEval's grammar exactly; a real-image prompt set ("a corgi on a red skateboard
beside two cups") needs a language model. This parser asks an OpenAI-compatible endpoint (GPT-4o, or a local
vLLM server) for the scene graph as JSON under a JSON schema, and holds the reply to the vocabulary it is
given (GenEval's 80 classes and 10 colours by default): a class or colour outside it, a relation that is not
one of the four, an index that points nowhere, a count below one, an object named twice, or a graph with no
object is a failed try, retried like any other (``pdgen.judges.openai.ChatClient``: retries with back-off,
a disk cache that makes a rerun free, every raw reply kept in ``replies.jsonl``). When the tries are spent
``parse`` raises ``ChatError``; the data builder skips the prompt and counts it.

A prompt the model cannot express in the vocabulary is answered with ``{"objects": [], ...}`` (the system
prompt asks for that): it fails validation as ``refused`` and is counted so.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pdgen.judges.openai import ChatClient, InvalidReply, text_part
from pdgen.scene.graph import SceneGraph
from pdgen.scene.vocabulary import COLORS, GENEVAL_CLASSES, RELATIONS

GRAPH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "objects": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "description": "the object's class, from the vocabulary"},
                    "count": {"type": "integer", "description": "how many (1: at least one)"},
                    "color": {"type": ["string", "null"], "description": "a colour word, or null"},
                },
                "required": ["name", "count", "color"],
                "additionalProperties": False,
            },
        },
        "relations": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "subject": {"type": "integer", "description": "index into objects"},
                    "predicate": {"type": "string", "enum": list(RELATIONS)},
                    "object": {"type": "integer", "description": "index into objects: the reference"},
                },
                "required": ["subject", "predicate", "object"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["objects", "relations"],
    "additionalProperties": False,
}
"""The JSON schema of a scene graph reply: ``SceneGraph.to_dict``'s form."""

RESPONSE_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "scene_graph", "strict": True, "schema": GRAPH_SCHEMA},
}

SYSTEM_PROMPT = (
    "You turn an image generation prompt into a scene graph. Objects: every kind of object the prompt asks "
    "for, with its class (one of: {classes}), how many (1 when the prompt says 'a' or gives no count), and "
    "its colour (one of: {colors}; null when the prompt gives none). Relations: spatial relations the prompt "
    "states between two objects, as (subject index, predicate, reference index) with predicate one of: "
    "{relations}. Name each (class, colour) once. If the prompt asks for something outside these classes, "
    "reply with no objects. Reply with JSON only."
)

PARSER_COUNTS = ("ok", "cached", "retried", "failed", "malformed", "invalid", "refused")
"""The outcome counts an `OpenAIParser` reports."""


class OpenAIParser:
    """A `Parser` that asks an OpenAI-compatible chat model for the scene graph.

    Args:
        client: the chat client (retries, cache, raw replies).
        classes: the class names a graph may use (default GenEval's 80).
        colors: the colour words it may use (default GenEval's 10).
        temperature: sampling temperature (0: the same prompt gets the same graph, and the cache holds).
    """

    def __init__(
        self,
        client: ChatClient,
        classes: Sequence[str] = GENEVAL_CLASSES,
        colors: Sequence[str] = COLORS,
        temperature: float = 0.0,
    ) -> None:
        self.client = client
        self.classes = tuple(classes)
        self.colors = tuple(colors)
        self.temperature = temperature
        self.system_prompt = SYSTEM_PROMPT.format(
            classes=", ".join(self.classes), colors=", ".join(self.colors), relations=", ".join(RELATIONS)
        )

    @property
    def counts(self) -> dict[str, int]:
        """How the parser's requests went (``PARSER_COUNTS``)."""
        return {name: self.client.counts[name] for name in PARSER_COUNTS}

    def parse(self, prompt: str) -> SceneGraph:
        """The prompt's scene graph. Raises `ChatError` when no valid graph came in the tries allowed."""
        messages = [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": [text_part(f"Prompt: {prompt}")]},
        ]
        reply = self.client.complete(messages, RESPONSE_FORMAT, self.temperature, validate=self.read_graph)
        return self.read_graph(reply.content)

    def read_graph(self, content: str) -> SceneGraph:
        """The graph in a reply, held to the vocabulary; `InvalidReply` (``malformed``, ``refused`` or
        ``invalid``) names what is wrong."""
        try:
            data = json.loads(content)
        except ValueError:
            raise InvalidReply(f"not JSON: {content[:120]!r}", "malformed") from None
        if not isinstance(data, dict) or not isinstance(data.get("objects"), list):
            raise InvalidReply(
                f"expected an object with 'objects' and 'relations', got {content[:120]!r}", "malformed"
            )
        if not data["objects"]:
            raise InvalidReply("no object: the prompt is outside the vocabulary", "refused")
        for i, item in enumerate(data["objects"]):
            if not isinstance(item, dict):
                raise InvalidReply(f"objects[{i}] is not an object", "malformed")
            if item.get("name") not in self.classes:
                raise InvalidReply(
                    f"objects[{i}]: class {item.get('name')!r} is not in the vocabulary", "invalid"
                )
            if item.get("color") is not None and item["color"] not in self.colors:
                raise InvalidReply(
                    f"objects[{i}]: colour {item['color']!r} is not in the vocabulary", "invalid"
                )
        try:
            return SceneGraph.from_dict(data)
        except (ValueError, KeyError, TypeError) as error:  # a bad count, relation or index; a repeated key
            raise InvalidReply(f"not a scene graph: {error}", "invalid") from None
