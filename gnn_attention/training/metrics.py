"""Evaluation metrics and the training log (CSV, plus TensorBoard when it is installed).

Notation: N held-out examples; ``preds``/``refs`` are detokenised strings; ``logits [B, T, V]`` are
teacher-forced decoder outputs and ``tgt_out [B, T]`` the gold next tokens (IGNORE at padding).

* exact match = (1/N) sum_n [pred_n == ref_n], on greedy (or beam) outputs;
* token accuracy = correct / total over non-padded target positions (EOS included) of the
  teacher-forced argmax: how often the next token is right given the gold prefix;
* BLEU = sacrebleu's corpus BLEU (0..100) on the same outputs; character-level targets (one German
  compound word per number) are scored with sacrebleu's ``char`` tokeniser, because word 2- to
  4-grams do not exist in one-word outputs and word BLEU would be 0 whatever the quality.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gnn_attention.training.data.batching import IGNORE


def exact_match(preds: Sequence[str], refs: Sequence[str]) -> float:
    """Fraction of predictions equal to their reference string."""
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions for {len(refs)} references")
    if not refs:
        raise ValueError("no references to score")
    return sum(p == r for p, r in zip(preds, refs)) / len(refs)


def token_counts(logits: Tensor, tgt_out: Tensor) -> Tuple[int, int]:
    """``(correct, total)`` teacher-forced next-token predictions over non-padded positions.

    **Shapes:** ``logits [B, T, V]``, ``tgt_out [B, T]``.
    """
    if logits.shape[:2] != tgt_out.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match targets "
                         f"{tuple(tgt_out.shape)}")
    keep = tgt_out != IGNORE
    correct = (logits.argmax(-1) == tgt_out) & keep
    return int(correct.sum()), int(keep.sum())


def bleu(preds: Sequence[str], refs: Sequence[str], level: str = "word") -> float:
    """sacrebleu corpus BLEU (0..100); ``level="char"`` uses the character tokeniser."""
    import sacrebleu

    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions for {len(refs)} references")
    tokenize = "char" if level == "char" else "13a"
    return float(sacrebleu.corpus_bleu(list(preds), [list(refs)], tokenize=tokenize).score)


class MetricsLog:
    """Append rows of scalars to ``<run_dir>/metrics.csv`` (and TensorBoard if installed).

    A resumed run calls :meth:`truncate_after` with its checkpoint step first, so rows logged
    between the last checkpoint and an interruption are not duplicated.
    """

    FIELDS = ("step", "split", "loss", "lr", "grad_norm", "tokens_per_second", "exact_match",
              "token_accuracy", "bleu", "elapsed_seconds")

    def __init__(self, run_dir: Path, tensorboard: bool = True):
        self.path = Path(run_dir) / "metrics.csv"
        self._tb = None
        if tensorboard:
            try:  # optional: torch's writer needs the `tensorboard` package
                from torch.utils.tensorboard import SummaryWriter
                self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
            except (ImportError, ModuleNotFoundError):
                self._tb = None

    def truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        with open(self.path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
        self._write(rows, mode="w")

    def log(self, step: int, split: str, **values: Optional[float]) -> None:
        unknown = set(values) - set(self.FIELDS)
        if unknown:
            raise ValueError(f"unknown metric(s) {sorted(unknown)}")
        self._write([{"step": step, "split": split, **values}], mode="a")
        if self._tb is not None:
            for k, v in values.items():
                if v is not None:
                    self._tb.add_scalar(f"{split}/{k}", v, step)

    def _write(self, rows: List[Dict], mode: str) -> None:
        new = mode == "w" or not self.path.exists()
        with open(self.path, mode, newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.FIELDS)
            if new:
                w.writeheader()
            w.writerows(rows)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


# ---------------------------------------------------------------------------------------------
# Scoring a model on held-out pairs


@torch.no_grad()
def evaluate(model: nn.Module, pairs: Sequence[Tuple[str, str]], src_tok, tgt_tok, device,
             batch_size: int = 256, beam_size: int = 1) -> Dict[str, object]:
    """Teacher-forced loss and token accuracy, then decoded outputs scored against the references.

    Decoding is greedy (``beam_size=1``) or beam search, up to 5 tokens past the longest reference.
    Returns ``{"loss", "token_accuracy", "exact_match", "bleu", "predictions"}``; the loss is the
    plain (unsmoothed) mean cross-entropy per target token.
    """
    from gnn_attention.models.decoding import beam_search, greedy_decode
    from gnn_attention.training.data.batching import encode_pairs, fixed_batches, pad_sources

    was_training = model.training
    model.eval()
    examples = encode_pairs(pairs, src_tok, tgt_tok)
    loss_sum, correct, total, preds = 0.0, 0, 0, []
    for batch in fixed_batches(examples, batch_size):
        batch = batch.to(device)
        logits = model(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_lengths).float()
        loss_sum += float(F.cross_entropy(logits.flatten(0, 1), batch.tgt_out.flatten(),
                                          ignore_index=IGNORE, reduction="sum"))
        c, t = token_counts(logits, batch.tgt_out)
        correct, total = correct + c, total + t
    max_len = max(len(t) for _, t in examples) + 5
    for k in range(0, len(examples), batch_size):
        src, lengths = pad_sources([s for s, _ in examples[k:k + batch_size]])
        src, lengths = src.to(device), lengths.to(device)
        if beam_size == 1:
            out = greedy_decode(model, src, lengths, src_tok.bos_id, tgt_tok.eos_id, max_len)
        else:
            out = beam_search(model, src, lengths, tgt_tok.bos_id, tgt_tok.eos_id, max_len,
                              beam_size=beam_size)
        preds.extend(tgt_tok.decode(ids) for ids in out)
    refs = [t for _, t in pairs]
    model.train(was_training)
    return {"loss": loss_sum / total, "token_accuracy": correct / total,
            "exact_match": exact_match(preds, refs), "bleu": bleu(preds, refs, tgt_tok.level),
            "predictions": preds}
