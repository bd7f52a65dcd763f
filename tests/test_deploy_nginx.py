"""deploy/nginx/cos-relay.conf in front of a real `cos-relay serve`: TLS with a certificate made here, the
client's address recorded from the trusted proxy, a forged X-Forwarded-For believed from nowhere else, the
proxy's body limit the gateway's own, and the console's session cookie Secure behind it (and only there)."""

from __future__ import annotations

import getpass
import re
import shutil
import signal
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from relay.store.records import Target
from tests.conftest import ADMIN_TOKEN, CALLBACK_TOKEN, callback_url
from tests.live import ProcessServer, free_port, wait_until
from tests.test_connections import SECONDS, TOKENS, fresh, recorded_sources

#: Slow tier: nginx and a gateway as child processes.
pytestmark = pytest.mark.slow

TEMPLATE = Path(__file__).parent.parent / "deploy" / "nginx" / "cos-relay.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
#: All of 127.0.0.0/8 is loopback on Linux: the client uses its own address, so the proxy's (127.0.0.1)
#: and the client's can be told apart in what the gateway records.
CLIENT = "127.0.0.2"
STRANGER = "127.0.0.3"


@dataclass
class Proxy:
    port: int
    ca: Path
    access_log: Path

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def client(self, **headers: str) -> httpx.Client:
        context = ssl.create_default_context(cafile=str(self.ca))
        transport = httpx.HTTPTransport(verify=context, local_address=CLIENT)
        return httpx.Client(base_url=self.url, transport=transport, headers=headers, timeout=SECONDS)


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1; the client trusts exactly it."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subject = ["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
    key_type = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    files = ["-keyout", str(key), "-out", str(cert)]
    subprocess.run(
        ["openssl", "req", "-x509", *key_type, "-days", "1", *subject, *files], check=True, capture_output=True
    )
    return cert, key


