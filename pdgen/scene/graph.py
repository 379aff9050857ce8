"""`SceneGraph`: what a prompt asks for, as objects and spatial relations.

A graph is a tuple of `SceneObject`s (class name, count, optional colour) and a tuple of `Relation`s
between them by index ("object 1 is left of object 0"). It converts to and from GenEval's constraint
schema and back to text:

    >>> g = SceneGraph.from_geneval([{"class": "teddy bear", "count": 1},
    ...                              {"class": "dog", "count": 1, "position": ["right of", 0]}])
    >>> g.geneval_prompt()
    'a photo of a dog right of a teddy bear'
    >>> g.describe()
    'a dog to the right of a teddy bear'

Conventions that make the GenEval round trip exact:
- object order is GenEval's `include` order, so a relation's reference always comes before its subject
  (GenEval's scorer matches `include` clauses in order and a position clause points back at its target);
- a count of two or more is exact: `to_geneval` writes GenEval's `exclude` clause `count + 1` for it, as
  the `counting` prompts have; a count of one ("a dog") is "at least one", as in the other five tags;
- `(class, colour)` keys are unique within a graph, so "the red circle" names one object.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

from pdgen.scene.vocabulary import COLORS, RELATIONS

NATURAL_PREDICATE = {
    "left of": "to the left of",
    "right of": "to the right of",
    "above": "above",
    "below": "below",
}


@cache
def inflect_engine():
    import inflect

    return inflect.engine()


def number_word(n: int) -> str:
    """'a'-less English number word: 2 -> 'two'."""
    return inflect_engine().number_to_words(n)


def plural(name: str) -> str:
    """Correct English plural of a class name ('sheep' -> 'sheep', 'bench' -> 'benches')."""
    return inflect_engine().plural_noun(name)


def naive_plural(name: str) -> str:
    """GenEval's generator plural: '+es' after an 's', else '+s' ('sheeps', 'benchs', 'skises')."""
    return name + ("es" if name.endswith("s") else "s")


def join_phrases(phrases: Sequence[str]) -> str:
    """'a, b and c': phrases joined as an English list (one phrase stands alone)."""
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def article(word: str) -> str:
    """GenEval's article rule: 'an' before a vowel letter, else 'a'."""
    return "an" if word[:1] in "aeiou" else "a"


@dataclass(frozen=True)
class SceneObject:
    """One kind of object in a scene.

    Args:
        name: class name ("dog", "circle").
        count: how many; two or more means exactly that many.
        color: one of GenEval's ten colours, or None for "any colour".
    """

    name: str
    count: int = 1
    color: str | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("SceneObject name must not be empty")
        if self.count < 1:
            raise ValueError(f"SceneObject {self.name!r}: count must be >= 1, got {self.count}")
        if self.color is not None and self.color not in COLORS:
            raise ValueError(
                f"SceneObject {self.name!r}: unknown colour {self.color!r}; colours are {COLORS}"
            )

    @property
    def key(self) -> tuple[str, str | None]:
        """(name, colour): what identifies the object within its graph."""
        return (self.name, self.color)

    def noun(self, count: int | None = None) -> str:
        """'red circle' / 'red circles': the noun phrase without determiner, in natural English."""
        n = self.count if count is None else count
        head = self.name if n == 1 else plural(self.name)
        return f"{self.color} {head}" if self.color else head

    def phrase(self, count: int | None = None) -> str:
        """'a red circle', 'three red circles': the object with its count, in natural English."""
        n = self.count if count is None else count
        noun = self.noun(n)
        return f"{article(noun)} {noun}" if n == 1 else f"{number_word(n)} {noun}"

    def definite(self) -> str:
        """'the red circle' / 'the red circles': how later text refers back to the object."""
        return f"the {self.noun()}"


@dataclass(frozen=True)
class Relation:
    """`objects[subject]` is `predicate` `objects[object]`, e.g. (1, "left of", 0).

    GenEval semantics: every instance of the subject stands in the relation to every instance of the
    object, under its position rule (see `pdgen.eval.geneval.relative_position`).
    """

    subject: int
    predicate: str
    object: int

    def __post_init__(self) -> None:
        if self.predicate not in RELATIONS:
            raise ValueError(f"unknown relation {self.predicate!r}; relations are {RELATIONS}")
        if self.subject == self.object:
            raise ValueError(f"relation {self.predicate!r} relates object {self.subject} to itself")


