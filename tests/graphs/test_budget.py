"""The memory budget: the environment variable's values, and the check before an allocation."""
import pytest

from gnn_attention.graphs import budget


@pytest.mark.parametrize("text, value", [
    ("8GiB", 8 * 2**30), ("512 MiB", 512 * 2**20), ("2e9", 2 * 10**9), ("1.5kb", 1500),
    ("off", 0), ("0", 0), ("None", 0), ("1", 1), ("3e+3", 3000),
])
def test_parse_bytes(text, value):
    assert budget.parse_bytes(text) == value


@pytest.mark.parametrize("text", ["0.5", "1e400", "-1", "8 gigs", "", "0.0", "1e-3GiB", "nan"])
def test_values_that_would_disable_or_overflow_are_errors(text):
    with pytest.raises(ValueError, match="byte count of at least 1"):
        budget.parse_bytes(text)


def test_check_reads_the_limit_at_every_call(monkeypatch):
    monkeypatch.delenv(budget.ENV_VAR, raising=False)
    assert budget.limit() == budget.DEFAULT_LIMIT
    budget.check(lambda: "x", budget.DEFAULT_LIMIT, "")
    with pytest.raises(budget.MemoryLimitError, match=r"^a table would need about 8\.0 GiB, over "
                                                      r"the limit of 8\.0 GiB\. Shrink it\."):
        budget.check(lambda: "a table", budget.DEFAULT_LIMIT + 1, "Shrink it.")
    monkeypatch.setenv(budget.ENV_VAR, "off")
    budget.check(lambda: "x", 10**30, "")
    monkeypatch.setenv(budget.ENV_VAR, "100")
    with pytest.raises(MemoryError, match="101 B, over the limit of 100 B"):
        budget.check(lambda: "x", 101, "")
    assert budget.human(1536) == "1.5 KiB" and budget.human(3 * 2**40) == "3.0 TiB"
