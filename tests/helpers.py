"""Helpers the test modules share (importable as ``helpers``: pytest puts tests/ on the path for
the root conftest). Fixtures live in conftest.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def one_error_line(result, alone: bool = True) -> str:
    """A click result of a user mistake: exit code 2, exactly one `error:` line, last, no traceback;
    ``alone``: nothing else printed either. Returns that line."""
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert result.exit_code == 2, result.output
    assert len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in result.output, result.output
    assert not alone or len(lines) == 1, result.output
    return errors[0]


def skip_or_fail(reason: str):
    if os.environ.get("EVENTSPD_REQUIRE_TENSORRT_RTX"):
        pytest.fail(f"EVENTSPD_REQUIRE_TENSORRT_RTX is set but: {reason}")
    pytest.skip(reason)
