"""Run with: python3 -m unittest discover -s training/tests (stdlib only; part of `make test`).

The data set draws every category and colour the knowledge graph knows, under the words the graph
and its aliases use, and its captions follow the scheduler's templates."""

import random
import sys
import unittest
from pathlib import Path

TRAINING = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TRAINING))

from rapid_training import captions, vocab  # noqa: E402

GRAPH = TRAINING.parent / "knowledge" / "graphs"


def triples():
    for line in (GRAPH / "domain.tsv").read_text().splitlines():
        if line and not line.startswith("#"):
            yield line.split("\t")


def below(root: str) -> set[str]:
    """Every entity that is_a `root`, directly or through others."""
    parents: dict[str, set[str]] = {}
    for head, relation, tail in triples():
        if relation == "is_a":
            parents.setdefault(head, set()).add(tail)
    found, changed = set(), True
    while changed:
        changed = False
        for entity, ups in parents.items():
            if entity not in found and (root in ups or ups & found):
                found.add(entity)
                changed = True
    return found


def aliases_of(entity: str) -> set[str]:
    names = set()
    for line in (GRAPH / "aliases.tsv").read_text().splitlines():
        if line and not line.startswith("#"):
            alias, target = line.split("\t")
            if target == entity:
                names.add(alias)
    return names


class VocabularyCoversTheGraph(unittest.TestCase):
    def test_every_category_word_names_a_drawn_item(self):
        item_words = {w for item in vocab.ITEMS for w in item.en + item.zh}
        for category in sorted(below("clothing") | below("accessory")):
            with self.subTest(category=category):
                self.assertIn(category, item_words)
                chinese = {a for a in aliases_of(category) if not a.isascii()}
                self.assertTrue(chinese & item_words or not chinese, f"{category}: none of {chinese} is drawn")

    def test_every_colour_word_names_a_drawn_colour(self):
        colours = {c.name: c for c in vocab.COLOURS}
        for colour in sorted(below("color")):
            with self.subTest(colour=colour):
                self.assertIn(colour, colours)
                chinese = {a for a in aliases_of(colour) if not a.isascii()}
                self.assertTrue(chinese <= set(colours[colour].zh), f"{colour}: {chinese} not all drawn")

    def test_names_are_unique_per_class(self):
        for table in (vocab.ITEM_NAMES, vocab.COLOUR_NAMES, vocab.PATTERN_NAMES, vocab.FABRIC_NAMES, vocab.DISH_NAMES):
            self.assertEqual(len(table), len(set(table)))
        self.assertGreaterEqual(len(vocab.ITEMS), 12)
        self.assertGreaterEqual(len(vocab.COLOURS), 12)

    def test_every_dish_of_the_graph_is_drawn(self):
        dish_words = {w for dish in vocab.DISHES for w in dish.en + dish.zh}
        kinds = {tail for _, relation, tail in triples() if relation == "is_a"}
        # Leaves only: "dessert" and "noodles" are kinds of dish, drawn through their members.
        for dish in sorted(below("dish") - kinds):
            with self.subTest(dish=dish):
                self.assertIn(dish, dish_words)


class CaptionsFollowTheSchedulerTemplates(unittest.TestCase):
    def test_rendering_matches_the_schedulers_rules(self):
        # The same expectations as scheduler/src/prompts/fashion.rs's tests.
        sentence = captions.templates("en")["fashion"]["sentences"][0]
        self.assertEqual(captions.render(sentence, {"category": "slip dress"}), "slip dress")
        self.assertEqual(
            captions.render(sentence, {"category": "dress", "color": "red", "fabric": "silk", "trend": "retro"}),
            "red dress made of silk, retro trend",
        )
        self.assertEqual(captions.render("the photo of {subject}", {"subject": "dress"}), "the photo of dress")

    def test_captions_name_what_is_drawn_without_artifacts(self):
        rng = random.Random(0)
        record = {"kind": "fashion", "item": "evening dress", "colour": "crimson", "pattern": "striped", "fabric": "silk"}
        for _ in range(200):
            for language in captions.LANGUAGES:
                caption = captions.caption(record, language, rng)
                for artifact in ("  ", "{", "}", "[", "]", " ,", "的的"):
                    self.assertNotIn(artifact, caption)
                self.assertTrue(any(w in caption for w in ("evening dress", "gown", "晚礼服")), caption)
        dish = {"kind": "dish", "dish": "takeout-box"}
        zh = [captions.caption(dish, "zh", rng) for _ in range(50)]
        self.assertTrue(any("宫保鸡丁" in c for c in zh))
        self.assertTrue(all(c.isascii() is False for c in zh))


if __name__ == "__main__":
    unittest.main()
