"""The README's quickstart is what CI runs, and the results it shows come from files."""

import re

from tests.conftest import REPO


def _quickstart_lines():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def test_quickstart_has_two_command_lines_and_ci_runs_the_second():
    lines = _quickstart_lines()
    assert len(lines) == 2 and all("\n" not in line for line in lines)
    assert "kdtl train" in lines[0] and "pytest" in lines[1]
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert lines[1] in ci


def test_performance_block_is_the_benchmark_output():
    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- bench:start -->", 1)[1].split("<!-- bench:end -->", 1)[0].strip()
    bench = (REPO / "results" / "bench" / "bench.md")
    if bench.exists():
        assert block == bench.read_text().split("\n", 2)[2].strip()
