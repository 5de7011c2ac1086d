"""A byte-level byte-pair-encoding tokenizer (as GPT-2's), trained offline in pure Python.

Text is first cut into pieces by :data:`PIECE` -- a run of letters, of digits or of other
symbols, each with at most one leading space, or a run of whitespace -- and no token spans two
pieces. A piece starts as its UTF-8 bytes (tokens 0-255); merge ``i`` joins the adjacent pair
``merges[i]`` into token ``256 + i``. Training repeatedly merges the pair with the highest count
over the training text's pieces (ties: the smallest pair of ids), keeping the pair counts
current as it goes: a merge revisits only the distinct pieces that hold the pair, so its cost
is that of the pieces it changes, not of a rescan of the text. Encoding applies the merges to
each piece in training order, so the training text encodes to exactly the tokens training
ended with. Every str round-trips: lone surrogates travel as their ``surrogatepass`` bytes.
"""

from __future__ import annotations

import collections
import functools
import heapq
import re
from dataclasses import dataclass
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np

#: letters, digits, other non-space symbols (``_`` among them), each run with one optional
#: leading space; whitespace runs leave their last space to the word that follows them
PIECE = re.compile(r" ?[^\W\d_]+| ?\d+| ?(?:[^\w\s]|_)+|\s+(?!\S)|\s+")
BYTES = 256
_CODEC = ("utf-8", "surrogatepass")


def pieces(text: str) -> List[str]:
    """``text`` cut into the pieces that tokens never cross (they concatenate to ``text``)."""
    return PIECE.findall(text)


def _merge(word: List[int], pair: Tuple[int, int], token: int) -> List[int]:
    """``word`` with every occurrence of ``pair``, left to right, replaced by ``token``."""
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == pair[0] and word[i + 1] == pair[1]:
            out.append(token)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


@dataclass(frozen=True)
class BPE:
    """A trained tokenizer: ``merges[i]`` is the pair of ids that token ``256 + i`` joins."""

    merges: Tuple[Tuple[int, int], ...]

    @property
    def vocab_size(self) -> int:
        """Number of token ids: the 256 bytes and one per merge."""
        return BYTES + len(self.merges)

    @functools.cached_property
    def _ranks(self) -> Dict[Tuple[int, int], int]:
        return {pair: BYTES + i for i, pair in enumerate(self.merges)}

    @functools.cached_property
    def _bytes(self) -> List[bytes]:
        table = [bytes([b]) for b in range(BYTES)]
        table.extend(table[a] + table[b] for a, b in self.merges)
        return table

    def encode_piece(self, piece: str) -> List[int]:
        """The tokens of one piece: its bytes, then, while any adjacent pair is a merge, the
        earliest such merge applied everywhere in it."""
        ranks, word = self._ranks, list(piece.encode(*_CODEC))
        while len(word) > 1:
            token = min(ranks.get(pair, np.inf) for pair in zip(word, word[1:]))
            if token == np.inf:
                break
            word = _merge(word, self.merges[token - BYTES], token)
        return word

    def encode(self, text: str) -> np.ndarray:
        """The token ids of ``text`` (int64), each distinct piece encoded once."""
        parts = pieces(text)
        codes = {piece: self.encode_piece(piece) for piece in dict.fromkeys(parts)}
        return np.array([t for piece in parts for t in codes[piece]], dtype=np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        """The text of token ids: the inverse of :meth:`encode` (``ids`` must end on whole
        characters, as any output of ``encode`` does)."""
        table = self._bytes
        return b"".join(table[int(i)] for i in ids).decode(*_CODEC)


def train(text: str, vocab_size: int) -> BPE:
    """The BPE of ``vocab_size`` ids (256 bytes plus merges) trained on ``text``; fewer when
    the text runs out of pairs. Deterministic: the counts are exact integers and ties go to the
    smallest pair of ids."""
    if vocab_size < BYTES:
        raise ValueError(f"vocab_size must be at least {BYTES} (the bytes), got {vocab_size}")
    counted = collections.Counter(pieces(text))
    words = [list(piece.encode(*_CODEC)) for piece in counted]
    weights = list(counted.values())
    counts: Dict[Tuple[int, int], int] = collections.defaultdict(int)
    holders: Dict[Tuple[int, int], set] = collections.defaultdict(set)  # pair -> words that held it
    for index, (word, weight) in enumerate(zip(words, weights)):
        _count_pairs(word, weight, index, counts, holders)
    heap = [(-count, pair) for pair, count in counts.items()]
    heapq.heapify(heap)
    merges: List[Tuple[int, int]] = []
    while heap and len(merges) < vocab_size - BYTES:
        count, pair = heapq.heappop(heap)
        if counts.get(pair) != -count:  # an entry from before the pair's count last changed
            continue
        token = BYTES + len(merges)
        merges.append(pair)
        changed = set()
        for index in holders.pop(pair):
            word, weight = words[index], weights[index]
            merged = _merge(word, pair, token)
            if len(merged) == len(word):  # an earlier merge took the pair out of this word
                continue
            changed.update(_count_pairs(word, -weight, index, counts, None))
            changed.update(_count_pairs(merged, weight, index, counts, holders))
            words[index] = merged
        for other in changed:
            if counts[other] > 0:
                heapq.heappush(heap, (-counts[other], other))
            else:
                del counts[other]
    return BPE(tuple(merges))


def _count_pairs(
    word: Sequence[int],
    weight: int,
    index: int,
    counts: Dict[Tuple[int, int], int],
    holders,
) -> List[Tuple[int, int]]:
    """Adds ``weight`` to the count of each adjacent pair of ``word`` (and, with ``holders``,
    records word ``index`` as holding it); returns the pairs."""
    pairs = list(zip(word, word[1:]))
    for pair in pairs:
        counts[pair] += weight
        if holders is not None:
            holders[pair].add(index)
    return pairs
