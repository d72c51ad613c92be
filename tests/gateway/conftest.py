"""The gateway tests use the flow tests' engine fixtures (a private data dir, `chargeflow
run` subprocesses, the embedded broker)."""

from tests.flows.conftest import cf_env  # noqa: F401 - a fixture
