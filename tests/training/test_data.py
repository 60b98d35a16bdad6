"""Tasks, splits, tokenisers and batching (gnn_attention.data)."""
import json

import pytest
import torch

from gnn_attention.training.data import (
    BOS,
    EOS,
    IGNORE,
    PAD,
    BatchStream,
    Tokenizer,
    collate,
    encode_pairs,
    english_words,
    load_task,
    split_of,
)


@pytest.fixture(scope="module")
def en_de():
    return load_task("en-de", max_number=999)


def test_number_pairs_hand_checked(en_de):
    pairs = dict(en_de.train + en_de.val + en_de.test)
    assert pairs["forty-two"] == "zweiundvierzig"  # German puts the units before the tens
    assert pairs["three hundred forty-two"] == "dreihundertzweiundvierzig"
    assert english_words(2342) == "two thousand three hundred forty-two"
    digits = dict(sum((load_task("digits-en", max_number=120).split(s) for s in
                       ("train", "val", "test")), []))
    assert digits["101"] == "one hundred one" and digits["0"] == "zero"


def test_dates_pair_hand_checked():
    data = load_task("dates-de", first_year=2019, last_year=2019)
    pairs = dict(data.train + data.val + data.test)
    targets = {t for _, t in pairs.items()}
    assert "3. März 2019" in targets
    src_for = {t: s for s, t in pairs.items()}
    assert src_for["3. März 2019"] in ("3/3/19", "Mar 3, 2019", "March 3, 2019",
                                      "Sunday, March 3, 2019")
    assert len(pairs) == 365


@pytest.mark.parametrize("name,params", [("en-de", {"max_number": 999}),
                                         ("reverse", {"count": 3000})])
def test_splits_disjoint_deterministic_and_sized(name, params):
    a, b = load_task(name, **params), load_task(name, **params)
    assert a.train == b.train and a.test == b.test and a.val == b.val
    sources = [set(s for s, _ in a.split(x)) for x in ("train", "val", "test")]
    assert not (sources[0] & sources[1]) and not (sources[0] & sources[2])
    assert not (sources[1] & sources[2])
    n = sum(len(x) for x in sources)
    assert 0.02 < len(sources[2]) / n < 0.09  # about 5 % held out for test


def test_held_out_numbers_are_the_same_across_languages():
    de, fr = load_task("en-de", max_number=500), load_task("en-fr", max_number=500)
    assert [s for s, _ in de.test] == [s for s, _ in fr.test]
    assert split_of("numbers", "42") == split_of("numbers", "42")


def test_symbol_tasks_are_what_they_say():
    for name, op in [("copy", lambda s: s), ("reverse", lambda s: s[::-1]),
                     ("sort", lambda s: "".join(sorted(s)))]:
        data = load_task(name, count=200)
        assert all(t == op(s) for s, t in data.train + data.test)


def test_bad_task_arguments_are_rejected():
    with pytest.raises(ValueError, match="unknown task"):
        load_task("klingon")
    with pytest.raises(ValueError, match="no parameter"):
        load_task("reverse", max_number=3)
    with pytest.raises(ValueError, match="empty"):
        load_task("en-de", max_number=3)


def test_tokenizer_roundtrip_and_json(en_de):
    src = Tokenizer.build([s for s, _ in en_de.train], "word")
    tgt = Tokenizer.build([t for _, t in en_de.train], "char")
    for s, t in en_de.test:
        assert src.decode(src.encode(s)) == s and tgt.decode(tgt.encode(t)) == t
    again = Tokenizer.from_dict(json.loads(json.dumps(tgt.to_dict())))
    assert again == tgt and again.encode("zwei") == tgt.encode("zwei")
    assert tgt.vocab[:4] == ("<pad>", "<bos>", "<eos>", "<unk>")
    assert tgt.decode(tgt.encode("zw") + [EOS] + tgt.encode("ei")) == "zw"  # stops at EOS
    assert src.unknown("forty-two gazillion") == ["gazillion"]
    with pytest.raises(ValueError, match="level"):
        Tokenizer.build(["a"], "byte")


def test_collate_shifts_and_pads():
    batch = collate([([5, 6, 7], [8, 9]), ([5], [8, 9, 10, 11])])
    assert batch.src.tolist() == [[5, 6, 7], [5, PAD, PAD]]
    assert batch.src_lengths.tolist() == [3, 1] and batch.tgt_lengths.tolist() == [3, 5]
    assert batch.tgt_in.tolist() == [[BOS, 8, 9, PAD, PAD], [BOS, 8, 9, 10, 11]]
    assert batch.tgt_out.tolist() == [[8, 9, EOS, IGNORE, IGNORE], [8, 9, 10, 11, EOS]]
    assert batch.num_tokens == 4 + 8


def test_batch_stream_resumes_and_shards():
    examples = [([i + 4], [i + 4]) for i in range(50)]
    full = BatchStream(examples, 8, seed=3)
    ref = [next(full).src for _ in range(15)]  # crosses two epoch boundaries (6 batches each)
    part = BatchStream(examples, 8, seed=3)
    for _ in range(7):
        next(part)
    resumed = BatchStream(examples, 8, seed=3)
    resumed.load_state_dict(part.state_dict())
    assert all(torch.equal(next(resumed).src, r) for r in ref[7:])
    seen = [set() for _ in range(6)]
    for rank in range(2):
        shard = BatchStream(examples, 8, seed=3, rank=rank, world=2)
        for k in range(6):
            b = next(shard).src.flatten().tolist()
            assert len(b) == 4 and not (seen[k] & set(b))  # ranks read disjoint halves
            seen[k].update(b)
    assert len(set().union(*seen)) == 48  # one epoch minus the dropped tail
    with pytest.raises(ValueError, match="divisible"):
        BatchStream(examples, 7, world=2)


def test_encode_pairs_rejects_empty_source():
    tok = Tokenizer.build(["ab"], "char")
    with pytest.raises(ValueError, match="empty source"):
        encode_pairs([("", "ab")], tok, tok)


def test_pad_sources_and_metrics_by_hand():
    from gnn_attention.training import metrics
    from gnn_attention.training.data import batching

    src, lengths = batching.pad_sources([[5, 6, 7], [8]])
    assert src.tolist() == [[5, 6, 7], [PAD, PAD, PAD]][:1] + [[8, PAD, PAD]]
    assert lengths.tolist() == [3, 1]
    assert metrics.exact_match(["ab", "c", "d"], ["ab", "x", "d"]) == pytest.approx(2 / 3)
    logits = torch.zeros(1, 3, 4)
    logits[0, 0, 2] = logits[0, 1, 1] = 1.0
    assert metrics.token_counts(logits, torch.tensor([[2, 3, IGNORE]])) == (1, 2)
    with pytest.raises(ValueError, match="no references"):
        metrics.exact_match([], [])
