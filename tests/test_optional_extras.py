"""Tests that need a missing optional extra skip with the reason; other failures still fail."""

from __future__ import annotations

import doctest
import sys

import optional_extras
import pytest
from optional_extras import missing_optional_package

from gpudl.data.datasets import DatasetError


@pytest.fixture
def fake_extra(monkeypatch):
    """An optional extra that is certainly not installed."""
    monkeypatch.setitem(optional_extras._IMPORT_TO_PACKAGE, "gpudl_no_such_module", "no-such-pkg")
    return "gpudl_no_such_module"


def _raise_from_missing(name):
    try:
        __import__(name)
    except ImportError as exc:
        raise DatasetError("demo: needs the extra (pip install 'gpudl[data]')") from exc


def test_a_missing_extra_behind_a_gpudl_error_is_recognised(fake_extra):
    with pytest.raises(DatasetError) as info:
        _raise_from_missing(fake_extra)
    assert missing_optional_package(info.value) == "no-such-pkg"


def test_a_failing_docstring_example_is_unwrapped(fake_extra):
    try:
        __import__(fake_extra)
    except ImportError:
        wrapped = doctest.UnexpectedException(None, None, sys.exc_info())
    assert missing_optional_package(wrapped) == "no-such-pkg"


def test_other_failures_are_not_skips(monkeypatch):
    # A module that is not an optional extra, an installed extra, and no import error at all.
    assert missing_optional_package(ModuleNotFoundError("x", name="gpudl_no_such_module")) is None
    monkeypatch.setitem(optional_extras._IMPORT_TO_PACKAGE, "numpy", "numpy")
    assert missing_optional_package(ModuleNotFoundError("x", name="numpy")) is None
    assert missing_optional_package(ValueError("boom")) is None
    assert missing_optional_package(None) is None


def test_the_hooks_turn_the_failure_into_a_skip_with_the_reason(pytester):
    pytester.makeconftest(
        "import sys\n"
        f"sys.path.insert(0, {str(optional_extras.__file__.rsplit('/', 1)[0])!r})\n"
        "import optional_extras\n"
        "optional_extras._IMPORT_TO_PACKAGE['gpudl_no_such_module'] = 'no-such-pkg'\n"
        f"exec(open({str(__file__.rsplit('/', 2)[0] + '/conftest.py')!r}).read())\n")
    pytester.makepyfile(
        "def test_needs_it():\n    import gpudl_no_such_module\n\n"
        "def test_real_bug():\n    assert 1 == 2\n")
    result = pytester.runpytest("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=1, failed=1)
    result.stdout.fnmatch_lines(["*needs the optional package 'no-such-pkg'*"])
