"""The README's ``monitoring`` example runs as printed and says what the README says."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).parent.parent.parent / "README.md"


def test_readme_example_runs(capsys):
    text = README.read_text()
    code = re.search(r"<!-- readme-example -->\n```python\n(.*?)```", text, re.S)
    assert code, "README lost its example block"
    namespace: dict = {"__name__": "readme"}
    exec(compile(code.group(1), "README.md", "exec"), namespace)
    out = capsys.readouterr().out.splitlines()
    documented = re.search(r"reference's thresholds:\n\n```\n(.*?)\n\.\.\.\n```", text, re.S)
    assert documented
    assert out[: len(documented.group(1).splitlines())] == documented.group(1).splitlines()
    result, perf = namespace["result"], namespace["perf"]
    assert result["income"].drifted and not result["children"].drifted
    assert result["children"].method == "jensenshannon"  # an integer column with 4 values: categorical
    assert len(perf.slices) == 4 and all(s.labelled == 0 for s in perf.slices)
