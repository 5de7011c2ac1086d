"""The byte-level BPE of the unselectable experiment (pynorm.experiments._bpe) and its offline
corpus: exact round trips, hand-checked merges, agreement with a from-scratch recount per merge,
and determinism across processes."""

from __future__ import annotations

import collections
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from pynorm.experiments import _bpe, unselectable

AWKWARD = [
    "",
    " ",
    "   \n\n\t  ",
    "trailing spaces   ",
    "a  b   c\t\td\r\ne",
    "naïve café — 日本語 🙂 ß",
    "x_y __init__ 3.14e-10 'quoted' (a, b)",
    "lone \ud800 surrogate",
]


@pytest.fixture(scope="module")
def corpus():
    return unselectable.stdlib_corpus()


@pytest.fixture(scope="module")
def bpe(corpus):
    return _bpe.train(corpus[:200_000], 600)


def test_pieces_cover_the_text():
    assert _bpe.pieces("Hello, world  42!") == ["Hello", ",", " world", " ", " 42", "!"]
    assert _bpe.pieces("a__b\n  c") == ["a", "__", "b", "\n ", " c"]
    for text in AWKWARD:
        assert "".join(_bpe.pieces(text)) == text


def test_hand_checked_merges():
    # "ab" x1, " ab" x2, " abc" x1: (a, b) 4 times, then (" ", ab) 3 times, then (" ab", c) once;
    # then no pair is left, so the vocabulary stops short of the 300 asked for
    bpe = _bpe.train("ab ab ab abc", 300)
    assert bpe.merges == ((97, 98), (32, 256), (257, 99))
    assert bpe.vocab_size == 259
    assert bpe.encode("ab abc").tolist() == [256, 258]
    assert bpe.encode("abab").tolist() == [256, 256]  # (ab, ab) is no merge
    assert bpe.encode("cab").tolist() == [99, 256]
    assert bpe.decode([258, 257, 256]) == " abc abab"


def test_ties_go_to_the_smallest_pair():
    # "ba", " ab": (" ", a), (a, b), (b, a) once each -> (32, 97) first; then (b, a) before
    # (" a", b) because 98 < 256
    assert _bpe.train("ba ab", 1000).merges == ((32, 97), (98, 97), (256, 98))


def test_overlapping_pairs_merge_left_to_right():
    bpe = _bpe.train("aaaa", 1000)
    assert bpe.merges == ((97, 97), (256, 256))
    assert bpe.encode("aaa").tolist() == [256, 97]
    assert bpe.encode("aaaaa").tolist() == [257, 97]


def test_vocab_smaller_than_the_bytes_is_refused():
    with pytest.raises(ValueError, match="at least 256"):
        _bpe.train("abc", 255)
    assert _bpe.train("abc", 256).merges == ()


def _naive_train(text, vocab_size):
    """BPE by recounting every pair of every word before each merge (the slow reference)."""
    words = collections.Counter(tuple(piece.encode("utf-8")) for piece in _bpe.pieces(text))
    merges = []
    while len(merges) < vocab_size - 256:
        counts = collections.Counter()
        for word, weight in words.items():
            for pair in zip(word, word[1:]):
                counts[pair] += weight
        if not counts:
            break
        best = max(counts, key=lambda pair: (counts[pair], -pair[0], -pair[1]))
        token = 256 + len(merges)
        merges.append(best)
        merged = collections.Counter()
        for word, weight in words.items():
            merged[tuple(_bpe._merge(list(word), best, token))] += weight
        words = merged
    return tuple(merges), words


def test_incremental_counts_match_a_full_recount(corpus):
    text = corpus[:30_000]
    merges, words = _naive_train(text, 256 + 150)
    bpe = _bpe.train(text, 256 + 150)
    assert bpe.merges == merges
    # encoding a training piece gives the tokens that training ended with
    for word in words:
        assert tuple(bpe.encode_piece(bpe.decode(word))) == word


def test_every_merge_shortens_the_training_text(corpus):
    text = corpus[:5_000]
    bpe = _bpe.train(text, 256 + 80)
    assert len(bpe.merges) == 80
    lengths = [len(_bpe.BPE(bpe.merges[:m]).encode(text)) for m in range(len(bpe.merges) + 1)]
    assert lengths[0] == len(text.encode("utf-8"))
    assert all(b < a for a, b in zip(lengths, lengths[1:]))


def test_round_trips(corpus, bpe):
    ids = bpe.encode(corpus)
    assert ids.dtype == np.int64 and ids.min() >= 0 and ids.max() < bpe.vocab_size
    assert bpe.decode(ids) == corpus
    assert len(ids) < len(corpus) / 2  # the merges learned on a seventh of it compress all of it
    for text in AWKWARD:
        assert bpe.decode(bpe.encode(text)) == text
        own = _bpe.train(text * 3, 300)  # merges learned on the awkward text itself
        assert own.decode(own.encode(text)) == text
    assert bpe.encode("").shape == (0,)


def test_training_is_deterministic_across_processes(corpus, bpe):
    assert _bpe.train(corpus[:200_000], 600) == bpe
    script = (
        "import sys; from pynorm.experiments import _bpe, unselectable; "
        "print(_bpe.train(unselectable.stdlib_corpus()[:200_000], 600).merges)"
    )
    root = pathlib.Path(unselectable.__file__).parents[2]  # this checkout, not an installed copy
    for seed in ("1", "2"):
        env = {
            **os.environ,
            "PYTHONHASHSEED": seed,
            "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
        }
        # cwd: `python -c` imports from its working directory first (a source tree without the
        # built extension, in CI), so run it where the pynorm this test imported lives
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env, cwd=root
        )
        assert out.stdout.strip() == str(bpe.merges)


def test_corpus_is_the_same_in_every_fresh_interpreter(corpus):
    unselectable.stdlib_corpus.cache_clear()  # a second build (another hash seed) from scratch
    try:
        assert unselectable.stdlib_corpus() == corpus
    finally:
        unselectable.stdlib_corpus.cache_clear()
    assert len(corpus) > 1_000_000
    assert "The base class of the class hierarchy." in corpus  # builtins' docstrings
    assert 'The "while" statement is used for repeated execution' in corpus  # pydoc_data topics


def test_corpus_ids_split_the_text_and_decode_back(corpus):
    lm = unselectable.corpus_ids("bpe", 300)
    cut = int(0.9 * len(corpus))
    bpe = unselectable.bpe_tokenizer(300)
    assert lm.vocab == bpe.vocab_size == 300 and lm.chars == len(corpus)
    assert bpe.decode(lm.train) == corpus[:cut] and bpe.decode(lm.held_out) == corpus[cut:]
    chars = unselectable.corpus_ids("char", 300)
    assert chars.vocab == len(set(corpus)) and len(chars.train) == cut and len(chars.held_out) == len(corpus) - cut
    with pytest.raises(ValueError, match="tokenizer"):
        unselectable.corpus_ids("word", 300)
