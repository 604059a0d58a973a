"""Helpers shared by unit and integration tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from primia.config import CryptoSettings
from primia.store.keys import KeyRing, init_key_file, load_keyring


def assert_one_line_error(result: Any, needle: str) -> None:
    """A CLI result that failed on bad input: exit 2, its last line one `error:` line naming the problem
    (a progress bar may come before it), no traceback."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.output
    assert needle in errors[0] and "Traceback" not in result.output


def make_keyring(folder: Path) -> KeyRing:
    """A fresh key file (master key + signing key, 0600) under `folder`, loaded."""
    init_key_file(folder / "keys" / "keyring.json")
    return load_keyring(CryptoSettings(), folder)
