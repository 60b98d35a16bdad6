"""The graph-builder benchmark runs, writes JSON and reports implicit builds."""
import json

from gnn_attention.tools import bench_graphs


def test_bench_graphs_smoke(tmp_path):
    path = tmp_path / "graphs.json"
    out = bench_graphs.run(Ts=(16, 32), Bs=(1, 3), reps=2, materialise_reps=1, threads=1,
                           path=path, progress=lambda line: None)
    rows = json.loads(path.read_text())["rows"]
    assert len(rows) == 4 * 2 * 2 and out["environment"]["threads"] == 1
    for r in rows:
        assert not r["materialized_after_build"] and r["build_ms"] >= 0
        assert (r["materialise_ms"] is None) == (r["B"] != 1)  # B > 1: build only
    causal = next(r for r in rows if (r["pattern"], r["B"], r["T"]) == ("causal", 3, 32))
    assert causal["edges"] == 3 * 32 * 33 // 2 and causal["edge_index_bytes"] == 16 * causal["edges"]
    assert "| causal | 3 | 32 | 1584 |" in bench_graphs.table(out)
