"""Vocabulary shared by the task generators and the organism's training corpus.

Every list holds common English words chosen to be single tokens (with a leading space) for GPT-2-style
tokenizers; generators still check this for the tokenizer they are given. ``partition`` splits a list
deterministically into train and held-out test parts, so the organism can be measured on prompts it never
trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from ..errors import PromptError

T = TypeVar("T")

SPLITS = ("train", "test", "all")

NAMES = (
    "Mary", "John", "Tom", "James", "Dan", "Sid", "Martin", "Amy", "Kate", "Paul",
    "Alex", "Lisa", "Mark", "Anna", "David", "Sarah", "Mike", "Laura", "Steve", "Emma",
    "Peter", "Rose", "Jack", "Grace", "Chris", "Alice", "Brian", "Helen", "Kevin", "Julia",
    "Adam", "Ruth", "Eric", "Jane", "Frank", "Linda", "George", "Susan", "Henry", "Karen",
    "Paula", "Oliver", "Lucy", "Sam", "Claire", "Tim", "Anne", "Luke", "Diana", "Carl",
    "Nina", "Bob", "Jessica", "Andrew", "Maria", "Matt", "Sophie", "Joe", "Kelly", "Ryan",
    "Emily", "Scott", "Rachel", "Jason", "Amanda", "Ben", "Nancy", "Greg", "Alan", "Jennifer",
    "Victor", "Ellen", "Simon", "Betty", "Roger", "Carol", "Arthur", "Joan", "Louis", "Marie",
    "Edward", "Jean", "Philip", "Lily", "Leo", "Tina", "Hugh", "Joyce", "Ross", "Ann",
    "Harry", "Beth", "Walter", "Rita", "Dennis", "Sally", "Victoria", "Ray", "Irene", "Fred",
)  # fmt: skip

PLACES = (
    "store", "park", "school", "garden", "beach", "station", "restaurant", "hospital", "office", "house",
    "library", "market", "lake", "river", "church", "farm", "hotel", "museum", "club", "bank",
)  # fmt: skip

OBJECTS = (
    "drink", "ring", "book", "ball", "bone", "kiss", "basketball", "computer", "necklace", "hat",
    "snack", "bag", "pen", "letter", "cake", "box", "flower", "key", "phone", "cup",
)  # fmt: skip

# Events for greater-than ("The <noun> lasted from the year 1745 to the year 17").
EVENTS = (
    "war", "trip", "siege", "reign", "journey", "project", "campaign", "strike", "crisis", "drought",
    "expedition", "revolution", "occupation", "festival", "voyage", "rebellion", "famine", "boom", "plague", "dispute",
    "marriage", "contract", "treaty", "alliance", "partnership", "conflict", "riot", "feud", "dynasty", "era",
    "program", "study", "survey", "investigation", "trial", "recession", "blockade", "truce", "mission", "tour",
)  # fmt: skip

# Random single-token words for docstring parameters and induction sequences.
WORDS = (
    "load", "size", "files", "last", "name", "data", "user", "value", "item", "path",
    "mode", "state", "count", "key", "text", "color", "shape", "order", "level", "point",
    "line", "page", "field", "group", "node", "port", "host", "token", "query", "result",
    "source", "target", "index", "limit", "offset", "width", "height", "depth", "scale", "angle",
    "speed", "weight", "price", "title", "label", "image", "sound", "model", "score", "rate",
    "frame", "block", "cell", "table", "row", "column", "form", "list", "map", "set",
    "tree", "root", "leaf", "branch", "stone", "water", "fire", "wind", "cloud", "rain",
    "snow", "star", "moon", "sun", "sky", "sea", "island", "hill", "road", "bridge",
    "door", "window", "wall", "floor", "room", "chair", "bed", "lamp", "clock", "mirror",
    "paper", "glass", "metal", "wood", "gold", "silver", "iron", "salt", "sugar", "bread",
    "apple", "egg", "milk", "tea", "coffee", "rice", "meat", "fish", "bird", "horse",
    "dog", "cat", "mouse", "lion", "bear", "wolf", "fox", "sheep", "cow", "pig",
    "crime", "population", "unit", "dark", "piece", "oil", "note", "plan", "task", "job",
    "game", "club", "team", "band", "song", "story", "word", "voice", "face", "hand",
    "eye", "head", "heart", "mind", "body", "blood", "skin", "hair", "foot", "arm",
    "money", "market", "bank", "trade", "tax", "law", "rule", "power", "force", "energy",
)  # fmt: skip


def partition(items: Sequence[T], split: str, *, test_every: int = 5) -> list[T]:
    """The ``split`` part of ``items``: every ``test_every``-th item is held out for "test"."""
    if split not in SPLITS:
        raise PromptError(f"Unknown split {split!r}; valid splits are {list(SPLITS)}.")
    if split == "all":
        return list(items)
    held_out = split == "test"
    return [item for i, item in enumerate(items) if (i % test_every == test_every - 1) == held_out]