@dataclass(frozen=True)
class SceneGraph:
    """Objects and the relations between them (see the module docstring for the conventions).

    Args:
        objects: the objects, references before the subjects that relate to them.
        relations: spatial relations between objects, by index.
    """

    objects: tuple[SceneObject, ...] = ()
    relations: tuple[Relation, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "objects", tuple(self.objects))
        object.__setattr__(self, "relations", tuple(self.relations))
        keys = [o.key for o in self.objects]
        for i, key in enumerate(keys):
            if key in keys[:i]:
                raise ValueError(f"scene graph names {key} twice (objects {keys.index(key)} and {i})")
        for r in self.relations:
            for index in (r.subject, r.object):
                if not 0 <= index < len(self.objects):
                    raise ValueError(f"relation {r} points at object {index}; the graph has {len(keys)}")

    # ---- lookups -----------------------------------------------------------------------------------
    def index(self, key: tuple[str, str | None]) -> int:
        """Index of the object with this (name, colour) key."""
        for i, o in enumerate(self.objects):
            if o.key == key:
                return i
        raise KeyError(key)

    def relation_triples(self) -> set[tuple[tuple[str, str | None], str, tuple[str, str | None]]]:
        """Relations by object keys instead of indexes: comparable across graphs."""
        return {
            (self.objects[r.subject].key, r.predicate, self.objects[r.object].key) for r in self.relations
        }

    def counts(self) -> dict[tuple[str, str | None], int]:
        return {o.key: o.count for o in self.objects}

    def is_subgraph_of(self, other: SceneGraph) -> bool:
        """Every object of `self` is in `other` with at least its count, and every relation too."""
        theirs = other.counts()
        if any(theirs.get(key, 0) < n for key, n in self.counts().items()):
            return False
        return self.relation_triples() <= other.relation_triples()

    def same_as(self, other: SceneGraph) -> bool:
        """Equal up to object order."""
        return self.counts() == other.counts() and self.relation_triples() == other.relation_triples()

    @property
    def num_instances(self) -> int:
        return sum(o.count for o in self.objects)

    # ---- GenEval constraints -----------------------------------------------------------------------
    @property
    def tag(self) -> str | None:
        """The GenEval tag whose template this graph fits, or None for a graph outside GenEval's six."""
        objs, rels = self.objects, self.relations
        colored = [o.color is not None for o in objs]
        if len(objs) == 1 and not rels:
            (o,) = objs
            if o.count > 1:
                return "counting" if o.color is None else None
            return "colors" if o.color else "single_object"
        if len(objs) == 2 and all(o.count == 1 for o in objs):
            if len(rels) == 1 and not any(colored) and (rels[0].subject, rels[0].object) == (1, 0):
                return "position"
            if not rels:
                return "color_attr" if all(colored) else ("two_object" if not any(colored) else None)
        return None

    def to_geneval(self) -> dict[str, list[dict[str, Any]]]:
        """GenEval's `include` (and `exclude` for exact counts) constraints for this graph.

        Raises:
            ValueError: if the graph does not fit GenEval's schema (a relation whose reference comes
                after its subject, or an object that is the subject of two relations).
        """
        include: list[dict[str, Any]] = []
        exclude: list[dict[str, Any]] = []
        position: dict[int, Relation] = {}
        for r in self.relations:
            if r.object > r.subject:
                raise ValueError(
                    f"relation {r}: GenEval needs the reference (object {r.object}) before the subject"
                )
            if r.subject in position:
                raise ValueError(f"object {r.subject} is the subject of two relations; GenEval allows one")
            position[r.subject] = r
        for i, o in enumerate(self.objects):
            item: dict[str, Any] = {"class": o.name, "count": o.count}
            if o.color is not None:
                item["color"] = o.color
            if i in position:
                item["position"] = [position[i].predicate, position[i].object]
            include.append(item)
            if o.count > 1:
                exclude.append({"class": o.name, "count": o.count + 1})
        return {"include": include, "exclude": exclude} if exclude else {"include": include}

    @classmethod
    def from_geneval(
        cls, include: Sequence[dict[str, Any]], exclude: Sequence[dict[str, Any]] = ()
    ) -> SceneGraph:
        """Inverse of `to_geneval`.

        Raises:
            ValueError: naming the clause, for an unknown key, or an `exclude` clause that is not
                GenEval's exact-count form (`count + 1` of an included class of count >= 2).
        """
        objects, relations = [], []
        for i, item in enumerate(include):
            unknown = set(item) - {"class", "count", "color", "position"}
            if unknown or "class" not in item:
                raise ValueError(f"include[{i}] = {item}: expected keys class, count, color?, position?")
            objects.append(SceneObject(item["class"], int(item.get("count", 1)), item.get("color")))
            if "position" in item:
                predicate, target = item["position"]
                relations.append(Relation(i, predicate, int(target)))
        graph = cls(tuple(objects), tuple(relations))
        exact = {o.name: o.count for o in objects if o.count > 1}
        for i, item in enumerate(exclude):
            if exact.get(item.get("class")) != int(item.get("count", -1)) - 1:
                raise ValueError(
                    f"exclude[{i}] = {item}: only GenEval's exact-count form is supported "
                    "(count + 1 of an included class with count >= 2)"
                )
        if len(exclude) != len(exact):
            raise ValueError(
                f"objects {sorted(exact)} have exact counts but the exclude list is {list(exclude)}"
            )
        return graph

    def to_dict(self) -> dict[str, list[dict[str, Any]]]:
        """Plain JSON form: {"objects": [{"name", "count", "color"}], "relations": [{"subject", ...}]}."""
        return {
            "objects": [{"name": o.name, "count": o.count, "color": o.color} for o in self.objects],
            "relations": [
                {"subject": r.subject, "predicate": r.predicate, "object": r.object} for r in self.relations
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, list[dict[str, Any]]]) -> SceneGraph:
        """Inverse of `to_dict`."""
        return cls(
            tuple(SceneObject(o["name"], o.get("count", 1), o.get("color")) for o in data.get("objects", [])),
            tuple(Relation(r["subject"], r["predicate"], r["object"]) for r in data.get("relations", [])),
        )

    # ---- text ----------------------------------------------------------------------------------------
    def geneval_prompt(self) -> str:
        """The prompt as GenEval's templates write it ('a photo of two benchs'); for graphs with a tag."""
        if self.tag is None:
            raise ValueError(f"graph {self} fits none of GenEval's six templates")

        def np(o: SceneObject) -> str:
            noun = f"{o.color} {o.name}" if o.color else o.name
            return (
                f"{article(noun)} {noun}"
                if o.count == 1
                else f"{number_word(o.count)} {naive_plural(o.name)}"
            )

        if self.tag == "position":
            target, subject = self.objects
            return f"a photo of {np(subject)} {self.relations[0].predicate} {np(target)}"
        return "a photo of " + " and ".join(np(o) for o in self.objects)

    def describe(self) -> str:
        """Natural English for the graph: 'a red circle to the left of two blue squares and a star'.

        Each relation is written 'subject predicate reference' where the subject comes; an object named
        before is referred back to with 'the'; an object that is only somebody's reference is not
        repeated on its own. The template parser reads the text back to the same graph.
        """
        if not self.objects:
            return "nothing"
        by_subject: dict[int, list[Relation]] = {}
        for r in self.relations:
            by_subject.setdefault(r.subject, []).append(r)
        referenced = {r.object for r in self.relations}
        said: set[int] = set()

        def name(i: int) -> str:
            text = self.objects[i].definite() if i in said else self.objects[i].phrase()
            said.add(i)
            return text

        parts = []
        for i in range(len(self.objects)):
            for r in by_subject.get(i, []):
                subject = name(i)
                parts.append(f"{subject} {NATURAL_PREDICATE[r.predicate]} {name(r.object)}")
            if i not in by_subject and i not in referenced:
                parts.append(name(i))
        return join_phrases(parts)

    def with_object(self, index: int, obj: SceneObject) -> SceneGraph:
        """A copy with object `index` replaced (relations keep pointing at the index)."""
        objects = list(self.objects)
        objects[index] = obj
        return replace(self, objects=tuple(objects))