def render(folder: Path, *, listen: int, upstream: int, cert: Path, key: Path) -> Path:
    """The committed server block with its placeholders filled, inside a minimal nginx.conf of the test's own."""
    site = TEMPLATE.read_text()
    for placeholder, value in {
        "__LISTEN__": f"127.0.0.1:{listen}",
        "__SERVER_NAME__": "localhost",
        "__CERTIFICATE__": str(cert),
        "__CERTIFICATE_KEY__": str(key),
        "__UPSTREAM_PORT__": str(upstream),
        "__ACCESS_LOG__": str(folder / "access.log"),
    }.items():
        assert placeholder in site, placeholder
        site = site.replace(placeholder, value)
    assert "__" not in site, "a placeholder the test does not fill"
    (folder / "cos-relay.conf").write_text(site)
    temp = " ".join(
        f"{kind}_temp_path {folder / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main = folder / "nginx.conf"
    # `user`: when the tests run as root, workers stay this user so they can write the temp folders here.
    main.write_text(
        f"daemon off;\nworker_processes 1;\nuser {getpass.getuser()};\npid {folder / 'nginx.pid'};\n"
        f"error_log {folder / 'error.log'} warn;\nevents {{ worker_connections 64; }}\n"
        f"http {{\n  access_log off;\n  {temp}\n  include {folder / 'cos-relay.conf'};\n}}\n"
    )
    return main


@pytest.fixture(scope="module")
def gateway(module_database: Target) -> Iterator[ProcessServer]:
    db = module_database
    server = ProcessServer(db, args=(*TOKENS, "--forwarded-allow-ips", "127.0.0.1")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, gateway: ProcessServer) -> Iterator[Proxy]:
    folder = tmp_path_factory.mktemp("nginx")
    cert, key = make_certificate(folder)
    port = free_port()
    config = render(folder, listen=port, upstream=gateway.port, cert=cert, key=key)
    checked = subprocess.run(
        [NGINX, "-t", "-p", str(folder), "-e", str(folder / "error.log"), "-c", str(config)],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stderr
    process = subprocess.Popen(
        [NGINX, "-p", str(folder), "-e", str(folder / "error.log"), "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    started = Proxy(port, cert, folder / "access.log")

    def healthy() -> bool:
        assert process.poll() is None, f"nginx exited: {(folder / 'error.log').read_text()}"
        try:
            with started.client() as client:
                return client.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(healthy, timeout=SECONDS, what="nginx answering /healthz through TLS")
        yield started
    finally:
        process.send_signal(signal.SIGQUIT)  # graceful: workers finish, the master removes its pid file
        try:
            process.wait(timeout=SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_a_callback_through_the_tls_proxy_is_accepted_and_recorded_from_the_client(
    proxy: Proxy, gateway: ProcessServer
) -> None:
    with proxy.client() as client:
        response = client.post(callback_url(), content=fresh(100))
    assert response.status_code == 200, response.text
    assert response.http_version == "HTTP/1.1"
    assert recorded_sources(gateway.url, 1) == [CLIENT]


def test_the_access_log_records_each_callback_without_its_token(proxy: Proxy) -> None:
    with proxy.client() as client:
        assert client.post(callback_url(), content=fresh(102)).status_code == 200
    wait_until(lambda: b"POST /cos/callback " in proxy.access_log.read_bytes(), what="the callback in the access log")
    logged = proxy.access_log.read_text()
    assert CALLBACK_TOKEN not in logged
    assert "token" not in logged


def test_a_client_cannot_choose_its_recorded_address_through_the_proxy(proxy: Proxy, gateway: ProcessServer) -> None:
    with proxy.client(**{"X-Forwarded-For": "203.0.113.7"}) as client:
        assert client.post(callback_url(), content=fresh(101)).status_code == 200
    assert recorded_sources(gateway.url, 1) == [CLIENT]


def test_a_forged_forwarded_address_sent_straight_to_the_gateway_is_not_believed(gateway: ProcessServer) -> None:
    transport = httpx.HTTPTransport(local_address=STRANGER)
    with httpx.Client(base_url=gateway.url, transport=transport, timeout=SECONDS) as client:
        response = client.post(callback_url(), content=fresh(102), headers={"X-Forwarded-For": "203.0.113.8"})
    assert response.status_code == 200
    assert recorded_sources(gateway.url, 1) == [STRANGER]


def test_the_proxy_refuses_a_body_over_the_gateways_limit(proxy: Proxy) -> None:
    with proxy.client() as client:
        response = client.post(callback_url(), content=b"<" + b"a" * (10 * 1024 * 1024))
    assert response.status_code == 413


def test_the_proxy_without_a_trusted_certificate_is_refused(proxy: Proxy) -> None:
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"), httpx.Client(timeout=SECONDS) as client:
        client.get(f"{proxy.url}/healthz")


def test_the_console_session_cookie_is_secure_behind_the_tls_proxy_and_its_forms_work(proxy: Proxy) -> None:
    with proxy.client(Origin=proxy.url) as client:
        signed_in = client.post("/console/login", data={"token": ADMIN_TOKEN})
        assert signed_in.status_code == 303, signed_in.text
        cookie = signed_in.headers["set-cookie"].lower()
        assert "; secure" in cookie
        assert "httponly" in cookie
        # The cookie comes back over https, and a form posted from the console's https origin is accepted
        # (nginx's Host carries no port: the host name must match).
        page = client.get("/console/jobs")
        assert page.status_code == 200
        found = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert found is not None
        signed_out = client.post("/console/logout", data={"csrf": found[1]})
        assert (signed_out.status_code, signed_out.headers["location"]) == (303, "/console/login")


def test_a_forged_forwarded_proto_sent_straight_to_the_gateway_gets_no_secure_cookie(gateway: ProcessServer) -> None:
    transport = httpx.HTTPTransport(local_address=STRANGER)
    with httpx.Client(base_url=gateway.url, transport=transport, timeout=SECONDS) as client:
        response = client.post(
            "/console/login",
            data={"token": ADMIN_TOKEN},
            headers={"X-Forwarded-Proto": "https", "Origin": gateway.url},
        )
    assert response.status_code == 303, response.text
    assert "secure" not in response.headers["set-cookie"].lower()


@pytest.mark.parametrize("shipped", sorted((TEMPLATE.parent).glob("*.conf")), ids=lambda path: path.name)
def test_every_shipped_config_logs_requests_without_their_query_string(shipped: Path) -> None:
    text = shipped.read_text()
    assert re.search(r"^\s*access_log __ACCESS_LOG__ cos_relay;", text, re.MULTILINE), "an access_log of its own"
    log_format = text[text.index("log_format cos_relay") : text.index(";", text.index("log_format cos_relay"))]
    for variable in ("$request ", '$request"', "$request_uri", "$args", "$query_string", "$is_args"):
        assert variable not in log_format, variable
