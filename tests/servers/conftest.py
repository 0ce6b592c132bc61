"""Fixtures the server tests share."""

import pytest
from aiohttp.test_utils import TestServer

from harness.core.profiles import Profile
from servers import models
from servers.emulated import EmulatedConfig
from servers.emulated import create_app as create_emulated
from servers.pool_file import Instance
from tests.conftest import make_profile_frame


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """Every built-in model, built once for the session."""
    out = tmp_path_factory.mktemp("models")
    for name in models.MODEL_NAMES:
        models.build_model(name, out)
    return out


@pytest.fixture
def profile():
    """fast: 10 ms (batch <= 100) / 40 ms (<= 1000); slow: 30 ms / 400 ms."""
    return Profile.from_frame(
        make_profile_frame(
            {
                ("fast", "rm2"): {100: [10.0], 1000: [40.0]},
                ("slow", "rm2"): {100: [30.0], 1000: [400.0]},
            }
        ),
        drop_max=False,
    )


@pytest.fixture
async def backends(profile):
    """Start emulated instances for the given types on free loopback ports; yields a starter."""
    servers = []

    async def start(*types):
        out = []
        for k, t in enumerate(types):
            srv = TestServer(create_emulated(EmulatedConfig(t, "rm2"), profile), host="127.0.0.1")
            await srv.start_server()
            servers.append(srv)
            out.append((Instance(f"{t}-{k}", str(srv.make_url("")).rstrip("/"), t, 0.1), srv))
        return out

    yield start
    for srv in servers:
        await srv.close()
