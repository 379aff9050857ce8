"""Prompt -> `SceneGraph` parsers: the `Parser` protocol and the offline `TemplateParser`.

`TemplateParser` reads GenEval's six templates exactly ("a photo of two benchs", "a photo of a dog right
of a teddy bear", ...) and free phrasings of the same content: a list of noun phrases joined by "and" or
commas, where two neighbouring phrases may be joined by a relation instead ("a blue square to the left of
two red circles", "three yellow triangles", "a red circle above the blue square and a star").

A noun phrase is `[a|an|the|one|<number>] [<colour>] <class>`; the class may be plural, including
GenEval's naive plurals ("sheeps", "benchs"), which `inflect` singularises. A phrase with "the" refers back
to an object already named. A colour word that is also a class ("orange") is read as the class when
nothing follows it, as GenEval's article rule implies ("an orange" vs "an orange cup").

Words the parser does not know make it raise `ParseError`, which names them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol

from pdgen.errors import UserError
from pdgen.scene.graph import Relation, SceneGraph, SceneObject, inflect_engine
from pdgen.scene.vocabulary import COLORS, GENEVAL_CLASSES, SHAPE_CLASSES

# Multi-word relation phrases, longest first so "to the left of" wins over "left of".
RELATION_PHRASES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("to", "the", "left", "of"), "left of"),
    (("on", "the", "left", "of"), "left of"),
    (("to", "the", "right", "of"), "right of"),
    (("on", "the", "right", "of"), "right of"),
    (("on", "top", "of"), "above"),
    (("left", "of"), "left of"),
    (("right", "of"), "right of"),
    (("above",), "above"),
    (("over",), "above"),
    (("below",), "below"),
    (("under",), "below"),
    (("beneath",), "below"),
)
CONJUNCTIONS = frozenset({"and", ",", "with"})
PREFIXES: tuple[tuple[str, ...], ...] = tuple(
    tuple(p.split())
    for p in ("a photo of", "an image of", "a picture of", "a drawing of", "an illustration of", "there is",
              "there are", "draw", "show")
)  # fmt: skip
DETERMINERS = {"a": 1, "an": 1, "one": 1, "the": None}


class ParseError(UserError):
    """A prompt the parser could not read; `words` are the words it did not understand."""

    def __init__(self, message: str, words: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.words = tuple(words)


class Parser(Protocol):
    """Anything that turns a prompt into a scene graph (template rules, an LLM, a dependency parser)."""

    def parse(self, prompt: str) -> SceneGraph: ...


@dataclass(frozen=True)
class _Phrase:
    obj: SceneObject
    definite: bool
    text: str


class TemplateParser:
    """Offline rule parser for GenEval's grammar and its free phrasings (see the module docstring).

    Args:
        classes: class names it knows (multi-word names allowed). Default: GenEval's 80 and the shapes.
        colors: colour words it knows. Default: GenEval's ten.
    """

    def __init__(
        self, classes: Sequence[str] = GENEVAL_CLASSES + SHAPE_CLASSES, colors: Sequence[str] = COLORS
    ) -> None:
        self.classes = frozenset(classes)
        self.colors = frozenset(colors)
        self.numbers = {inflect_engine().number_to_words(n): n for n in range(1, 21)}
        self.known_words = (
            {w for c in self.classes for w in c.split()}
            | set(self.colors)
            | set(self.numbers)
            | set(DETERMINERS)
            | set(CONJUNCTIONS)
            | {w for phrase, _ in RELATION_PHRASES for w in phrase}
            | {w for p in PREFIXES for w in p}
        )

    # ---- public ------------------------------------------------------------------------------------
    def parse(self, prompt: str) -> SceneGraph:
        """Parse one prompt.

        Raises:
            ParseError: naming the words not understood, or the phrase that does not fit the grammar.
        """
        tokens = re.findall(r"[a-z0-9]+|,", prompt.lower().replace("-", " "))
        unknown = [
            t for t in tokens if not (t.isdigit() or any(w in self.known_words for w in _singulars(t)))
        ]
        if unknown:
            raise ParseError(
                f"could not understand {', '.join(map(repr, unknown))} in prompt {prompt!r}", unknown
            )
        for prefix in PREFIXES:
            if tuple(tokens[: len(prefix)]) == prefix:
                tokens = tokens[len(prefix) :]
                break
        segments, links = self._split(tokens, prompt)
        objects: list[SceneObject] = []
        relations: list[tuple[int, str, int]] = []
        slots = [self._resolve(self._phrase(seg, prompt), objects, prompt) for seg in segments]
        for i, link in enumerate(links):
            if link is not None:
                relations.append((slots[i], link, slots[i + 1]))
        return _reference_first(objects, relations)

    # ---- steps ----------------------------------------------------------------------------------------
    def _split(self, tokens: list[str], prompt: str) -> tuple[list[list[str]], list[str | None]]:
        """Cut the tokens into noun-phrase segments and the links between them (None = 'and')."""
        segments: list[list[str]] = [[]]
        links: list[str | None] = []
        i = 0
        while i < len(tokens):
            for phrase, predicate in RELATION_PHRASES:
                if tuple(tokens[i : i + len(phrase)]) == phrase:
                    links.append(predicate)
                    segments.append([])
                    i += len(phrase)
                    break
            else:
                if tokens[i] in CONJUNCTIONS:
                    if segments[-1]:  # "A, and B": one link
                        links.append(None)
                        segments.append([])
                else:
                    segments[-1].append(tokens[i])
                i += 1
        if any(not s for s in segments):
            raise ParseError(f"prompt {prompt!r} has a relation or 'and' with nothing on one side")
        return segments, links

    def _phrase(self, words: list[str], prompt: str) -> _Phrase:
        text = " ".join(words)
        count: int | None = None
        definite = False
        rest = list(words)
        if rest and rest[0] in DETERMINERS:
            definite = rest[0] == "the"
            count = DETERMINERS[rest.pop(0)]
        if rest and (rest[0] in self.numbers or rest[0].isdigit()):
            word = rest.pop(0)
            count = self.numbers[word] if word in self.numbers else int(word)
        noun = self._noun(" ".join(rest))
        color = None
        if noun is None and len(rest) > 1 and rest[0] in self.colors:
            color, noun = rest[0], self._noun(" ".join(rest[1:]))
        if noun is None:
            raise ParseError(f"could not read {text!r} in prompt {prompt!r} as '[count] [colour] class'")
        name, is_plural = noun
        if count is None:
            if is_plural and not definite:
                raise ParseError(f"{text!r} in prompt {prompt!r} does not say how many")
            count = 1
        if count < 1:
            raise ParseError(f"{text!r} in prompt {prompt!r} asks for {count} objects")
        return _Phrase(SceneObject(name, count, color), definite, text)

    def _noun(self, words: str) -> tuple[str, bool] | None:
        """(class, is_plural) for a (possibly plural) class name, or None."""
        if words in self.classes:
            return words, False
        head, _, last = words.rpartition(" ")
        for singular in _singulars(last)[1:]:
            name = f"{head} {singular}" if head else singular
            if name in self.classes:
                return name, True
        return None

    def _resolve(self, phrase: _Phrase, objects: list[SceneObject], prompt: str) -> int:
        """Index of the phrase's object in `objects`, appending it when new."""
        obj = phrase.obj
        same_class = [i for i, o in enumerate(objects) if o.name == obj.name and obj.color in (None, o.color)]
        if phrase.definite and same_class:
            if len(same_class) > 1:
                raise ParseError(f"{phrase.text!r} in prompt {prompt!r} could mean more than one object")
            return same_class[0]
        if any(o.key == obj.key for o in objects):
            raise ParseError(f"{phrase.text!r} is named twice in prompt {prompt!r}; use 'the' to refer back")
        objects.append(obj)
        return len(objects) - 1


