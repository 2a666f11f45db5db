"""The counts the README and docs state about the shipped specs are the plans' (``droppos bench NAME --dry-run``):
editing a spec without its prose fails here, with the numbers to write."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from droppos.bench.plan import build_plan
from droppos.bench.spec import load_spec, shipped_specs

ROOT = Path(__file__).resolve().parents[1]


def counts(name: str) -> tuple[int, int]:
    """(runs, data checks) of a shipped spec's plan."""
    plan = build_plan(load_spec(shipped_specs()[name]), "OUT")
    data = sum(r.kind == "data" for r in plan)
    return len(plan) - data, data


def test_the_readme_dry_run_counts_are_the_plans():
    said = re.findall(r"bench (\w+) --dry-run\s+# the (\d+) runs and (\d+) data checks", (ROOT / "README.md").read_text())
    assert said, "the README no longer states a dry run's counts: update this test"
    for name, runs, data in said:
        assert (int(runs), int(data)) == counts(name), f"README: write 'the {counts(name)[0]} runs and {counts(name)[1]} data checks' for {name}"


@pytest.mark.parametrize("doc,name", [("smoke_results.md", "smoke"), ("smoke3_results.md", "smoke3"),
                                      ("smoke_pt3_results.md", "smoke_pt3")])
def test_a_published_table_was_made_by_the_spec_as_it_stands(doc, name):
    """docs/<spec>_results.md is the output of ``droppos bench <spec>``: its run count is the plan's."""
    m = re.search(r"^(\d+) runs \(finished (\d+)\)", (ROOT / "docs" / doc).read_text(), re.MULTILINE)
    assert m and int(m.group(1)) == int(m.group(2)) == counts(name)[0], (
        f"docs/{doc} is from another version of the {name} spec: rerun droppos bench {name} and copy its results.md")
