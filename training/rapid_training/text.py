"""The text side: a BERT WordPiece vocabulary built from the caption corpus (English and Chinese), a
small BertModel, and the knowledge graph's entity vectors added to the token embeddings of the
entities a prompt names (paper §3.1.1, e = e_txt + e_kg), exactly where the worker adds them.

The encoder sees what the worker feeds it: `input_ids` padded to `model_max_length` with no
attention mask, `[CLS] … [SEP]` around the text, and `entity_embeds` added before the position
embeddings (BertModel's `inputs_embeds`). Entity linking follows `worker/engine/src/knowledge/linker.rs`:
leftmost-longest over entity names and aliases, ASCII case ignored, English matches on word
boundaries, and every token whose span overlaps a mention gets the entity's vector.
"""

import random
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from tokenizers import BertWordPieceTokenizer
from transformers import BertConfig, BertModel

from . import captions, vocab
from .checkpoint import TRAINING_DIR, StageError

REPO = TRAINING_DIR.parent
GRAPH_ALIASES = REPO / "knowledge" / "graphs" / "aliases.tsv"
TRANSE_DIR = TRAINING_DIR / "weights" / "transe"
TOKENIZER_DIR = TRAINING_DIR / "weights" / "tokenizer"
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MAX_LENGTH = 64
HIDDEN = 128
ENCODER_CONFIG = dict(
    hidden_size=HIDDEN,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=4 * HIDDEN,
    max_position_embeddings=MAX_LENGTH,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    type_vocab_size=2,
    pad_token_id=0,
)


def corpus(records: list[dict], seed: int, per_record: int = 3):
    """Caption text to learn the vocabulary from: several captions per training record in both
    languages, plus every word the vocabulary and the knowledge graph know."""
    rng = random.Random(seed)
    for record in records:
        for _ in range(per_record):
            for language in captions.LANGUAGES:
                yield captions.caption(record, language, rng)
    words = [w for table in (vocab.ITEMS, vocab.PATTERNS, vocab.FABRICS, vocab.TRENDS, vocab.PHOTO_STYLES, vocab.DISHES)
             for entry in table for w in entry.en + entry.zh]
    words += [c.name for c in vocab.COLOURS] + [z for c in vocab.COLOURS for z in c.zh]
    words += list(vocab.DISH_KEYWORDS_ZH) + list(vocab.DISH_KEYWORDS_ZH.values())
    for line in GRAPH_ALIASES.read_text().splitlines():
        if line and not line.startswith("#"):
            words.extend(line.split("\t"))
    yield from words


def build_tokenizer(records: list[dict], seed: int, out: Path = TOKENIZER_DIR) -> Path:
    """Trains the WordPiece vocabulary and writes the tokenizer folder the worker reads."""
    tokenizer = BertWordPieceTokenizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)
    tokenizer.train_from_iterator(
        corpus(records, seed), vocab_size=3000, min_frequency=1, limit_alphabet=2000, special_tokens=SPECIAL_TOKENS
    )
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_model(str(out))
    config = {
        "cls_token": "[CLS]", "do_basic_tokenize": True, "do_lower_case": True, "mask_token": "[MASK]",
        "model_max_length": MAX_LENGTH, "never_split": None, "pad_token": "[PAD]", "sep_token": "[SEP]",
        "strip_accents": None, "tokenize_chinese_chars": True, "tokenizer_class": "BertTokenizer", "unk_token": "[UNK]",
    }
    import json

    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    special = {k: config[k] for k in ("cls_token", "mask_token", "pad_token", "sep_token", "unk_token")}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    return out


class Tokenizer:
    """The committed WordPiece tokenizer, padding and truncating as the worker does."""

    def __init__(self, directory: Path = TOKENIZER_DIR):
        path = directory / "vocab.txt"
        if not path.exists():
            raise StageError(f"{path}: missing; build it with `make -C training tokenizer`")
        self.tokenizer = BertWordPieceTokenizer(str(path), clean_text=True, handle_chinese_chars=True,
                                                strip_accents=None, lowercase=True)
        self.tokenizer.enable_truncation(MAX_LENGTH)
        self.tokenizer.enable_padding(length=MAX_LENGTH, pad_id=0, pad_token="[PAD]")
        self.vocab_size = self.tokenizer.get_vocab_size()

    def __call__(self, texts: list[str]):
        return self.tokenizer.encode_batch(texts)



