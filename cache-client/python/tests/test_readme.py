"""The README's Python example runs as written against the test cluster (twice, as a user
might run it again)."""

import os
import re

README = os.path.join(os.path.dirname(__file__), "..", "..", "..", "README.md")


def readme_example():
    text = open(README, encoding="utf-8").read()
    section = text[text.index("## Python") :]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "the README's Python section has a ```python example"
    return blocks[0]


def test_readme_example_runs(cluster_file, monkeypatch, capsys):
    monkeypatch.setenv("SHOAL_CLUSTER", cluster_file)
    code = compile(readme_example(), "README.md (Python example)", "exec")
    for _ in range(2):
        exec(code, {})
    printed = capsys.readouterr().out
    assert "b'color=blue'" in printed and "Event(" in printed, printed
