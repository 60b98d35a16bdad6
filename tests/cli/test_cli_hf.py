"""``gnn-attention hf`` on a local checkpoint written by ``save_pretrained`` (no hub)."""
import pytest
import torch

from gnn_attention.cli import main

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=53, n_positions=32, n_embd=24, n_layer=2, n_head=3)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    path = tmp_path_factory.mktemp("gpt2")
    model.save_pretrained(path)
    return path


def test_inspect_and_decode_match_transformers(gpt2_dir, capsys):
    assert main(["hf", str(gpt2_dir)]) == 0
    assert capsys.readouterr().out.startswith("GPT2LMHeadModel -> ")
    assert main(["hf", str(gpt2_dir), "--ids", "3", "7", "11", "--max-new-tokens", "4",
                 "--num-beams", "2", "--compare"]) == 0
    out = capsys.readouterr().out
    assert "decoded ids: 3 7 11 " in out and "decode identical" in out
    diff = float(out.split("max |diff| of the logits vs transformers: ")[1].split(";")[0])
    assert diff < 1e-4


def test_user_mistakes_are_one_line(gpt2_dir, tmp_path, capsys):
    assert main(["hf", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.strip().endswith("does not exist")
    assert main(["hf", str(tmp_path)]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert main(["hf", str(gpt2_dir), "--ids", "99"]) == 2
    assert capsys.readouterr().err.strip() == ("gnn-attention hf: error: --ids must lie in [0, 53), "
                                               "got [99]")
