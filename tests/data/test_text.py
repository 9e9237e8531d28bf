"""The character corpus from ``pydoc_data.topics``: normalisation, vocabulary, chunking, positional split."""

import pytest
import torch

from dulab.data import load_dataset, text


def test_corpus_is_the_sorted_topics_with_non_ascii_replaced():
    from pydoc_data.topics import topics

    raw = "".join(topics[k] for k in sorted(topics))
    corpus = text.corpus()
    assert len(corpus) == len(raw)
    assert all(c == "\n" or 32 <= ord(c) < 127 for c in corpus)
    for r, c in zip(raw[:20000], corpus[:20000]):
        assert c == r or (c == text.REPLACEMENT and not (r == "\n" or 32 <= ord(r) < 127))


def test_vocab_is_sorted_unique_characters_and_independent_of_max_chars():
    ds = load_dataset("text", max_chars=5000)
    vocab = ds.info["vocab"]
    assert vocab == "".join(sorted(set(text.corpus())))
    assert ds.info["vocab"] == load_dataset("text").info["vocab"]
    assert ds.spec.num_levels == len(vocab)


def test_chunks_are_consecutive_and_split_by_position():
    train = text.text(seq_len=50, max_chars=10_000)
    test = text.text("test", seq_len=50, max_chars=10_000)
    assert len(train) + len(test) == 200 and len(test) == 20  # 10000 // 50 chunks, the last 10% are test
    vocab = train.info["vocab"]
    joined = "".join(text.decode(row, vocab) for row in torch.cat([train.x, test.x]))
    assert joined == text.corpus()[:10_000]
    assert text.decode(test.x[0], vocab) == text.corpus()[180 * 50 : 181 * 50]


def test_default_corpus_size_is_bounded():
    ds, ts = load_dataset("text"), load_dataset("text", split="test")
    n = len(ds) + len(ts)
    assert n == min(text.DEFAULT_MAX_CHARS, len(text.corpus())) // 64
    assert ds.x.dtype == torch.int64 and int(ds.x.max()) < ds.spec.num_levels


def test_encode_decode_round_trip_and_replacement():
    vocab = text.corpus_vocab()
    s = "def f(x):\n    return x + 1  # ok"
    codes = text.encode(s, vocab)
    assert codes.dtype == torch.int64 and codes.shape == (len(s),)
    assert text.decode(codes, vocab) == s
    assert text.decode(text.encode("caf\u00e9", vocab), vocab) == "caf" + text.REPLACEMENT


def test_encode_and_decode_reject_what_they_cannot_map():
    with pytest.raises(ValueError, match="vocabulary"):
        text.encode("xyz", "abc")
    with pytest.raises(ValueError, match="one sequence"):
        text.decode(torch.zeros(2, 3, dtype=torch.long), "abc")
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        text.decode(torch.tensor([0, 3]), "abc")


@pytest.mark.parametrize("options", [{"seq_len": 0}, {"max_chars": 0}, {"seq_len": 64, "max_chars": 100}])
def test_invalid_options_raise_value_error(options):
    with pytest.raises(ValueError):
        text.text(**options)
