"""The words scene graphs are made of: GenEval's classes and colours, the shapes world's classes,
the four spatial relations and the six GenEval tags.

GenEval's class order is the detector's class index order and matters to its scorer; the colour order
is the order its colour classifier (and its reason strings) list colours in.
"""

from __future__ import annotations

GENEVAL_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "computer mouse", "tv remote",
    "computer keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

COLORS: tuple[str, ...] = (
    "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white",
)  # fmt: skip

SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "diamond", "heart", "ring")
"""The shapes world's classes, most distinct first: a class subset of size k takes the first k."""

RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
"""GenEval's relations, in the order its relation test checks them (image y points down)."""

OPPOSITE: dict[str, str] = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}

TAGS: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
"""GenEval's six tags; the overall score is the plain mean of their accuracies."""
