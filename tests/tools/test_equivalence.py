"""The `gnn-attention equivalence` sweep: runs, writes JSON, and reports errors within tolerance."""
import json

import torch

from gnn_attention.cli.app import main
from gnn_attention.tools import equivalence


def test_equivalence_command_writes_json(tmp_path, capsys):
    path = tmp_path / "eq.json"
    assert main(["equivalence", "--quick", "--json", str(path)]) == 0
    data = json.loads(path.read_text())
    assert len(data["rows"]) == 2 * len(equivalence.CASES)
    assert data["environment"]["torch"] == torch.__version__
    out = capsys.readouterr().out
    assert "| causal+padding | float32 |" in out and "12 of 12 cases within tolerance" in out


def test_sweep_measures_real_differences(monkeypatch):
    row = equivalence.compare_case("cross+padding", 2, 4, 6, 12, 3, torch.float64)
    assert 0 <= row.mha_out <= 1e-12 and 0 <= row.sdpa_grad <= 1e-12
    # A wrong scale in the graph path must show up in the table, not be hidden by it.
    real = equivalence.graph_attention
    monkeypatch.setattr(equivalence, "graph_attention", lambda *a, **k: real(*a, scale=1.0, **k))
    assert equivalence.compare_case("self", 2, 4, 4, 12, 3, torch.float64).sdpa_out > 1e-3
