"""`avar services up --auth`: the local MLflow server asks for a password (basic auth), its
admin taken from the environment; a request without credentials is refused."""

from __future__ import annotations

import pytest
from http_status import status
from ports import free_port

from avar.errors import UserError
from avar.services import Stack, down, start_mlflow, wait_healthy

pytestmark = pytest.mark.slow
SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


def test_mlflow_with_auth_refuses_requests_without_the_password(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "avar-test-password-1")
    stack = Stack(tmp_path, free_port(), free_port(), auth=True)
    try:
        start_mlflow(stack)
        wait_healthy(f"{stack.mlflow_uri}/health", "mlflow-server", stack)
        assert status(stack.mlflow_uri + SEARCH) == 401
        assert status(stack.mlflow_uri + SEARCH, "admin", "wrong-password") == 401
        assert status(stack.mlflow_uri + SEARCH, "admin", "avar-test-password-1") == 200
        assert stack.env()["MLFLOW_TRACKING_USERNAME"] == "admin"
        assert "avar-test-password-1" not in (tmp_path / ".avar/mlflow-auth.ini").read_text()
    finally:
        down(stack, quiet=True)


def test_auth_without_an_admin_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_USERNAME", "admin")
    with pytest.raises(UserError, match="--auth: set MLFLOW_AUTH_ADMIN_PASSWORD"):
        start_mlflow(Stack(tmp_path, free_port(), free_port(), auth=True))
