"""Remote access to the locked server, as docs/runbook.md sets it up: nginx terminating TLS in front of 127.0.0.1.

The site file is taken from the runbook itself (only the listening address, the certificate paths and the server's
port changed for the test); the certificate comes from the sandbox CA. A real locked ``prefect server start``
(through ``pec-cutover server start``), a real nginx; nothing mocked.
"""

from __future__ import annotations

import re
import ssl
import subprocess
import textwrap
from pathlib import Path

import httpx
import pytest

from cutover.sandbox._ca import SandboxCA
from cutover.sandbox._prefect import BIN, PrefectStack
from cutover.sandbox._process import port_open, spawn, stop_pid, tail, wait_until

from .test_deployments_run import free_port
from .test_server_auth import locked_plan  # noqa: F401 (a fixture: the rehearsal plan, locked, in tmp_path)

REPO = Path(__file__).resolve().parents[2]


def runbook_site() -> str:
    """The runbook's nginx site file (the one ```nginx block)."""
    blocks = re.findall(r"```nginx\n(.*?)```", (REPO / "docs" / "runbook.md").read_text(), re.S)
    assert len(blocks) == 1, "the runbook shows one nginx site file"
    return blocks[0]


def runbook_client_commands() -> list[str]:
    """The runbook's commands for the server behind the proxy and its remote shells (the sh block after it)."""
    text = (REPO / "docs" / "runbook.md").read_text()
    after = text[text.index("```nginx"):]
    block = re.search(r"```sh\n(.*?)```", after, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


@pytest.fixture
def proxied(tmp_path: Path, locked_plan):
    """A locked server behind nginx with the sandbox CA's certificate; (stack, proxy URL, CA file, auth)."""
    _, plan, auth, _ = locked_plan
    plan_path = tmp_path / "plan.yaml"
    proxy_port, server_port = free_port(), free_port()
    proxy_url = f"https://127.0.0.1:{proxy_port}"
    ca = SandboxCA(tmp_path / "ca")
    ca.ensure()
    pair = ca.server_pair("good")  # issued for 127.0.0.1 and localhost

    # The runbook's server command, with the proxy's address in PREFECT_UI_API_URL.
    commands = runbook_client_commands()
    assert commands[0] == "PREFECT_UI_API_URL=https://prefect.fnofi.example/api pec-cutover server start --plan P"
    stack = PrefectStack(home=tmp_path / "prefect-home", port=server_port, plan_path=plan_path,
                         extra_env={"PREFECT_UI_API_URL": f"{proxy_url}/api"})

    site = runbook_site()
    for old, new in [("listen 443 ssl;", f"listen 127.0.0.1:{proxy_port} ssl;"),
                     ("/etc/pec-cutover/tls/prefect.pem", str(pair.cert)),
                     ("/etc/pec-cutover/tls/prefect.key", str(pair.key)),
                     ("http://127.0.0.1:4200;", f"http://127.0.0.1:{server_port};")]:
        assert old in site
        site = site.replace(old, new)
    nginx_dir = tmp_path / "nginx"
    (nginx_dir / "tmp").mkdir(parents=True)
    conf = nginx_dir / "nginx.conf"
    conf.write_text(textwrap.dedent(f"""\
        daemon off;
        master_process on;
        worker_processes 1;
        pid {nginx_dir}/nginx.pid;
        error_log {nginx_dir}/error.log warn;
        events {{ worker_connections 64; }}
        http {{
          access_log {nginx_dir}/access.log;
          client_body_temp_path {nginx_dir}/tmp/body;
          proxy_temp_path {nginx_dir}/tmp/proxy;
          fastcgi_temp_path {nginx_dir}/tmp/fastcgi;
          uwsgi_temp_path {nginx_dir}/tmp/uwsgi;
          scgi_temp_path {nginx_dir}/tmp/scgi;
        """) + site + "}\n")
    stack.start_server()
    pid = spawn(["/usr/sbin/nginx", "-e", str(nginx_dir / "error.log"), "-c", str(conf)],
                log_file=nginx_dir / "out.log", pid_file=nginx_dir / "spawn.pid")
    try:
        assert wait_until(lambda: port_open(proxy_port), timeout=30), \
            f"nginx did not start: {tail(nginx_dir / 'error.log')}"
        yield stack, f"{proxy_url}/api", ca.ca_cert_path, auth
    finally:
        stop_pid(pid, "nginx", conf, timeout=15.0)
        stack.stop()


def test_the_locked_server_behind_the_runbooks_tls_proxy(proxied, tmp_path):
    stack, api, ca_file, auth = proxied
    user, password = auth.split(":", 1)
    trusted = ssl.create_default_context(cafile=str(ca_file))

    # Only TLS, with the CA's certificate checked; the lock holds through the proxy.
    assert httpx.get(f"{api}/health", verify=trusted, timeout=30).status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{api}/health", timeout=30)  # a client that does not trust the CA refuses the certificate
    for path in ("/deployments/filter", "/flow_runs/filter"):
        assert httpx.post(f"{api}{path}", json={}, verify=trusted, timeout=30).status_code == 403  # CSRF first
    assert httpx.get(f"{api}/csrf-token", params={"client": "intruder"}, verify=trusted, timeout=30).status_code == 401
    assert httpx.get(f"{api}/csrf-token", params={"client": "intruder"}, verify=trusted, timeout=30,
                     auth=(user, "wrong-password")).status_code == 401
    assert httpx.get(f"{api}/csrf-token", params={"client": "operator"}, verify=trusted, timeout=30,
                     auth=(user, password)).status_code == 200

    # The UI is told to call the API through the proxy.
    settings = httpx.get(api.removesuffix("/api") + "/ui-settings", verify=trusted, timeout=30)
    assert settings.status_code == 200 and settings.json()["api_url"] == api

    # A remote shell as the runbook sets it: PREFECT_API_URL at the proxy, the private CA for Prefect.
    commands = runbook_client_commands()
    assert commands[1:] == ["export PREFECT_API_URL=https://prefect.fnofi.example/api",
                            "export PREFECT_API_SSL_CERT_FILE=/etc/pec-cutover/tls/ca.pem",
                            "pec-cutover history --plan P"]
    remote = {**stack.env, "PREFECT_API_URL": api, "PREFECT_API_SSL_CERT_FILE": str(ca_file), "COLUMNS": "200"}
    plan = str(stack.plan_path)
    history = subprocess.run([str(BIN / "pec-cutover"), "history", "--plan", plan], env=remote, capture_output=True,
                             text=True, timeout=180, cwd=REPO)
    assert history.returncode == 0, history.stdout + history.stderr
    # A change (POST with Prefect's CSRF token) by a `prefect` command through the proxy, seen on the server itself.
    created = subprocess.run([str(BIN / "pec-cutover"), "prefect", "--plan", plan, "--", "work-pool", "create",
                              "through-the-proxy", "--type", "process"], env=remote, capture_output=True, text=True,
                             timeout=180, cwd=REPO)
    assert created.returncode == 0, created.stdout + created.stderr
    assert stack._api("GET", "/work_pools/through-the-proxy")["name"] == "through-the-proxy"

    # Prefect's events travel over a websocket: one emitted through the proxy reaches the server's event store.
    emit = textwrap.dedent("""\
        import asyncio
        from prefect.events.clients import get_events_client
        from prefect.events.schemas.events import Event, Resource

        async def main():
            async with get_events_client(checkpoint_every=1) as client:
                await client.emit(Event(event="pec-cutover.proxy-check",
                                        resource=Resource({"prefect.resource.id": "pec-cutover.proxy"})))

        asyncio.run(main())
        """)
    script = tmp_path / "emit.py"
    script.write_text(emit)
    env = {**remote, "PREFECT_API_AUTH_STRING": auth}
    out = subprocess.run([str(BIN / "python"), str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr

    def stored() -> list:
        return stack._api("POST", "/events/filter", {"filter": {"event": {"name": ["pec-cutover.proxy-check"]}},
                                                      "limit": 5}).get("events", [])
    assert wait_until(lambda: bool(stored()), timeout=60, interval=1.0), "the event sent through the proxy: not stored"
    access = (tmp_path / "nginx" / "access.log").read_text()
    assert "/api/events/in" in access and " 101 " in access  # the websocket was upgraded by nginx
    assert password not in access and password not in (tmp_path / "nginx" / "error.log").read_text()
