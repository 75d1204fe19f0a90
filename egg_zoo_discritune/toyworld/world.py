"""Procedurally drawn scenes (PIL only, deterministic per seed) with captions in two styles.

A scene holds one to three objects, each a shape with a colour and a size, in a cell of a 3 x 3 grid,
on a plain background. Its *descriptive* caption (COCO-like) names every object's size, colour, shape
and place; its *alt-text* captions (Conceptual-Captions-like) are vague ("digital art of geometric
shapes") and only now and then mention one attribute. The out-of-domain family draws the same
objects on dark, noisy backgrounds: the retriever (like CLIP, trained on the whole web) has seen that
family, the captioners (like ClipCap, trained on one dataset) have not.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

COLOURS = {"red": (215, 40, 40), "green": (40, 165, 60), "blue": (45, 85, 225), "yellow": (235, 205, 40),
           "purple": (150, 60, 195), "orange": (245, 135, 30)}
SHAPES = ("circle", "square", "triangle", "diamond", "cross")
SIZES = {"small": 0.28, "large": 0.45}  # half-width as a share of a grid cell
ROWS = ("top", "middle", "bottom")
COLUMNS = ("left", "center", "right")
NUMBERS = {1: "one", 2: "two", 3: "three"}
IMAGE_SIZE = 48


@dataclass(frozen=True)
class Thing:
    shape: str
    colour: str
    size: str
    row: int
    column: int

    @property
    def place(self) -> str:
        if (self.row, self.column) == (1, 1):
            return "in the center"
        if self.row == 1:
            return f"on the {COLUMNS[self.column]}"
        if self.column == 1:
            return f"at the {ROWS[self.row]}"
        return f"at the {ROWS[self.row]} {COLUMNS[self.column]}"


@dataclass(frozen=True)
class Scene:
    things: tuple[Thing, ...]
    background: tuple[int, int, int]
    noise: int  # amplitude of the background noise (0 in domain)
    seed: int


def sample_scene(rng: random.Random, out_of_domain: bool = False) -> Scene:
    cells = rng.sample([(r, c) for r in range(3) for c in range(3)], rng.randint(1, 3))
    things = tuple(sorted((Thing(rng.choice(SHAPES), rng.choice(list(COLOURS)), rng.choice(list(SIZES)), r, c)
                           for r, c in cells), key=lambda t: (t.row, t.column)))
    if out_of_domain:
        level = rng.randint(25, 70)
        return Scene(things, (level, level, level + rng.randint(0, 20)), 25, rng.randrange(1 << 30))
    level = rng.randint(170, 225)
    return Scene(things, (level, level - rng.randint(0, 10), level - rng.randint(0, 15)), 0, rng.randrange(1 << 30))


def draw(scene: Scene, size: int = IMAGE_SIZE) -> Image.Image:
    image = Image.new("RGB", (size, size), scene.background)
    if scene.noise:
        rng = random.Random(scene.seed)
        pixels = image.load()
        for x in range(size):
            for y in range(size):
                n = rng.randint(-scene.noise, scene.noise)
                pixels[x, y] = tuple(max(0, min(255, v + n)) for v in scene.background)
    canvas = ImageDraw.Draw(image)
    cell = size / 3
    for thing in scene.things:
        cx, cy, h = (thing.column + 0.5) * cell, (thing.row + 0.5) * cell, SIZES[thing.size] * cell
        fill = COLOURS[thing.colour]
        if thing.shape == "circle":
            canvas.ellipse((cx - h, cy - h, cx + h, cy + h), fill=fill)
        elif thing.shape == "square":
            canvas.rectangle((cx - h, cy - h, cx + h, cy + h), fill=fill)
        elif thing.shape == "triangle":
            canvas.polygon([(cx, cy - h), (cx - h, cy + h), (cx + h, cy + h)], fill=fill)
        elif thing.shape == "diamond":
            canvas.polygon([(cx, cy - h), (cx + h, cy), (cx, cy + h), (cx - h, cy)], fill=fill)
        else:
            w = h / 2.5
            canvas.rectangle((cx - h, cy - w, cx + h, cy + w), fill=fill)
            canvas.rectangle((cx - w, cy - h, cx + w, cy + h), fill=fill)
    return image


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def describe(thing: Thing) -> str:
    return f"a {thing.size} {thing.colour} {thing.shape} {thing.place}"


def descriptive_caption(scene: Scene) -> str:
    """Says what is there, object by object, top left to bottom right."""
    return " and ".join(describe(t) for t in scene.things) + "."


GENERIC_ALT_TEXTS = (
    "digital art of geometric shapes.", "an abstract illustration.", "a simple drawing of shapes.",
    "shapes on a plain background.", "a minimalist picture.", "clip art of simple shapes.",
    "an abstract composition.", "geometric shapes in a flat style.",
)


def alt_text_caption(scene: Scene, rng: random.Random, mention_rate: float = 0.35) -> str:
    """Vague and generic; with probability ``mention_rate`` it names one attribute of one object."""
    if rng.random() >= mention_rate:
        if rng.random() < 0.25:
            n = len(scene.things)
            return f"a picture with {NUMBERS[n]} shape{'s' if n > 1 else ''}."
        return rng.choice(GENERIC_ALT_TEXTS)
    thing = rng.choice(scene.things)
    return rng.choice((
        f"{article(thing.colour)} {thing.colour} shape on a plain background.",
        f"an illustration of a {thing.shape}.",
        f"digital art with a {thing.colour} {thing.shape}.",
        f"an abstract picture with something {thing.colour}.",
    ))
