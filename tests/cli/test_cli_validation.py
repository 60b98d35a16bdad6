"""Every user mistake at the command line gets one specific line on stderr and exit status 2.

Each test runs ``gnn_attention.cli.main(argv)`` and asserts the whole error line verbatim (the
messages are the contract; docs/reliability.md lists them). Mistakes caught by argparse itself
(unknown choices, non-numbers) exit with status 2 through ``SystemExit`` and name the bad value.
A run trained for two steps (module fixture) stands in for a trained translator; the BERT
commands are skipped when the all-MiniLM-L6-v2 weights are not installed.
"""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from conftest import require_minilm

from gnn_attention.cli.app import main
from gnn_attention.pretrained import bert as pretrained
from gnn_attention.training import data
from gnn_attention.training.loop import TrainConfig, train

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")


def fails(capsys, argv, message):
    """``main(argv)`` returns 2 and prints exactly ``gnn-attention CMD: error: message``."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"gnn-attention {argv[0]}: error: {message}\n"


def rejected_by_parser(capsys, argv, fragment):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert fragment in capsys.readouterr().err.splitlines()[-1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A character-level reverse translator after two optimiser steps (what it predicts does not
    matter here, only that it is a real run directory)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = TrainConfig.resolve("reverse", "tiny", steps=2, batch_size=4, device="cpu",
                                  val_examples=4, eval_batch_size=64)
        path = tmp_path_factory.mktemp("run")
        train(cfg, path, progress=False, log=lambda *a, **k: None)
    finally:
        torch.set_num_threads(n)
    return path


# -- train ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, fragment", [
    (["train", "--task", "klingon"], "argument --task: invalid choice: 'klingon'"),
    (["train", "--preset", "huge"], "argument --preset: invalid choice: 'huge'"),
    (["train", "--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
    (["translate", "x", "abc", "--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
    (["train", "--steps", "ten"], "argument --steps: invalid int value: 'ten'"),
    (["plot", "attention", "a b", "--model", "gpt"], "argument --model: invalid choice: 'gpt'"),
])
def test_parser_names_the_bad_value(capsys, argv, fragment):
    rejected_by_parser(capsys, argv, fragment)


@pytest.mark.parametrize("flags, message", [
    (["--steps", "-1"], "steps must be >= 1, got -1"),
    (["--batch-size", "0"], "batch_size must be >= 1, got 0"),
    (["--lr", "0"], "need lr > 0, 0 <= label_smoothing < 1 and clip_norm > 0"),
    (["--threads", "0"], "--threads must be >= 1, got 0"),
    (["--task", "reverse", "--max-number", "99"],
     "--max-number only applies to number tasks, not reverse"),
    (["--task", "digits-en", "--max-number", "3"],
     ("--max-number 3: task 'digits-en' with {'max_number': 3} leaves the val split empty; "
      "generate more items")),
    (["--resume", "--overwrite"], "--resume and --overwrite exclude each other"),
])
def test_train_rejects_bad_numbers_and_flags(capsys, tmp_path, flags, message):
    fails(capsys, ["train", "--run-dir", str(tmp_path / "r"), "--no-progress", *flags], message)
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


@NO_CUDA
def test_train_cuda_without_cuda(capsys, tmp_path):
    fails(capsys, ["train", "--device", "cuda", "--run-dir", str(tmp_path)],
          "--device cuda was asked for but CUDA is not available")


def test_train_run_directory_mistakes(capsys, tmp_path, run_dir):
    fails(capsys, ["train", "--resume", "--task", "reverse", "--run-dir", str(tmp_path)],
          f"no checkpoint at {tmp_path}/checkpoint.pt")
    fails(capsys, ["train", "--task", "reverse", "--run-dir", str(run_dir)],
          f"{run_dir} already holds a checkpoint; pass --resume to continue it or choose "
          f"another --run-dir")


# -- evaluate and translate: run directories -------------------------------------------------------

@pytest.mark.parametrize("cmd, texts", [("evaluate", []), ("translate", ["abc"])])
def test_run_directory_missing_empty_or_corrupted(capsys, tmp_path, run_dir, cmd, texts):
    def argv(directory):
        return [cmd, str(directory), *texts]

    missing = tmp_path / "nope"
    fails(capsys, argv(missing), f"run directory {missing} does not exist (train one with "
                                 f"'gnn-attention train --run-dir {missing}')")
    fails(capsys, argv(tmp_path), f"no checkpoint at {tmp_path}/checkpoint.pt")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "checkpoint.pt").write_bytes((run_dir / "checkpoint.pt").read_bytes()[:1000])
    assert main(argv(broken)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gnn-attention {cmd}: error: checkpoint {broken}/checkpoint.pt is "
                          f"truncated or corrupted and cannot be read")
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("cmd", ["evaluate", "translate"])
def test_beam_and_device(capsys, run_dir, cmd):
    texts = ["abc"] if cmd == "translate" else []
    fails(capsys, [cmd, str(run_dir), *texts, "--beam", "0"], "--beam must be >= 1, got 0")
    if not torch.cuda.is_available():
        fails(capsys, [cmd, str(run_dir), *texts, "--device", "cuda"],
              "--device cuda was asked for but CUDA is not available")


def test_evaluate_examples_and_json_in_a_new_folder(capsys, tmp_path, run_dir, monkeypatch):
    fails(capsys, ["evaluate", str(run_dir), "--examples", "-1"], "--examples must be >= 0, got -1")
    # Score 3 held-out pairs, not the whole split: an untrained model decodes every pair to the
    # length limit, and only the output folder is under test here.
    real = data.load_task
    monkeypatch.setattr(data, "load_task",
                        lambda *a, **k: dataclasses.replace(td := real(*a, **k), val=td.val[:3]))
    out = tmp_path / "new" / "deeper" / "scores.json"
    assert main(["evaluate", str(run_dir), "--split", "val", "--examples", "0",
                 "--json", str(out)]) == 0
    assert json.loads(out.read_text())["examples"] == 3


def test_translate_names_unknown_characters_once_each(capsys, run_dir):
    fails(capsys, ["translate", str(run_dir), "ab€c€d☃"],
          "'ab€c€d☃' cannot be read by the reverse model: unknown characters '€' '☃'")
    fails(capsys, ["translate", str(run_dir), "abc", ""],
          "'' cannot be read by the reverse model: empty input")


def test_translate_over_long_input_says_length_and_limit(capsys, run_dir):
    fails(capsys, ["translate", str(run_dir), "a" * 300],
          f"'{'a' * 37}...' is 300 chars long; the reverse model reads at most 256 (its max_len)")


def test_translate_plot_into_a_new_folder(capsys, tmp_path, run_dir):
    out = tmp_path / "figs" / "align.png"
    assert main(["translate", str(run_dir), "abc", "--plot", str(out)]) == 0
    assert out.stat().st_size > 0


# -- plot ------------------------------------------------------------------------------------------

def test_plot_checks(capsys, tmp_path, run_dir):
    png = str(tmp_path / "x.png")
    fails(capsys, ["plot", "attention", "a b c", "--out", png, "--top-k", "0"],
          "--top-k must be >= 1, got 0")
    fails(capsys, ["plot", "attention", "a b c", "--out", png, "--threshold", "2"],
          "--threshold is a weight in [0, 1], got 2.0")
    fails(capsys, ["plot", "attention", "a b c", "--out", png, "--layer", "5"],
          "--layer must be in 0..1, got 5")
    fails(capsys, ["plot", "attention", "a b c", "--out", png, "--head", "x"],
          "--head must be an integer or 'mean', got 'x'")
    fails(capsys, ["plot", "patterns", "--length", "1", "--out", png],
          "need --length >= 2, --window >= 0 and --dilation >= 1")
    fails(capsys, ["plot", "alignment", "--src", "a€", "--run", str(run_dir), "--out", png],
          "'a€' cannot be read by the reverse model: unknown characters '€'")
    fails(capsys, ["plot", "alignment", "--src", "abc", "--run", str(tmp_path / "nope"),
                   "--out", png],
          f"run directory {tmp_path / 'nope'} does not exist (train one with "
          f"'gnn-attention train --run-dir {tmp_path / 'nope'}')")


def test_bench_rejects_non_positive_sizes(capsys):
    fails(capsys, ["bench", "--quick", "--B", "0"], "sizes must be positive (T >= 8), got B=0")


# -- embed and attention (all-MiniLM-L6-v2) ---------------------------------------------------------

def test_model_dir_that_does_not_exist(capsys, tmp_path):
    for argv in (["embed", "hi"], ["attention", "hi", "--token", "hi"]):
        fails(capsys, [*argv, "--model-dir", str(tmp_path / "bert")],
              f"model directory {tmp_path / 'bert'} does not exist")


@pytest.fixture(scope="module")
def minilm():
    require_minilm()


def test_bert_inputs_checked_before_the_model_loads(capsys, minilm, monkeypatch):
    def no_load(*_):
        raise AssertionError("the model was loaded for a bad input")

    monkeypatch.setattr(pretrained, "load_bert", no_load)
    long = " ".join(["word"] * 300)
    fails(capsys, ["embed", "fine", long],
          "sentence 1 is 302 tokens long ([CLS]/[SEP] included); the model reads at most 256")
    fails(capsys, ["attention", long, "--token", "word"],
          "sentence 0 is 302 tokens long ([CLS]/[SEP] included); the model reads at most 256")
    fails(capsys, ["embed", "fine", " "], "sentences must not be empty")
    fails(capsys, ["attention", "The cat sat.", "--token", "dog"],
          "token 'dog' is not in the sentence; its tokens are: [CLS] the cat sat . [SEP]")
    fails(capsys, ["attention", "The cat sat.", "--token", "cat", "--occurrence", "2"],
          "token 'cat' occurs 1 time(s); --occurrence must be in 1..1")
    fails(capsys, ["attention", "The cat sat.", "--token", "cat", "--top", "0"],
          "--top must be at least 1, got 0")
    fails(capsys, ["attention", "The cat sat.", "--token", "cat", "--layer", "6"],
          "--layer must be in 0..5, got 6")


def test_attention_html_page_holds_the_sentence(capsys, minilm, tmp_path):
    page = tmp_path / "new" / "cat.html"
    assert main(["attention", "The cat sat on the mat.", "--token", "cat", "--layer", "0",
                 "--head", "0", "--html", str(page)]) == 0
    assert f"wrote {page}" in capsys.readouterr().out
    text = page.read_text()
    for token in ("[CLS]", "cat", "sat", "mat", "[SEP]"):
        assert f'"{token}"' in text  # the token list is embedded as JSON
    assert 'id="layer"' in text and 'id="head"' in text

