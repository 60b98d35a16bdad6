"""The README's tour runs as written and says what it computes."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_tour_runs():
    namespace = {}
    exec(compile(_blocks()[0], "README tour", "exec"), namespace)  # noqa: S102
    assert namespace["g"].num_edges == 15 + 6
    assert namespace["alpha"].shape == (21, 4)
    assert namespace["y"].shape == (4, 64) and namespace["out"].shape == (4096, 64)
    sparse = namespace["sparse"]
    assert sparse.num_edges / 4096**2 < 0.01  # "0.8 % dense"
    assert namespace["kernel"] == "csr"


def test_transformer_swap_runs_and_matches():
    namespace = {}
    exec(compile(_blocks()[1], "README swap", "exec"), namespace)  # noqa: S102
    assert namespace["out"].shape == (2, 5, 64)
    assert float(namespace["gap"]) < 1e-5


def test_ci_runs_the_readme_test_command():
    command = re.search(r"Run the tests:\n\n```bash\n(.*?)\n```", README.read_text()).group(1)
    assert command in (README.parent / ".ci" / "run").read_text()
