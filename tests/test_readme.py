"""The README's tour runs as written and says what it computes."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_tour_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    namespace = {}
    exec(compile(blocks[0], "README tour", "exec"), namespace)  # noqa: S102
    assert namespace["g"].num_edges == 15 + 6
    assert namespace["alpha"].shape == (21, 4)
    assert namespace["y"].shape == (4, 64) and namespace["out"].shape == (1024, 64)


def test_ci_runs_the_readme_test_command():
    command = re.search(r"Run the tests:\n\n```bash\n(.*?)\n```", README.read_text()).group(1)
    assert command in (README.parent / ".ci" / "run").read_text()
