"""Captions for the data set, in English and Chinese, written two ways: through the scheduler's own
prompt templates (`scheduler/templates/{en,zh}.toml`, read here, not copied), so that a prompt the
scheduler makes is in distribution, and as the short plain phrases people type ("red striped dress").

The template syntax is the scheduler's (`scheduler/src/prompts/template.rs`): `{slot}` is replaced by
a value, and a `[...]` fragment is kept only when every slot inside it has a value.
"""

import random
import re
import tomllib
from functools import cache
from pathlib import Path

from . import vocab

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "scheduler" / "templates"
LANGUAGES = ("en", "zh")

_FRAGMENT = re.compile(r"\[([^\[\]]*)\]")
_SLOT = re.compile(r"\{([a-z]+)\}")


@cache
def templates(language: str) -> dict:
    with open(TEMPLATES_DIR / f"{language}.toml", "rb") as file:
        return tomllib.load(file)


def render(template: str, values: dict[str, str | None]) -> str:
    """Fills `template` as the scheduler does: fragments whose slots are all filled stay, others go."""

    def fragment(match: re.Match) -> str:
        inner = match.group(1)
        if all(values.get(slot) for slot in _SLOT.findall(inner)):
            return inner
        return ""

    kept = _FRAGMENT.sub(fragment, template)
    return _SLOT.sub(lambda m: values[m.group(1)], kept)


def _word(words: tuple[str, ...], rng: random.Random) -> str:
    # The first word is the one people use most; the others appear often enough to be learnt.
    return words[0] if rng.random() < 0.6 or len(words) == 1 else rng.choice(words[1:])


def _words(entry, language: str) -> tuple[str, ...]:
    if isinstance(entry, vocab.Colour):
        return (entry.name,) if language == "en" else entry.zh
    return entry.en if language == "en" else entry.zh


def _item_word(item: vocab.Item, fabric: str, language: str, rng: random.Random) -> str:
    # "jeans" means denim trousers; other trousers are not called jeans.
    words = _words(item, language)
    if item.name == "trousers":
        jeans = "jeans" if language == "en" else "牛仔裤"
        if fabric == "denim" and rng.random() < 0.5:
            return jeans
        words = tuple(w for w in words if w != jeans)
    return _word(words, rng)


def fashion_caption(record: dict, language: str, rng: random.Random) -> str:
    """A caption for a fashion record: item, colour, pattern and fabric words, some left out at random."""
    item = vocab.ITEMS[vocab.ITEM_NAMES.index(record["item"])]
    colour = vocab.COLOURS[vocab.COLOUR_NAMES.index(record["colour"])]
    pattern = vocab.PATTERNS[vocab.PATTERN_NAMES.index(record["pattern"])]
    fabric = vocab.FABRICS[vocab.FABRIC_NAMES.index(record["fabric"])]

    category = _item_word(item, fabric.name, language, rng)
    colour_word = _word(_words(colour, language), rng) if rng.random() < 0.92 else None
    # A pattern other than solid is almost always named, so a caption without a pattern word means solid.
    named_pattern = rng.random() < (0.92 if pattern.name != "solid" else 0.25)
    pattern_word = _word(_words(pattern, language), rng) if named_pattern else None
    fabric_word = _word(_words(fabric, language), rng) if rng.random() < 0.6 else None

    if rng.random() < 0.6:
        table = templates(language)
        trend = _word(_words(rng.choice(vocab.TRENDS), language), rng) if rng.random() < 0.5 else None
        # The templates have no pattern slot; the style slot carries it ("striped red dress", "条纹风格").
        style = pattern_word
        if style is None and rng.random() < 0.4:
            style = _word(_words(rng.choice(vocab.PHOTO_STYLES), language), rng)
        values = {"category": category, "color": colour_word, "fabric": fabric_word, "trend": trend, "style": style}
        sentence = render(rng.choice(table["fashion"]["sentences"]), values)
        return render(rng.choice(table["frames"]), {"subject": sentence})
    words = [w for w in (colour_word, pattern_word, fabric_word) if w] + [category]
    if language == "zh":
        return "".join(words)
    phrase = " ".join(words)
    return f"a {phrase}" if rng.random() < 0.3 else phrase


def dish_caption(record: dict, language: str, rng: random.Random) -> str:
    """A caption for a dish record: one of the dish's names, framed like the scheduler's menu prompts."""
    dish = vocab.DISHES[vocab.DISH_NAMES.index(record["dish"])]
    name = _word(_words(dish, language), rng)
    if rng.random() < 0.65:
        table = templates(language)
        count = rng.choice((0, 0, 1, 2)) if dish.keywords else 0
        keywords = rng.sample(dish.keywords, min(count, len(dish.keywords)))
        if language == "zh":
            keywords = [vocab.DISH_KEYWORDS_ZH[k] for k in keywords]
        joined = table["cuisine"]["keyword_separator"].join(keywords) or None
        sentence = render(rng.choice(table["cuisine"]["sentences"]), {"dish": name, "keywords": joined})
        return render(rng.choice(table["frames"]), {"subject": sentence})
    if language == "en" and rng.random() < 0.3:
        return f"a plate of {name}"
    return name


def caption(record: dict, language: str, rng: random.Random) -> str:
    if record["kind"] == "fashion":
        return fashion_caption(record, language, rng)
    return dish_caption(record, language, rng)
