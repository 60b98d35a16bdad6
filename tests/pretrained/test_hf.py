"""from_transformers / from_pretrained dispatch, the BERT wrapper, and the blocks every family
shares: the packed cache (grow, select), the decoding-step graph, RMS norm."""
import pytest
import torch

transformers = pytest.importorskip("transformers")

from gnn_attention.graphs import incremental_causal
from gnn_attention.models import EncoderOnlyModel
from gnn_attention.pretrained import from_pretrained, from_transformers, max_difference
from gnn_attention.pretrained.blocks import RMSNorm, grow, select
from gnn_attention.pretrained.generation import Cache, step_graph
from gnn_attention.pretrained.hf import FAMILIES

V = 101


def tiny_bert(seed=0):
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=V, hidden_size=33, num_hidden_layers=2,
                                  num_attention_heads=3, intermediate_size=40,
                                  max_position_embeddings=40)
    return transformers.BertModel(cfg).eval()


def tiny_gpt2(seed=0):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=V, n_positions=40, n_embd=33, n_layer=2, n_head=3,
                                  eos_token_id=7, bos_token_id=7, pad_token_id=7)
    return transformers.GPT2LMHeadModel(cfg).eval()


def padded(B=3, T=7):
    ids = torch.randint(2, V, (B, T), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 5:], mask[2, 2:] = 0, 0
    return ids, mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bert_wrapper_matches_last_hidden_state(dtype):
    hf = tiny_bert().to(dtype)
    g = from_transformers(hf)
    assert isinstance(g, EncoderOnlyModel) and not g.training
    assert max_difference(hf, g, *padded()) <= {torch.float32: 1e-4, torch.float64: 1e-9}[dtype]


@pytest.mark.parametrize("make", [tiny_bert, tiny_gpt2])
def test_from_pretrained_reads_a_local_directory(make, tmp_path):
    hf = make()
    hf.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    g = from_pretrained(tmp_path, dtype=torch.float64)
    assert next(g.parameters()).dtype == torch.float64
    assert max_difference(hf.double(), g, *padded()) <= 1e-9


def test_unsupported_models_and_directories_raise(tmp_path):
    with pytest.raises(TypeError, match="supported: GPT2LMHeadModel"):
        from_transformers(torch.nn.Linear(2, 2))
    with pytest.raises(FileNotFoundError, match="config.json"):
        from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    with pytest.raises(TypeError, match="LlamaForCausalLM"):
        from_pretrained(tmp_path)
    assert set(FAMILIES) == {"GPT2LMHeadModel", "BartForConditionalGeneration", "MarianMTModel",
                             "T5ForConditionalGeneration", "BertModel"}


def test_grow_appends_one_node_at_the_end_of_every_sequence():
    lengths = torch.tensor([2, 0, 3])
    packed = torch.tensor([10, 11, 30, 31, 32])
    out = grow(packed, lengths, torch.tensor([12, 20, 33]))
    assert out.tolist() == [10, 11, 12, 20, 30, 31, 32, 33]


def test_select_copies_whole_blocks_in_the_given_order():
    lengths, packed = torch.tensor([2, 1, 3]), torch.tensor([10, 11, 20, 30, 31, 32])
    assert select(packed, lengths, torch.tensor([2, 0, 0])).tolist() == \
        [30, 31, 32, 10, 11, 10, 11]
    cache = Cache((packed[:, None],), (packed[:, None],), lengths)
    picked = cache.select(torch.tensor([1, 1]))
    assert picked.lengths.tolist() == [1, 1] and picked.keys[0].flatten().tolist() == [20, 20]


def test_step_graph_is_incremental_causal_for_equal_lengths():
    a, b = step_graph(torch.full((3,), 5)), incremental_causal(3, 5)
    assert torch.equal(a.edge_index, b.edge_index) and a.num_src == b.num_src == 18
    ragged = step_graph(torch.tensor([2, 0]))             # query b sees its L_b keys and itself
    assert ragged.edge_index.tolist() == [[0, 1, 2, 3], [0, 0, 0, 1]]


def test_rms_norm_matches_t5_layer_norm():
    theirs = transformers.models.t5.modeling_t5.T5LayerNorm(11, eps=1e-6)
    ours = RMSNorm(11, eps=1e-6)
    with torch.no_grad():
        theirs.weight.normal_()
        ours.weight.copy_(theirs.weight)
    x = torch.randn(5, 11) * 3
    assert torch.equal(ours(x), theirs(x))