class Knowledge:
    """The TransE entity vectors and the entity linker over names and aliases."""

    def __init__(self, transe_dir: Path = TRANSE_DIR):
        names_path, vectors_path = transe_dir / "entities.txt", transe_dir / "entity_vectors.npy"
        if not names_path.exists() or not vectors_path.exists():
            raise StageError(f"{transe_dir}: no TransE output; make it with `make -C training transe`")
        self.entities = [line.strip() for line in names_path.read_text().splitlines()]
        self.vectors = torch.from_numpy(np.load(vectors_path).astype(np.float32))
        index = {name: i for i, name in enumerate(self.entities)}
        patterns = [(name, i) for i, name in enumerate(self.entities)]
        for line in GRAPH_ALIASES.read_text().splitlines():
            if line and not line.startswith("#"):
                alias, entity = line.split("\t")
                if entity.strip() in index:
                    patterns.append((alias.strip(), index[entity.strip()]))
        self.patterns = sorted(patterns, key=lambda p: -len(p[0]))

    @cached_property
    def _by_first(self) -> dict[str, list[tuple[str, int]]]:
        table: dict[str, list[tuple[str, int]]] = {}
        for text, entity in self.patterns:
            table.setdefault(text[0].lower(), []).append((text.lower(), entity))
        return table

    def mentions(self, text: str) -> list[tuple[int, int, int]]:
        """(start, end, entity) in characters, leftmost-longest, English on word boundaries."""
        lowered = text.lower()
        found, at = [], 0
        while at < len(text):
            # Like Aho-Corasick's leftmost-longest search in the worker: the longest pattern here wins,
            # and one that fails the word-boundary check is skipped over, not retried shorter.
            match = next(
                ((at, at + len(pattern), entity) for pattern, entity in self._by_first.get(lowered[at], ())
                 if lowered.startswith(pattern, at)),
                None,
            )
            if match is None:
                at += 1
                continue
            if _on_word_boundaries(text, match[0], match[1]):
                found.append(match)
            at = match[1]
        return found


def _on_word_boundaries(text: str, start: int, end: int) -> bool:
    def word(c: str | None) -> bool:
        return c is not None and c.isascii() and c.isalnum()

    before = text[start - 1] if start > 0 else None
    after = text[end] if end < len(text) else None
    return not (word(text[start]) and word(before)) and not (word(text[end - 1]) and word(after))


class TextEncoder(torch.nn.Module):
    """BertModel plus the trained projection of TransE vectors into its width."""

    def __init__(self, vocab_size: int, entity_dim: int):
        super().__init__()
        self.bert = BertModel(BertConfig(vocab_size=vocab_size, **ENCODER_CONFIG), add_pooling_layer=False)
        self.projection = torch.nn.Linear(entity_dim, HIDDEN, bias=False)
        torch.nn.init.normal_(self.projection.weight, std=0.02)

    def forward(self, input_ids: torch.Tensor, entity_vectors: torch.Tensor) -> torch.Tensor:
        """`entity_vectors` [B, L, entity_dim]: each token's TransE vector, zero where none."""
        embeds = self.bert.embeddings.word_embeddings(input_ids) + self.projection(entity_vectors)
        return self.bert(inputs_embeds=embeds).last_hidden_state


def entity_vectors(encodings, texts: list[str], knowledge: Knowledge | None, dim: int) -> torch.Tensor:
    """[B, L, dim]: the TransE vector of the entity each token's span overlaps, zero elsewhere."""
    out = torch.zeros(len(texts), MAX_LENGTH, dim)
    if knowledge is None:
        return out
    for row, (encoding, text) in enumerate(zip(encodings, texts)):
        for start, end, entity in knowledge.mentions(text):
            for token, (s, e) in enumerate(encoding.offsets):
                special = encoding.special_tokens_mask[token]
                if not special and s < end and e > start:
                    out[row, token] += knowledge.vectors[entity]
    return out


def main() -> None:
    """Builds the committed tokenizer from the training split's captions (deterministic for the seed)."""
    import sys

    from . import data

    try:
        out = build_tokenizer(data.records("train"), seed=0)
    except StageError as error:
        sys.exit(f"error: {error}")
    tokenizer = Tokenizer(out)
    print(f"wrote {out}: {tokenizer.vocab_size} tokens", file=sys.stderr)


if __name__ == "__main__":
    main()
