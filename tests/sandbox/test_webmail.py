"""The webmail login page over verified HTTPS, and certificates that must fail verification."""

from __future__ import annotations

import ssl

import httpx
import pytest


def _get(sandbox_env) -> httpx.Response:
    webmail = sandbox_env.plan.target.webmail[0]
    ctx = ssl.create_default_context(cafile=str(sandbox_env.plan.target.ca_bundle))
    with httpx.Client(verify=ctx, timeout=5) as client:
        return client.get(webmail.url)


def test_login_page_over_verified_https(sandbox_env) -> None:
    response = _get(sandbox_env)
    assert response.status_code == 200
    for marker in sandbox_env.plan.target.webmail[0].markers:
        assert marker in response.text


@pytest.mark.parametrize("kind", ["expired", "wrong-host"])
def test_bad_certificate_fails_verification(sandbox_env, kind: str) -> None:
    sandbox_env.sandbox.use_webmail_cert(kind)
    try:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            _get(sandbox_env)
    finally:
        sandbox_env.sandbox.use_webmail_cert("good")
    assert _get(sandbox_env).status_code == 200


def test_stop_start_and_restart_serve_the_page_each_time(sandbox_env) -> None:
    # Regression: start right after stop used to race the old nginx for the port ("did not come up").
    box = sandbox_env.sandbox
    for i in range(10):
        before = box.status(["webmail"])[0].pid
        stopped = box.stop_service("webmail")
        assert not stopped.running and stopped.pid is None
        started = box.restart_service("webmail") if i % 2 else box.start_service("webmail")
        assert started.running and started.pid is not None and started.pid != before
        response = _get(sandbox_env)
        assert response.status_code == 200, f"round {i}"
        assert all(marker in response.text for marker in sandbox_env.plan.target.webmail[0].markers)
