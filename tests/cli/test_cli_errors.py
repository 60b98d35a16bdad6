"""The mistakes and accidents that used to end in a traceback: each is now one line and a status.

Every test runs ``gnn_attention.cli.main(argv)`` and asserts the whole stderr line (status 2 for a
user's mistake, 130 for Ctrl-C). ``run`` is a reverse-task run trained for two steps; ``digits``
a digits-en run (numbers 0..300) trained for one step: what they predict does not matter here.
"""
from __future__ import annotations

import os
import signal

import pytest
import torch

from gnn_attention.cli import errors
from gnn_attention.cli.app import main
from gnn_attention.cli.commands.train import available_cores
from gnn_attention.training import loop as T
from gnn_attention.training.checkpoint import save_checkpoint
from gnn_attention.training.data import load_task
from gnn_attention.training.loop import TrainConfig, train
from gnn_attention.viz import static as viz

SMALL = {"d_model": 16, "nhead": 2, "num_encoder_layers": 1, "num_decoder_layers": 1,
         "dim_feedforward": 24, "dropout": 0.0}
QUIET = dict(progress=False, log=lambda *_: None)
pytestmark = pytest.mark.usefixtures("one_thread")


def fails(capsys, argv, message, status=2):
    assert main(argv) == status
    assert capsys.readouterr().err == f"gnn-attention {argv[0]}: error: {message}\n"


def small(task, **kw):
    base = dict(task=task, preset="tiny", model=SMALL, steps=2, batch_size=4, warmup=2,
                eval_every=100, checkpoint_every=100, val_examples=4, test_examples=4,
                eval_batch_size=16, device="cpu")
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("run")
    train(small("reverse", task_params={"count": 300}), path, **QUIET)
    return path


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    path = tmp_path_factory.mktemp("digits")
    train(small("digits-en", steps=1, task_params={"max_number": 300}), path, **QUIET)
    return path


