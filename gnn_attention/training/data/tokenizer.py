"""Character- and word-level tokenisers built from a training split, stored as plain JSON data.

Notation: V = vocabulary size; ids 0..3 are the special tokens ``<pad>``, ``<bos>``, ``<eos>``,
``<unk>`` in that order, then the training symbols sorted (so the vocabulary is a pure function of
the training split and does not depend on the order of the pairs).

Levels: ``"char"`` splits a text into its characters and joins them back with ``""``; ``"word"``
splits on whitespace and joins with one space. Decoding inverts encoding exactly for texts whose
symbols are all in the vocabulary (word level: texts with single spaces and no leading/trailing
space, which is how every task writes them).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Sequence

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
LEVELS = ("char", "word")


@dataclass(frozen=True)
class Tokenizer:
    """A fixed vocabulary at one level.

    Attributes:
        level: ``"char"`` or ``"word"``.
        vocab: the symbols by id, specials first.
    """

    level: str
    vocab: tuple

    def __post_init__(self):
        if self.level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {self.level!r}")
        if tuple(self.vocab[:len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"vocab must start with the special tokens {SPECIALS}")
        if len(set(self.vocab)) != len(self.vocab):
            raise ValueError("vocab has duplicate symbols")
        object.__setattr__(self, "_index", {s: i for i, s in enumerate(self.vocab)})

    pad_id, bos_id, eos_id, unk_id = PAD, BOS, EOS, UNK

    @classmethod
    def build(cls, texts: Iterable[str], level: str) -> "Tokenizer":
        """The vocabulary of ``texts`` (a training split) at ``level``."""
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
        symbols = set()
        for text in texts:
            symbols.update(_split(text, level))
        clash = symbols & set(SPECIALS)
        if clash:
            raise ValueError(f"texts contain special token spellings {sorted(clash)}")
        return cls(level, SPECIALS + tuple(sorted(symbols)))

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> List[int]:
        """Symbol ids of ``text`` (no BOS/EOS; unknown symbols map to ``<unk>``)."""
        return [self._index.get(s, UNK) for s in _split(text, self.level)]

    def unknown(self, text: str) -> List[str]:
        """The symbols of ``text`` that are not in the vocabulary (for clear user errors)."""
        return [s for s in _split(text, self.level) if s not in self._index]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``: stops at the first ``<eos>``, drops ``<pad>``/``<bos>``, keeps
        ``<unk>`` visible."""
        out = []
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if i in (PAD, BOS):
                continue
            if not 0 <= i < len(self.vocab):
                raise ValueError(f"token id {i} is outside the vocabulary of size {len(self)}")
            out.append(self.vocab[i])
        return ("" if self.level == "char" else " ").join(out)

    def to_dict(self) -> Dict[str, object]:
        """Plain JSON-able data (stored in checkpoints, loadable with ``weights_only=True``)."""
        return {"level": self.level, "vocab": list(self.vocab)}

    @classmethod
    def from_dict(cls, data: Dict[str, object]) -> "Tokenizer":
        try:
            return cls(str(data["level"]), tuple(data["vocab"]))
        except (KeyError, TypeError) as err:
            raise ValueError(f"not a tokenizer description: {err}") from err


def _split(text: str, level: str) -> List[str]:
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return list(text) if level == "char" else text.split()
