"""Offline tasks, tokenisers and batching for training the graph Transformer.

``load_task(name)`` generates a task's pairs and splits them (disjoint by item),
``Tokenizer.build(texts, level)`` makes a vocabulary from the training split, and
``BatchStream`` turns encoded pairs into an endless, resumable stream of padded batches.
"""
from gnn_attention.training.data.batching import (
           IGNORE,
           Batch,
           BatchStream,
           collate,
           encode_pairs,
           fixed_batches,
           pad_sources,
)
from gnn_attention.training.data.tasks import (
           DEFAULT_TASK,
           TASKS,
           TaskData,
           TaskSpec,
           english_words,
           load_task,
           split_of,
)
from gnn_attention.training.data.tokenizer import BOS, EOS, PAD, SPECIALS, UNK, Tokenizer

__all__ = ["BOS", "Batch", "BatchStream", "DEFAULT_TASK", "EOS", "IGNORE", "PAD", "SPECIALS",
           "TASKS", "TaskData", "TaskSpec", "Tokenizer", "UNK", "collate", "encode_pairs",
           "english_words", "fixed_batches", "load_task", "pad_sources", "split_of"]