@pytest.fixture
def afile(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    return f


# -- train: sizes and threads ------------------------------------------------------------------

def test_batch_larger_than_the_training_split(capsys, tmp_path):
    n = len(load_task("reverse").train)
    fails(capsys, ["train", "--task", "reverse", "--batch-size", "100000", "--run-dir",
                   str(tmp_path / "r"), "--no-progress"],
          f"batch size 100000: {n} training examples cannot fill one batch of 100000 on 1 "
          f"process(es)")
    assert not (tmp_path / "r" / "config.json").exists()  # refused before the run is described


def test_more_threads_than_cores(capsys, tmp_path):
    fails(capsys, ["train", "--threads", "100000", "--run-dir", str(tmp_path)],
          f"--threads 100000 is more than the {available_cores()} CPU cores this process may use")


def test_resume_with_fewer_steps_than_the_checkpoint(capsys, tmp_path):
    train(small("reverse", task_params={"count": 300}, steps=3), tmp_path, **QUIET)
    before = (tmp_path / T.CHECKPOINT).read_bytes()
    with pytest.raises(T.TrainingError) as err:
        train(small("reverse", task_params={"count": 300}, steps=2), tmp_path, resume=True,
              **QUIET)
    assert str(err.value) == (f"--steps 2 is below the 3 steps {tmp_path / T.CHECKPOINT} has "
                              f"already trained; pass --steps >= 3")
    assert (tmp_path / T.CHECKPOINT).read_bytes() == before


# -- Ctrl-C at any moment ----------------------------------------------------------------------

def sigint(*_, **__):
    os.kill(os.getpid(), signal.SIGINT)  # Python's own handler raises KeyboardInterrupt


@pytest.mark.parametrize("where", ["load_task", "evaluate"])
def test_ctrl_c_before_the_first_step_or_after_the_last(capsys, tmp_path, monkeypatch, where):
    monkeypatch.setattr(T, where, sigint)
    argv = ["train", "--task", "reverse", "--steps", "1", "--batch-size", "4", "--run-dir",
            str(tmp_path), "--no-progress"]
    assert main(argv) == 130
    assert capsys.readouterr().err == "gnn-attention train: interrupted\n"
    assert (tmp_path / T.CHECKPOINT).exists() == (where == "evaluate")  # the step was saved


# -- outputs under a file ----------------------------------------------------------------------

def test_outputs_under_a_file_are_refused_before_any_work(capsys, afile, run, monkeypatch):
    monkeypatch.setattr(T, "load_run", None)  # refused before any run is loaded
    bad = str(afile / "x.json")
    fails(capsys, ["evaluate", str(run), "--json", bad],
          f"--json {bad}: {afile} is a file, not a folder")
    fails(capsys, ["translate", str(run), "abc", "--plot", str(afile / "a" / "b.png")],
          f"--plot {afile / 'a' / 'b.png'}: {afile} is a file, not a folder")
    fails(capsys, ["bench", "--quick", "--json", bad],
          f"--json {bad}: {afile} is a file, not a folder")
    fails(capsys, ["bench", "--quick", "--plot", str(afile)],
          f"--plot {afile} is a file; give a folder")
    fails(capsys, ["plot", "patterns", "--out", str(afile.parent)],
          f"--out {afile.parent} is a folder; give a file name")
    fails(capsys, ["equivalence", "--quick", "--json", bad],
          f"--json {bad}: {afile} is a file, not a folder")


# -- memory ------------------------------------------------------------------------------------

def test_plot_patterns_too_long_to_draw(capsys, tmp_path):
    fails(capsys, ["plot", "patterns", "--length", "3000", "--out", str(tmp_path / "p.png")],
          "--length 3000 is too long to draw: at most 64 tokens (full attention draws T^2 arcs)")


def test_memory_error_anywhere_is_one_line(capsys, tmp_path, monkeypatch):
    def exhausted(*a, **k):
        raise MemoryError

    monkeypatch.setattr(viz, "pattern_gallery", exhausted)
    fails(capsys, ["plot", "patterns", "--out", str(tmp_path / "p.png")],
          "out of memory: the inputs are too large for this machine (MemoryError); try smaller "
          "sizes")


def test_os_errors_name_their_file():
    err = PermissionError(13, "Permission denied", "/data/x.json")
    assert errors.report(err) == "Permission denied: /data/x.json"
    assert errors.report(OSError(28, "No space left on device")) == "No space left on device"
    assert len(errors.report(errors.UserError("word " * 200))) == errors.MAX_LINE


# -- checkpoints whose digest matches but whose content is wrong --------------------------------

def resaved(run, tmp_path, change):
    """A copy of ``run``'s checkpoint changed by ``change(state)`` and saved with a new, valid
    digest (what a hand-edited or foreign-tool checkpoint looks like)."""
    from gnn_attention.training.checkpoint import load_checkpoint

    state = load_checkpoint(run / T.CHECKPOINT)
    change(state)
    save_checkpoint(tmp_path / T.CHECKPOINT, state)
    return tmp_path / T.CHECKPOINT


def test_huge_d_model_is_refused_without_allocating(capsys, tmp_path, run):
    path = resaved(run, tmp_path, lambda s: s["config"]["model"].update(d_model=2**20))
    vocab = run_vocab(run)
    fails(capsys, ["evaluate", str(tmp_path)],
          f"checkpoint {path} does not match its model configuration: src_embed.weight is "
          f"({vocab}, 16), the model needs ({vocab}, 1048576)")


def run_vocab(run):
    from gnn_attention.training.checkpoint import load_checkpoint

    return len(load_checkpoint(run / T.CHECKPOINT)["tokenizers"]["src"]["vocab"])


@pytest.mark.parametrize("change, message", [
    (lambda s: s["config"].update(colour="red"),
     "holds an invalid run description (TypeError: TrainConfig.__init__() got an unexpected "
     "keyword argument 'colour')"),
    (lambda s: s["config"].update(batch_size=0),
     "holds an invalid run description (ValueError: batch_size must be >= 1, got 0)"),
    (lambda s: s["config"]["model"].update(nhead=5),
     "holds an invalid model configuration (ValueError: d_model (16) must be a positive "
     "multiple of nhead (5))"),
    (lambda s: s["tokenizers"]["src"].update(vocab=["x"]),
     "holds an invalid run description (ValueError: vocab must start with the special tokens "
     "('<pad>', '<bos>', '<eos>', '<unk>'))"),
    (lambda s: s["model"].pop("src_embed.weight"),
     "does not match its model configuration: missing ['src_embed.weight'], unexpected []"),
    (lambda s: s.update(step=-1), "holds an invalid step -1"),
])
def test_wrong_content_with_a_valid_digest(capsys, tmp_path, run, change, message):
    path = resaved(run, tmp_path, change)
    for argv in (["evaluate", str(tmp_path)], ["translate", str(tmp_path), "abc"]):
        fails(capsys, argv, f"checkpoint {path} {message}")


def test_resume_from_wrong_content_touches_nothing(capsys, tmp_path, run):
    path = resaved(run, tmp_path, lambda s: s["config"]["model"].update(d_model=2**20))
    before = sorted(os.listdir(tmp_path))
    assert main(["train", "--task", "reverse", "--resume", "--run-dir", str(tmp_path)]) == 2
    assert "does not match its model configuration" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == sorted(before + [".lock"])
    assert path.exists()


# -- translate outside the trained domain ------------------------------------------------------

def test_translate_refuses_numbers_outside_the_range(capsys, digits):
    for text in ("12345", "042"):
        fails(capsys, ["translate", str(digits), text],
              f"'{text}' is outside what the digits-en model was trained on: whole numbers "
              f"0..300 written in digits")
    assert main(["translate", str(digits), "42"]) == 0


def test_translate_warns_for_strings_the_task_never_generates(capsys, run):
    assert main(["translate", str(run), "abcdefghijabcdefghij"]) == 0
    out = capsys.readouterr()
    assert out.err == ("gnn-attention translate: warning: 'abcdefghijabcdefghij' is outside what "
                       "the reverse model was trained on: strings of 3..12 characters from "
                       "'abcdefghij'; the output below is a guess\n")
    assert out.out.startswith("abcdefghijabcdefghij -> ")
