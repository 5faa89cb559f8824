"""fvc.log.exit_on: the rule scripts' one-line error for bad input, tracebacks for the rest."""

from __future__ import annotations

import pytest

from fvc.formats import DataError
from fvc.log import exit_on


def test_expected_error_is_one_log_line_and_exit_1(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc_info, exit_on("fvc.test", DataError):
        raise DataError("meta.csv: row 3: empty label")
    assert exc_info.value.code == 1
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        ("fvc.test", "ERROR", "meta.csv: row 3: empty label")
    ]


def test_other_errors_propagate_with_their_traceback() -> None:
    with pytest.raises(KeyError), exit_on("fvc.test", DataError):
        raise KeyError("a bug, not bad input")
    with exit_on("fvc.test", DataError):
        pass  # no error: nothing happens