def _reference_first(objects: list[SceneObject], relations: list[tuple[int, str, int]]) -> SceneGraph:
    """Order objects so that every relation's reference comes before its subject (stable otherwise)."""
    order: list[int] = []
    visiting: set[int] = set()

    def visit(i: int) -> None:
        if i in order:
            return
        if i in visiting:
            raise ParseError("the relations in the prompt form a cycle")
        visiting.add(i)
        for subject, _, reference in relations:
            if subject == i:
                visit(reference)
        order.append(i)

    for i in range(len(objects)):
        visit(i)
    new = {old: new for new, old in enumerate(order)}
    return SceneGraph(
        tuple(objects[i] for i in order), tuple(Relation(new[s], p, new[o]) for s, p, o in relations)
    )


def _singulars(word: str) -> list[str]:
    """The word and its singular readings: inflect's ("knifes" -> "knife", "driers" -> "drier"), then
    GenEval's own '+es' plural undone ("skises" -> "skis")."""
    readings = [word, inflect_engine().singular_noun(word) or "", word[:-2] if word.endswith("ses") else ""]
    return [w for w in readings if w]


@cache
def _default_parser() -> TemplateParser:
    return TemplateParser()


def parse(prompt: str, parser: Parser | None = None) -> SceneGraph:
    """Parse with `parser`, by default a `TemplateParser` over GenEval's classes and the shapes."""
    return (parser or _default_parser()).parse(prompt)


def parse_record(prompt: str, parser: Parser | None = None) -> dict[str, Any]:
    """What `pdgen data parse` prints for a prompt: prompt, graph, and GenEval's include (and exclude
    where GenEval would have one)."""
    graph = parse(prompt, parser)
    return {"prompt": prompt, "graph": graph.to_dict(), **graph.to_geneval()}
