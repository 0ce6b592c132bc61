"""Fixtures the server tests share."""

import pytest

from servers import models


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """Every built-in model, built once for the session."""
    out = tmp_path_factory.mktemp("models")
    for name in models.MODEL_NAMES:
        models.build_model(name, out)
    return out
