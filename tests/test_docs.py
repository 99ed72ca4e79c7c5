"""The reference pages say what the code does: every option with its default, every exception."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import django_postgresql_reconnect
from django_postgresql_reconnect import exceptions
from django_postgresql_reconnect.conf import TCP_DEFAULTS, ReconnectOptions

DOCS = Path(__file__).resolve().parent.parent / "docs"


def table_rows(page: str, heading: str) -> dict[str, str]:
    """First two cells of each row of the table under ``heading``, backticks removed."""
    text = (DOCS / page).read_text()
    section = text[text.index(heading) :].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells[1].strip("`")
    return rows


def test_every_option_is_documented_with_its_default():
    documented = table_rows("settings.md", "## Options")
    defaults = {
        f.name: repr(getattr(ReconnectOptions(), f.name)) for f in fields(ReconnectOptions)
    }
    assert documented == defaults


def test_every_tcp_default_is_documented_with_its_value():
    assert table_rows("settings.md", "## TCP defaults") == {
        key: str(value) for key, value in TCP_DEFAULTS.items()
    }


def test_every_exception_is_documented_and_every_documented_one_exists():
    text = (DOCS / "exceptions.md").read_text()
    named = set(re.findall(r"^\| `(\w+)` \|", text, re.MULTILINE))
    public = set(exceptions.__all__) - {"exception_for"}
    assert named == public
    assert set(exceptions.__all__) - {"exception_for"} <= set(dir(exceptions))
    for name in ("CommitOutcomeUnknown", "DatabaseUnavailable", "StatementInterrupted"):
        assert getattr(django_postgresql_reconnect, name) is getattr(exceptions, name)


def test_every_system_check_id_is_documented():
    source = (Path(exceptions.__file__).parent / "checks.py").read_text()
    source += (Path(exceptions.__file__).parent / "conf.py").read_text()
    ids = set(re.findall(r"django_postgresql_reconnect\.[EW]\d{3}", source))
    documented = set(
        re.findall(r"django_postgresql_reconnect\.[EW]\d{3}", (DOCS / "settings.md").read_text())
    )
    assert ids == documented


ROOT = DOCS.parent
REPOSITORY = "https://github.com/cloudblue/django-postgresql-reconnect/blob/main/"
RAW = "https://raw.githubusercontent.com/cloudblue/django-postgresql-reconnect/main/"


def test_the_readme_links_work_on_pypi_too():
    """The README is the PyPI page: a relative link there leads nowhere, so each is absolute,
    and one into this repository names a file that exists."""
    targets = re.findall(r"\]\(([^)\s]+)\)", (ROOT / "README.md").read_text())
    assert targets
    for target in targets:
        path = target.split("#", 1)[0]
        assert path.startswith("https://"), f"not absolute: {target}"
        if path.startswith((REPOSITORY, RAW)):
            relative = path.removeprefix(REPOSITORY).removeprefix(RAW)
            assert (ROOT / relative).is_file(), f"no such file in the repository: {relative}"
