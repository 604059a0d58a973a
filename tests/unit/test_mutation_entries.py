"""The mutation check (tests/mutation_check.py, run by hand) stays runnable: each entry's check is found,
exactly once, in the file it names. Two entries had gone stale when their lines changed, and the check then
skips them without anyone noticing."""

from __future__ import annotations

from pathlib import Path

from tests.mutation_check import MUTATIONS

ROOT = Path(__file__).resolve().parents[2]


def test_every_mutation_names_a_line_that_is_there_once() -> None:
    stale = [(name, f, (ROOT / f).read_text().count(old)) for name, f, old, _new, _test in MUTATIONS
             if (ROOT / f).read_text().count(old) != 1]
    assert not stale, stale
    assert all((ROOT / test.split("::")[0]).exists() for *_, test in MUTATIONS)
