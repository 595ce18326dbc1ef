"""One table of exit codes: cli.EXIT_CODES, which --help prints and the README's table must match."""

from __future__ import annotations

import re

import pytest

from bulkdl import cli

from .conftest import REPO

_ROW = re.compile(r"\| (\d+) \| (.*) \|")


def _readme_section() -> str:
    text = (REPO / "README.md").read_text()
    return text.split("\n## Exit codes\n", 1)[1].split("\n## ", 1)[0]


def test_the_readme_lists_every_code_as_the_cli_does() -> None:
    section = _readme_section()
    rows = [(int(code), situation.replace("`", "")) for code, situation in _ROW.findall(section)]
    assert rows == list(cli.EXIT_CODES)
    assert cli.precedence() in section


def test_the_codes_are_the_ones_main_returns() -> None:
    listed = {code for code, _ in cli.EXIT_CODES}
    constants = {value for name, value in vars(cli).items() if name.startswith("EXIT_") and isinstance(value, int)}
    assert listed == constants
    assert set(cli.EXIT_PRECEDENCE) <= listed


def test_run_help_ends_with_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    shown = capsys.readouterr().out
    assert shown.rstrip().endswith(cli.exit_code_table())
    for code, situation in cli.EXIT_CODES:
        assert re.search(rf"^  {code} +{re.escape(situation.split()[0])}", shown, re.MULTILINE), code
