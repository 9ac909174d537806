"""Fixtures for the training-workflow tests (helpers live in train_helpers.py)."""

import pytest
from train_helpers import _blob_data, _mlp


@pytest.fixture
def blob_data():
    return _blob_data()


@pytest.fixture
def mlp():
    return _mlp()
