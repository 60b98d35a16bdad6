"""Every transformers family as token graphs, measured: max |Δ| of logits (hidden states for
BERT) against transformers at the valid positions of a padded batch, float32 and float64;
whether greedy and beam (k=3) decodes are token-identical; and the KV-cache speed-up of GPT-2
decoding at T=256 (cache vs recomputing the whole prefix every step, interleaved, median).

    python experiments/pretrained_families.py            # writes the JSON cited in docs/architectures.md
    python experiments/pretrained_families.py --quick    # fewer repetitions

Writes experiments/results/pretrained_families.json. Small random configs (2 layers, widths 33-36,
vocabulary 101, weights ~ N(0, 0.3)); nothing is downloaded.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers as tf

from gnn_attention.pretrained import from_transformers, max_difference

ROOT = Path(__file__).resolve().parent.parent
V = 101


def families():
    """(name, transformers model, seq2seq?) for each family, weights ~ N(0, 0.3)."""
    enc_dec = dict(vocab_size=V, d_model=33, encoder_layers=2, decoder_layers=2,
                   encoder_attention_heads=3, decoder_attention_heads=3, encoder_ffn_dim=40,
                   decoder_ffn_dim=40, max_position_embeddings=64, forced_eos_token_id=None)
    t5 = dict(vocab_size=V, d_model=36, d_kv=11, d_ff=40, num_layers=2, num_heads=3,
              decoder_start_token_id=0, relative_attention_num_buckets=8,
              relative_attention_max_distance=20)
    made = [
        ("gpt2", tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=V, n_positions=64, n_embd=33,
                                                  n_layer=2, n_head=3, eos_token_id=7,
                                                  bos_token_id=7, pad_token_id=7)), False),
        ("bart", tf.BartForConditionalGeneration(tf.BartConfig(**enc_dec)), True),
        ("marian", tf.MarianMTModel(tf.MarianConfig(**{**enc_dec, "d_model": 34,
                                                       "encoder_attention_heads": 2,
                                                       "decoder_attention_heads": 2},
                                                    pad_token_id=V - 1, eos_token_id=0,
                                                    decoder_start_token_id=V - 1)), True),
        ("t5-relu", tf.T5ForConditionalGeneration(tf.T5Config(**t5)), True),
        ("t5-gated-gelu", tf.T5ForConditionalGeneration(
            tf.T5Config(**t5, feed_forward_proj="gated-gelu")), True),
        ("bert", tf.BertModel(tf.BertConfig(vocab_size=V, hidden_size=33, num_hidden_layers=2,
                                            num_attention_heads=3, intermediate_size=40,
                                            max_position_embeddings=64)), None),
    ]
    with torch.no_grad():
        for _, hf, _ in made:
            for name, p in hf.named_parameters():
                if "embed_positions" not in name or "marian" not in type(hf).__name__.lower():
                    p.normal_(0, 0.3)
    return made


def padded(B, T, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, V - 1, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, T - 6:], mask[2, 2:] = 0, 0
    return ids, mask


def measure_family(name, hf, seq2seq):
    row = {}
    ids, mask = padded(3, 23, 1)
    dec = {}
    if seq2seq:
        d, dm = padded(3, 19, 2)
        dec = {"decoder_input_ids": d, "decoder_attention_mask": dm}
    for dtype in (torch.float32, torch.float64):
        m = hf.to(dtype).eval()
        row[str(dtype).removeprefix("torch.")] = max_difference(m, from_transformers(m), ids,
                                                                mask, **dec)
    hf = hf.float()
    if seq2seq is not None:
        g, prompt = from_transformers(hf), mask if seq2seq else mask.flip(1)
        for k in (1, 3):
            theirs = hf.generate(ids, attention_mask=prompt, max_new_tokens=24, do_sample=False,
                                 num_beams=k)
            ours = g.generate(ids, attention_mask=prompt, max_new_tokens=24, num_beams=k)
            row[f"identical_k{k}"] = bool(torch.equal(theirs, ours))
    print(name, row, flush=True)
    return row


def recompute_greedy(g, ids, n):
    """Greedy decoding without a cache: the whole prefix through the model at every step."""
    seq = ids
    for _ in range(n):
        seq = torch.cat([seq, g(seq)[:, -1].argmax(-1, keepdim=True)], 1)
    return seq


@torch.no_grad()
def cache_speedup(reps):
    """GPT-2 (4 layers, C=64, 4 heads): prompt 128, decode 128 -> T=256, B=1."""
    torch.manual_seed(0)
    hf = tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=V, n_positions=256, n_embd=64, n_layer=4,
                                          n_head=4, eos_token_id=None)).eval()
    g = from_transformers(hf)
    ids = torch.randint(0, V, (1, 128))
    a, b = g.generate(ids, max_new_tokens=128), recompute_greedy(g, ids, 128)
    assert torch.equal(a, b), "cached and recomputed decodes differ"
    times = {"cache": [], "recompute": []}
    for _ in range(reps):  # interleaved, so that load changes hit both alike
        for key, fn in (("cache", lambda: g.generate(ids, max_new_tokens=128)),
                        ("recompute", lambda: recompute_greedy(g, ids, 128))):
            t = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"T": 256, "reps": reps, "median_s": med, "speedup": med["recompute"] / med["cache"]}


def train_and_evaluate(config: dict, workdir: Path) -> dict:
    torch.set_num_threads(2)
    out = {"torch": torch.__version__, "transformers": tf.__version__, "threads": 2,
           "loadavg": os.getloadavg(), "families": {}}
    torch.manual_seed(0)
    for name, hf, seq2seq in families():
        out["families"][name] = measure_family(name, hf, seq2seq)
    out["gpt2_cache"] = cache_speedup(config["reps"])
    out["loadavg_after"] = os.getloadavg()
    print(out["gpt2_cache"])
    path = workdir / "results" / "pretrained_families.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    train_and_evaluate({"reps": 3 if "--quick" in sys.argv else 10}, ROOT / "experiments")
