"""Atomic, verified checkpoints (gnn_attention.checkpoint)."""
import random

import numpy as np
import pytest
import torch

from gnn_attention.training import checkpoint as ck
from gnn_attention.training.checkpoint import (
    CheckpointError,
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)


def payload(step=3, scale=1.0):
    return {"step": step, "model": {"w": torch.arange(12.0).view(3, 4) * scale,
                                    "b": torch.ones(4, dtype=torch.bfloat16)},
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.98)}]},
            "scheduler": {"last_epoch": step}, "rng": capture_rng(),
            "data": {"epoch": 0, "index": step}, "config": {"task": "reverse"},
            "tokenizers": {"src": {"level": "char", "vocab": ["<pad>"]}}}


def test_roundtrip_with_weights_only(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", payload())
    raw = torch.load(path, weights_only=True)  # plain data only: loads without unpickling code
    assert raw["format"] == ck.FORMAT and len(raw["digest"]) == 64
    back = load_checkpoint(path)
    assert back["step"] == 3 and torch.equal(back["model"]["w"], payload()["model"]["w"])
    assert back["model"]["b"].dtype == torch.bfloat16
    assert not (tmp_path / "c.pt.tmp").exists()


def test_truncated_checkpoint_names_the_file(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", payload())
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match=r"c\.pt is truncated or corrupted"):
        load_checkpoint(path)


def test_flipped_byte_in_tensor_data_is_caught_by_the_digest(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", payload())
    data = bytearray(path.read_bytes())
    # The raw bytes of w are stored uncompressed; flipping one still unzips and unpickles fine.
    pos = bytes(data).find(np.arange(12, dtype=np.float32).tobytes())
    assert pos > 0
    data[pos + 25] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"c\.pt is corrupted.*digest"):
        load_checkpoint(path)


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nothing.pt")
    torch.save({"w": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a gnn-attention training checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(TypeError, match="plain data"):
        save_checkpoint(tmp_path / "bad.pt", {**payload(), "model": object()})
    assert not (tmp_path / "bad.pt").exists() and not (tmp_path / "bad.pt.tmp").exists()


def test_failed_save_never_overwrites_the_last_good_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "c.pt", payload(step=3))
    good = path.read_bytes()
    real_save = torch.save

    def dying_save(obj, f, *a, **kw):  # writes half a file, then the process "crashes"
        real_save(obj, f, *a, **kw)
        f.truncate(100)
        raise OSError("disk full")

    monkeypatch.setattr(ck.torch, "save", dying_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, payload(step=4, scale=2.0))
    assert path.read_bytes() == good and load_checkpoint(path)["step"] == 3
    assert not (tmp_path / "c.pt.tmp").exists()


def test_rng_states_roundtrip(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    save_checkpoint(tmp_path / "c.pt", payload())
    expected = (random.random(), float(np.random.rand()), torch.rand(3))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng(load_checkpoint(tmp_path / "c.pt")["rng"])
    got = (random.random(), float(np.random.rand()), torch.rand(3))
    assert got[:2] == expected[:2] and torch.equal(got[2], expected[2])
