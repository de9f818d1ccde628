"""HTTPS end to end (docs/https.md), for real: certbot obtains a certificate from Pebble
(Let's Encrypt's test CA, Debian's package) through the project's NGINX site with
remote/certificate.sh, the commands remote/setup.sh runs; NGINX serves it on ports 80 and 443
of a network namespace the test makes (loopback only), where ``classifier.test`` is this
host; sslyze, curl and Chromium check what a client gets, and a renewal reloads NGINX under
load. The sites without a domain (self-signed) and with the operator's own certificate run
on loopback ports like the other stack tests."""

from __future__ import annotations

import hashlib
import io
import os
import re
import socket
import ssl
import subprocess
import tarfile
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import requests
import trustme
from conftest import PHOTOS, Uwsgi, copy_of, start_uwsgi
from cryptography import x509
from playwright import sync_api
from playwright.sync_api import expect
from requests.adapters import HTTPAdapter
from sslyze import (
    CertificateInfoExtraArgument,
    ScanCommand,
    Scanner,
    ServerNetworkConfiguration,
    ServerNetworkLocation,
    ServerScanRequest,
)
from sslyze.scanner.models import ScanCommandsExtraArguments
from support.acme import Acme, NetworkNamespace, pebble
from support.ocsp import certificate_with_ocsp
from support.page import CHROMIUM, CHROMIUM_ARGS, FIRST_ANSWER

from bench.polling import wait_until
from bench.stack import NGINX, ROOT, Nginx, certificate_settings, start_nginx

pytestmark = [
    pytest.mark.tls, pytest.mark.stack,
    # The self-signed site is reached unverified on purpose; Pebble's roots have a serial
    # number newer cryptography frowns on (sslyze loads them).
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
]

NAME = "classifier.test"
CAT_LABELS = {"tabby", "tiger_cat", "Egyptian_cat"}
# Mozilla's intermediate profile, as OpenSSL names its TLS 1.2 ciphers (classifier-tls.conf);
# TLS 1.3 has only strong ones.
INTERMEDIATE_TLS12 = {
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-CHACHA20-POLY1305"}


@dataclass
class TlsSite:
    namespace: NetworkNamespace
    acme: Acme
    nginx: Nginx
    app: Uwsgi
    settings: dict[str, str]  # remote/certificate.sh's, as setup.sh would give them


def certificate_sh(step: str, nginx: Nginx, settings: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROOT / "remote" / "certificate.sh"), step], check=False, capture_output=True, text=True,
                          env={**os.environ, **certificate_settings(nginx.folder), **settings}, timeout=300)


def served_certificate(port: int = 443) -> x509.Certificate:
    """The certificate NGINX shows a client asking for ``NAME``, whoever signed it."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock, \
            context.wrap_socket(sock, server_hostname=NAME) as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def certbots_certificate(nginx: Nginx) -> x509.Certificate:
    """The certificate certbot keeps for ``NAME`` (its latest, after a renewal)."""
    return x509.load_pem_x509_certificate((nginx.folder / "letsencrypt" / "live" / NAME / "cert.pem").read_bytes())


def served_after_reload(nginx: Nginx, expected: x509.Certificate) -> x509.Certificate:
    """The certificate NGINX serves once it is ``expected`` and the reloads are over (certificate.sh
    obtain makes two: certbot's deploy hook, then its own after linking). Until an old worker
    learns of its replacement it keeps accepting connections with the old certificate, so one
    client may get the new one and the next the old: only a handshake made while one and the
    same worker (``worker_processes 1``) was the only one, before and after, says which
    certificate every later client gets."""
    def workers() -> list[int]:
        return [worker.pid for worker in psutil.Process(nginx.process.pid).children()]

    def settled() -> x509.Certificate | None:
        before, served, after = workers(), served_certificate(), workers()
        return served if before == after and len(after) == 1 else None

    return wait_until(settled, 30, lambda cert: cert == expected)


@pytest.fixture(scope="module")
def tls_site(prepared_keras_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsSite]:
    """uwsgi.ini behind classifier.conf on ports 80 and 443, with the certificate certbot got
    from Pebble for ``NAME`` (it started on a self-signed one, as setup.sh's first run does).
    Everything starts inside the namespace, but the fixture yields outside it: the other tests
    of the module, and what they start, stay on the machine's loopback with the session's
    Chromium (each test here enters through ``site``)."""
    folder = tmp_path_factory.mktemp("tls")
    namespace = NetworkNamespace()
    with ExitStack() as running:
        running.callback(namespace.close)
        with namespace.entered():
            acme = running.enter_context(pebble(folder / "acme"))
            app = start_uwsgi(folder, "uwsgi", CLASSIFIER_OFFLINE="1",
                              KERAS_HOME=str(copy_of(prepared_keras_home, folder / "keras")))
            running.callback(app.stop)
            settings = {"DOMAIN": NAME, "CERTBOT_EMAIL": "ops@classifier.test", **acme.certbot_settings()}
            nginx = start_nginx(folder / "nginx", {"127.0.0.1:8001": app.address}, ports=(80, 443), tls=settings)
            running.callback(nginx.stop)
            obtained = certificate_sh("obtain", nginx, settings)
            assert obtained.returncode == 0, obtained.stdout + obtained.stderr
            issued = certbots_certificate(nginx)
            assert served_after_reload(nginx, issued) == issued, "NGINX kept its old certificate"
        yield TlsSite(namespace, acme, nginx, app, settings)


@pytest.fixture
def site(tls_site: TlsSite) -> Iterator[TlsSite]:
    """The TLS site with this test inside its network namespace."""
    with tls_site.namespace.entered():
        yield tls_site


class _ByName(HTTPAdapter):
    """Connects to 127.0.0.1 and speaks TLS to ``NAME`` (SNI and certificate check), as a client
    that resolved the name would; no resolver of this machine knows it."""

    def init_poolmanager(self, *args: object, **kwargs: object) -> None:
        super().init_poolmanager(*args, **kwargs, server_hostname=NAME)


def client(site: TlsSite) -> requests.Session:
    session = requests.Session()
    session.mount("https://", _ByName())
    session.headers["Host"] = NAME
    session.verify = str(site.acme.root)
    session.trust_env = False  # this machine's REQUESTS_CA_BUNDLE would replace ``verify``
    return session


def curl(site: TlsSite, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--cacert", str(site.acme.root), "--resolve", f"{NAME}:443:127.0.0.1",
                           "--resolve", f"{NAME}:80:127.0.0.1", *args], check=False, capture_output=True, text=True, timeout=60)


def test_certbot_gets_a_certificate_through_the_site_and_nginx_serves_it(site):
    """The certificate is Pebble's for the name, and a client trusting Pebble's root (and
    nothing else) gets the app's answers through it."""
    served = served_certificate()
    names = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert names == [NAME]
    assert "Pebble" in served.issuer.rfc4514_string()
    answer = client(site).get("https://127.0.0.1/healthz", timeout=30)
    assert answer.status_code == 200, answer.text
    renewal = (site.nginx.folder / "letsencrypt" / "renewal" / f"{NAME}.conf").read_text()
    assert "authenticator = webroot" in renewal and "-s reload" in renewal  # the deploy hook reloads NGINX


def test_a_prediction_over_https(site):
    answer = client(site).post("https://127.0.0.1/predict", files={"image": PHOTOS["chelsea"].read_bytes()}, timeout=120)
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"][0]["label"] in CAT_LABELS


@pytest.mark.parametrize("path", ["/", "/static/style.css?v=1&x=%20y", "/predict?model=ResNet50"])
def test_plain_http_redirects_to_https_keeping_path_and_query(site, path):
    answer = requests.get(f"http://127.0.0.1{path}", headers={"Host": NAME}, allow_redirects=False, timeout=30)
    assert answer.status_code == 301
    assert answer.headers["Location"] == f"https://{NAME}{path}"
    assert "Strict-Transport-Security" not in answer.headers  # only over https
    assert len(answer.headers["X-Request-ID"]) == 32


def test_acme_challenges_are_answered_on_plain_http(site):
    """certbot's webroot: a file there is served over http, not redirected."""
    challenges = site.nginx.folder / "acme" / ".well-known" / "acme-challenge"
    challenges.mkdir(parents=True, exist_ok=True)
    (challenges / "token-1").write_text("token-1.key")
    answer = requests.get("http://127.0.0.1/.well-known/acme-challenge/token-1", headers={"Host": NAME},
                          allow_redirects=False, timeout=30)
    assert (answer.status_code, answer.text) == (200, "token-1.key")


def test_http2_and_hsts_with_curl(site):
    answer = curl(site, "--http2", "-D", "-", "-o", "/dev/null", f"https://{NAME}/static/style.css")
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.startswith("HTTP/2 200")
    assert "strict-transport-security: max-age=31536000" in answer.stdout.lower()


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_limits_and_json_errors_on_both_ports(site, scheme):
    """NGINX's own refusals come before the redirect and are the same JSON with the request's id."""
    session = client(site)
    long_uri = session.get(f"{scheme}://127.0.0.1/models?{'a' * 9000}", allow_redirects=False, timeout=30)
    big_header = session.get(f"{scheme}://127.0.0.1/models", headers={"X-Big": "a" * 9000},
                             allow_redirects=False, timeout=30)
    for answer, status, code in ((long_uri, 414, "uri_too_long"), (big_header, 431, "request_header_fields_too_large")):
        assert answer.status_code == status, answer.text
        assert answer.json()["error"]["code"] == code
        assert answer.json()["error"]["request_id"] == answer.headers["X-Request-ID"]


def test_upload_limits_and_request_ids_over_https(site):
    session = client(site)
    too_big = session.post("https://127.0.0.1/models", data=bytes(20_000), timeout=30)
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "request_entity_too_large"
    mine = session.get("https://127.0.0.1/models", headers={"X-Request-ID": "tls-test-1"}, timeout=30)
    assert mine.headers["X-Request-ID"] == "tls-test-1"
    not_json = session.post("https://127.0.0.1/predict", data=b"not an image",
                            headers={"Content-Type": "application/octet-stream"}, timeout=30)
    assert not_json.status_code >= 400 and "error" in not_json.json()


def test_sslyze_finds_a_modern_configuration(site):
    """A scanner nobody here wrote: no SSL 2/3 or TLS 1.0/1.1, no cipher outside Mozilla's
    intermediate profile, a chain valid against Pebble's root, HSTS."""
    request = ServerScanRequest(
        server_location=ServerNetworkLocation(hostname=NAME, port=443, ip_address="127.0.0.1"),
        network_configuration=ServerNetworkConfiguration(tls_server_name_indication=NAME),
        scan_commands={ScanCommand.SSL_2_0_CIPHER_SUITES, ScanCommand.SSL_3_0_CIPHER_SUITES,
                       ScanCommand.TLS_1_0_CIPHER_SUITES, ScanCommand.TLS_1_1_CIPHER_SUITES,
                       ScanCommand.TLS_1_2_CIPHER_SUITES, ScanCommand.TLS_1_3_CIPHER_SUITES,
                       ScanCommand.CERTIFICATE_INFO, ScanCommand.HTTP_HEADERS},
        scan_commands_extra_arguments=ScanCommandsExtraArguments(
            certificate_info=CertificateInfoExtraArgument(custom_ca_file=site.acme.root)))
    scanner = Scanner()
    scanner.queue_scans([request])
    [result] = list(scanner.get_results())
    scan = result.scan_result
    assert scan is not None, result.connectivity_error_trace

    def accepted(attempt) -> set[str]:
        assert attempt.result is not None, attempt.error_trace
        return {suite.cipher_suite.openssl_name for suite in attempt.result.accepted_cipher_suites}

    for old in (scan.ssl_2_0_cipher_suites, scan.ssl_3_0_cipher_suites, scan.tls_1_0_cipher_suites,
                scan.tls_1_1_cipher_suites):
        assert accepted(old) == set()
    tls12 = accepted(scan.tls_1_2_cipher_suites)
    assert tls12 and tls12 <= INTERMEDIATE_TLS12, tls12 - INTERMEDIATE_TLS12
    assert accepted(scan.tls_1_3_cipher_suites)
    [deployment] = scan.certificate_info.result.certificate_deployments
    custom = [r for r in deployment.path_validation_results if r.trust_store.path == site.acme.root]
    assert custom and custom[0].was_validation_successful, custom
    assert deployment.received_chain_has_valid_order and len(deployment.received_certificate_chain) == 2  # + intermediate
    hsts = scan.http_headers.result.strict_transport_security_header
    assert hsts is not None and hsts.max_age == 31536000


def test_renewal_reloads_nginx_with_the_new_certificate_and_loses_no_request(site):
    """``certbot renew --force-renewal`` (what the timer runs when a renewal is due) while a
    client keeps asking, each request on a new connection: every one is answered, and NGINX
    serves the new certificate afterwards."""
    before = served_certificate()
    answers: list[int | str] = []
    done = threading.Event()

    def keep_asking() -> None:  # 10 a second: under NGINX's 20 page views a second from one address
        while not done.wait(0.1):
            try:
                with client(site) as session:
                    answers.append(session.get("https://127.0.0.1/healthz", timeout=30).status_code)
            except requests.RequestException as error:
                answers.append(repr(error))

    asker = threading.Thread(target=keep_asking)  # started here: it lives in the namespace too
    asker.start()
    try:
        wait_until(lambda: len(answers), 30, lambda n: n >= 5)
        dirs = certificate_settings(site.nginx.folder)
        renewed = subprocess.run(["certbot", "renew", "--force-renewal", "--no-random-sleep-on-renew",
                                  "--config-dir", dirs["CERTBOT_DIR"], "--work-dir", dirs["CERTBOT_WORK_DIR"],
                                  "--logs-dir", dirs["CERTBOT_LOGS_DIR"]],
                                 check=False, capture_output=True, text=True, timeout=300,
                                 env={**os.environ, "REQUESTS_CA_BUNDLE": str(site.acme.listener_ca)})
        assert renewed.returncode == 0, renewed.stdout + renewed.stderr
        after = served_after_reload(site.nginx, certbots_certificate(site.nginx))
        count = len(answers)
        wait_until(lambda: len(answers), 30, lambda n: n >= count + 5)
    finally:
        done.set()
        asker.join()
    assert after != before and after.serial_number != before.serial_number
    assert set(answers) == {200}, [a for a in answers if a != 200]


# --- without a domain, with the operator's certificate, private: loopback ports --------------

@pytest.fixture(scope="module")
def app(prepared_keras_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Uwsgi]:
    folder = tmp_path_factory.mktemp("tls-app")
    app = start_uwsgi(folder, "uwsgi", CLASSIFIER_OFFLINE="1", KERAS_HOME=str(copy_of(prepared_keras_home, folder / "keras")))
    yield app
    app.stop()


def test_without_a_domain_a_self_signed_certificate_and_both_ports_serve(app, tmp_path):
    """setup.sh's default: https works (encrypted, so the camera is offered) but nobody vouches
    for it, so plain http is not redirected and no HSTS pins browsers to it."""
    nginx = start_nginx(tmp_path / "nginx", {"127.0.0.1:8001": app.address})
    try:
        plain = requests.get(f"{nginx.url}/healthz", allow_redirects=False, timeout=30)
        secure = requests.get(f"{nginx.https_url}/healthz", verify=False, timeout=30)
        assert plain.status_code == secure.status_code == 200
        assert "Strict-Transport-Security" not in secure.headers
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{nginx.https_url}/healthz", timeout=30)  # trusted by no one
        made = x509.load_pem_x509_certificate((tmp_path / "nginx" / "tls" / "self-signed.pem").read_bytes())
        assert made.issuer == made.subject
    finally:
        nginx.stop()


def upstreams_of(site_file: str, app: Uwsgi) -> dict[str, str]:
    """The site's app addresses, all mapped to ``app``: a cluster's two app hosts are one here."""
    if site_file == "classifier-cluster.conf":
        return {"app1.classifier.internal:8001": app.address, "app2.classifier.internal:8001": app.address}
    return {"127.0.0.1:8001": app.address}


@pytest.mark.parametrize("site_file", ["classifier.conf", "classifier-cluster.conf"])
def test_the_operators_own_certificate_is_served_with_redirect_http2_and_hsts(app, tmp_path, site_file):
    """TLS_CERTIFICATE and TLS_KEY: a certificate from elsewhere (here a test CA's), HSTS_MAX_AGE
    as set, plain http redirected keeping path and query, HTTP/2 on https and predictions
    through it; on one host and on a cluster's front host alike."""
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    issued.cert_chain_pems[0].write_to_path(tmp_path / "chain.pem")
    issued.private_key_pem.write_to_path(tmp_path / "key.pem")
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    nginx = start_nginx(tmp_path / "nginx", upstreams_of(site_file, app), site=site_file, tls={
        "TLS_CERTIFICATE": str(tmp_path / "chain.pem"), "TLS_KEY": str(tmp_path / "key.pem"), "HSTS_MAX_AGE": "600"})
    try:
        secure = requests.get(f"{nginx.https_url}/healthz", verify=tmp_path / "ca.pem", timeout=30)
        assert secure.status_code == 200 and secure.headers["Strict-Transport-Security"] == "max-age=600"
        plain = requests.get(f"{nginx.url}/models?x=1", allow_redirects=False, timeout=30)
        assert plain.status_code == 301 and plain.headers["Location"].endswith("/models?x=1")
        http2 = subprocess.run(["curl", "-sS", "--http2", "--cacert", str(tmp_path / "ca.pem"), "-D", "-", "-o", "/dev/null",
                                f"{nginx.https_url}/static/style.css"], capture_output=True, text=True, timeout=60)
        assert http2.stdout.startswith("HTTP/2 200"), http2.stdout + http2.stderr
        answer = requests.post(f"{nginx.https_url}/predict", files={"image": PHOTOS["chelsea"].read_bytes()},
                               verify=tmp_path / "ca.pem", timeout=120)
        assert answer.status_code == 200 and answer.json()["predictions"][0]["label"] in CAT_LABELS, answer.text
    finally:
        nginx.stop()


def debians_nginx_conf(folder: Path) -> str:
    """/etc/nginx/nginx.conf as the installed nginx-common package ships it, whatever this
    machine's copy has become: from the package's .deb (apt's cache, else downloaded), and the
    checksum dpkg keeps for the file says it is that one."""
    version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "nginx-common"], capture_output=True, text=True,
                             check=True).stdout
    deb = Path("/var/cache/apt/archives") / f"nginx-common_{version.replace(':', '%3a')}_all.deb"
    if not deb.exists():
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", f"nginx-common={version}"], cwd=folder, check=True, capture_output=True,
                       timeout=300)
        deb = next(folder.glob("nginx-common_*.deb"))
    files = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True).stdout
    shipped = tarfile.open(fileobj=io.BytesIO(files)).extractfile("./etc/nginx/nginx.conf").read()
    conffiles = subprocess.run(["dpkg-query", "-W", "-f=${Conffiles}", "nginx-common"], capture_output=True,
                               text=True, check=True).stdout
    assert f"/etc/nginx/nginx.conf {hashlib.md5(shipped).hexdigest()}" in conffiles
    return shipped.decode()


def on_loopback(nginx_conf: str) -> Callable[[Path], str]:
    """A host's nginx.conf with its paths moved to the test's folder (where ``site.conf`` is the
    only site) and NGINX in the foreground; every other line as it is."""
    def render(folder: Path) -> str:
        moved = {"user www-data;": "user root;" if os.geteuid() == 0 else "", "pid /run/nginx.pid;": f"pid {folder}/nginx.pid;",
                 "/var/log/nginx/": f"{folder}/", "include /etc/nginx/sites-enabled/*;": f"include {folder}/site.conf;"}
        text = nginx_conf
        for old, new in moved.items():
            assert old in text, old
            text = text.replace(old, new)
        return "daemon off;\n" + text

    return render


def handshake(url: str, version: str) -> str:
    """How ``openssl s_client`` fares offering only TLS ``version`` (tls1 ... tls1_3) with every
    cipher it knows, weak ones too (security level 0): "New, TLSv1.x" if a session was made,
    else the alert NGINX answered with."""
    port = url.rsplit(":", 1)[1]
    done = subprocess.run(["openssl", "s_client", f"-{version}", "-cipher", "ALL:@SECLEVEL=0", "-connect",
                           f"127.0.0.1:{port}"], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    found = re.search(r"New, TLSv[\d.]+|alert [a-z ]+", done.stdout + done.stderr)
    return found[0] if found else done.stdout + done.stderr


def test_debians_own_nginx_conf_as_setup_leaves_it_offers_only_tls_12_and_13(app, tmp_path):
    """The nginx package's stock nginx.conf sets ssl_protocols (TLS 1.0 and 1.1 too) and
    ssl_prefer_server_ciphers at http level: with the site's TLS snippet, NGINX refuses to
    start on it. remote/nginx-conf.sh (what setup.sh and the container's nginx stage run)
    leaves NGINX the snippet's settings: TLS 1.0 and 1.1 are refused as protocols, not merely
    for want of a cipher (a merged protocol list would answer "handshake failure")."""
    stock = debians_nginx_conf(tmp_path / "deb")
    with pytest.raises(RuntimeError, match='"ssl_prefer_server_ciphers" directive is duplicate'):
        start_nginx(tmp_path / "stock", {"127.0.0.1:8001": app.address}, nginx_conf=on_loopback(stock))
    edited = tmp_path / "nginx.conf"
    edited.write_text(stock)
    subprocess.run([str(ROOT / "remote" / "nginx-conf.sh"), str(edited)], check=True)
    once = edited.read_text()
    subprocess.run([str(ROOT / "remote" / "nginx-conf.sh"), str(edited)], check=True)
    assert edited.read_text() == once  # setup.sh runs again on every update: it changes nothing then
    nginx = start_nginx(tmp_path / "nginx", {"127.0.0.1:8001": app.address}, nginx_conf=on_loopback(edited.read_text()))
    try:
        checked = subprocess.run([NGINX, "-t", "-c", str(nginx.folder / "nginx.conf"), "-p", str(nginx.folder)],
                                 capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0 and "duplicate" not in checked.stderr, checked.stderr
        assert {version: handshake(nginx.https_url, version) for version in ("tls1", "tls1_1", "tls1_2", "tls1_3")} == {
            "tls1": "alert protocol version", "tls1_1": "alert protocol version",
            "tls1_2": "New, TLSv1.2", "tls1_3": "New, TLSv1.3"}
        assert requests.get(f"{nginx.https_url}/healthz", verify=False, timeout=30).status_code == 200
    finally:
        nginx.stop()


def test_ocsp_stapling_when_the_certificate_names_a_responder(app, tmp_path):
    """ssl_stapling: NGINX fetches the CA's signed "good" answer from the responder the
    certificate names, checks it against the chain, and sends it in the handshake (it fetches
    on a first handshake, so a client may need a few before one carries it)."""
    with certificate_with_ocsp(tmp_path / "ca") as certificate:
        nginx = start_nginx(tmp_path / "nginx", {"127.0.0.1:8001": app.address},
                            tls={"TLS_CERTIFICATE": str(certificate.chain), "TLS_KEY": str(certificate.key)})
        try:
            def handshake_status() -> str:
                return subprocess.run(["openssl", "s_client", "-status", "-CAfile", str(certificate.ca), "-connect",
                                       nginx.https_url.removeprefix("https://")], stdin=subprocess.DEVNULL,
                                      capture_output=True, text=True, timeout=30).stdout

            shown = wait_until(handshake_status, 30, lambda out: "Cert Status: good" in out)
            assert "OCSP Response Status: successful" in shown and "Cert Status: good" in shown, shown
            assert "Verify return code: 0 (ok)" in shown
        finally:
            nginx.stop()


def users(folder: Path) -> Path:
    """An htpasswd file with one user, alice, password s3cret (SHA-512 crypt, as docs/https.md makes it)."""
    hashed = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input="s3cret", capture_output=True,
                            text=True, check=True).stdout.strip()
    (folder / "htpasswd").write_text(f"alice:{hashed}\n")
    return folder / "htpasswd"


@pytest.mark.parametrize("site_file", ["classifier.conf", "classifier-cluster.conf"])
def test_a_private_site_asks_for_a_password_everywhere_but_health_checks(app, tmp_path, site_file):
    """HTPASSWD: page, API and static files answer 401 (JSON, asking for credentials) without
    them and as usual with them; /healthz and /readyz stay open for probes. The front host of
    a cluster is the same."""
    nginx = start_nginx(tmp_path / "nginx", upstreams_of(site_file, app), site=site_file, htpasswd=users(tmp_path))
    try:
        for path in ("/", "/models", "/static/style.css", "/openapi.json"):
            refused = requests.get(f"{nginx.https_url}{path}", verify=False, timeout=30)
            assert refused.status_code == 401, path
            assert refused.headers["WWW-Authenticate"] == 'Basic realm="Image classifier"'
            assert refused.json()["error"]["code"] == "unauthorized"
            wrong = requests.get(f"{nginx.https_url}{path}", auth=("alice", "guess"), verify=False, timeout=30)
            assert wrong.status_code == 401, path
            assert requests.get(f"{nginx.https_url}{path}", auth=("alice", "s3cret"), verify=False,
                                timeout=30).status_code == 200, path
        answer = requests.post(f"{nginx.https_url}/predict", auth=("alice", "s3cret"), verify=False, timeout=120,
                               files={"image": PHOTOS["chelsea"].read_bytes()})
        assert answer.json()["predictions"][0]["label"] in CAT_LABELS
        for probe in ("/healthz", "/readyz"):
            assert requests.get(f"{nginx.url}{probe}", timeout=30).status_code == 200, probe
    finally:
        nginx.stop()


# --- the page in Chromium at https://classifier.test/ -----------------------------------------

@pytest.fixture
def chromium(tls_site: TlsSite, browser, fake_video: Path, tmp_path: Path) -> Iterator[sync_api.Browser]:
    """Chromium in the site's namespace (through ``nsenter``: the session's Playwright driver
    lives outside it), with the fake camera, ``NAME`` resolved to the site and an NSS database
    that trusts Pebble's root, the way a person's browser trusts Let's Encrypt's."""
    nssdb = tmp_path / "home" / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    subprocess.run(["certutil", "-d", f"sql:{nssdb}", "-N", "--empty-password"], check=True)
    subprocess.run(["certutil", "-d", f"sql:{nssdb}", "-A", "-t", "C,,", "-n", "pebble", "-i", str(tls_site.acme.root)],
                   check=True)
    launcher = tmp_path / "chromium"
    launcher.write_text(f"#!/bin/sh\nexec nsenter --net=/proc/{os.getpid()}/fd/{tls_site.namespace.fd} {CHROMIUM} \"$@\"\n")
    launcher.chmod(0o755)
    launched = browser.browser_type.launch(executable_path=str(launcher), env={**os.environ, "HOME": str(tmp_path / "home")},
                                           args=[*CHROMIUM_ARGS, "--use-fake-device-for-media-stream",
                                                 "--use-fake-ui-for-media-stream",
                                                 f"--use-file-for-fake-video-capture={fake_video}",
                                                 f"--host-resolver-rules=MAP {NAME} 127.0.0.1"])
    yield launched
    launched.close()


@pytest.mark.browser
def test_the_page_on_https_classifies_and_the_camera_shows_live_labels(chromium):
    """A secure origin that is not localhost: the certificate is trusted (no interstitial), a
    photo is classified, and the camera is offered and labelled live. Plain http is sent here."""
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.goto(f"http://{NAME}/")
        assert page.url == f"https://{NAME}/"
        assert page.evaluate("window.isSecureContext") is True
        page.set_input_files("#image", PHOTOS["chelsea"])
        expect(page.locator("#result .prediction-label").first).to_have_text(
            re.compile("Tabby|Tiger cat|Egyptian cat"), timeout=FIRST_ANSWER)
        page.get_by_role("button", name="Use camera").click()
        labels = page.get_by_role("list", name="What the camera shows, best first").get_by_role("listitem")
        expect(labels).to_have_count(3, timeout=FIRST_ANSWER)
        with page.expect_response(f"https://{NAME}/predict") as frame:
            pass
        assert frame.value.ok
    finally:
        context.close()


def test_the_docs_shell_commands_run(site, tmp_path):
    """Every command in docs/https.md's ``sh`` blocks, on the test site: the doc's domain is
    ``NAME``, sudo is left out (the tests run as root), certbot keeps its files in the test's
    folder and trusts Pebble, curl resolves ``NAME`` to the namespace and trusts Pebble's root."""
    dirs = certificate_settings(site.nginx.folder)
    certbot_dirs = " ".join(f"--{flag} {dirs[name]}" for flag, name in (
        ("config-dir", "CERTBOT_DIR"), ("work-dir", "CERTBOT_WORK_DIR"), ("logs-dir", "CERTBOT_LOGS_DIR")))
    curl_options = f"--cacert {site.acme.root} --resolve {NAME}:443:127.0.0.1 --resolve {NAME}:80:127.0.0.1"
    text = (ROOT / "docs" / "https.md").read_text()
    commands = [line for block in re.findall(r"```sh\n(.*?)```", text, re.DOTALL) for line in block.splitlines() if line]
    assert len(commands) == 5, commands
    for command in commands:
        run = command.replace("classifier.example.org", NAME).removeprefix("sudo ")
        run = run.replace("certbot renew", f"certbot renew {certbot_dirs}").replace("curl ", f"curl {curl_options} ")
        done = subprocess.run(run, shell=True, cwd=ROOT if "remote/" in run else tmp_path, capture_output=True,
                              text=True, timeout=300, check=False, env={**os.environ, **dirs, **site.acme.certbot_settings()})
        assert done.returncode == 0, f"{command}\n{done.stdout}{done.stderr}"
        if command.startswith("curl --http2"):
            assert done.stdout.startswith("HTTP/2 200") and "strict-transport-security" in done.stdout
        elif command.startswith("curl"):
            assert done.stdout.startswith("HTTP/1.1 301") and f"location: https://{NAME}/models?x=1" in done.stdout.lower()
    assert (tmp_path / "users.htpasswd").read_text().startswith("alice:$6$")


def _redirect(site: TlsSite, on: bool) -> None:
    """Plain http redirected to https or not (a test config: with a trusted certificate,
    remote/certificate.sh always turns it on), NGINX reloaded and answering so."""
    snippet = Path(certificate_settings(site.nginx.folder)["TLS_SNIPPET"])
    snippet.write_text(re.sub(r'("~\^http:"\s+)[01];', rf"\g<1>{int(on)};", snippet.read_text()))
    subprocess.run(certificate_settings(site.nginx.folder)["NGINX_RELOAD"], shell=True, check=True, capture_output=True)
    status = wait_until(lambda: requests.get("http://127.0.0.1/", headers={"Host": NAME}, allow_redirects=False,
                                             timeout=30).status_code, 30, lambda code: code == (301 if on else 200))
    assert status == (301 if on else 200)


@pytest.mark.browser
def test_on_plain_http_the_camera_explanation_links_to_the_https_page(site, chromium):
    """With the redirect off, the page over plain http gets no camera; the explanation links to
    the same page at https://, where the camera works."""
    _redirect(site, on=False)
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.goto(f"http://{NAME}/")
        assert page.url == f"http://{NAME}/" and page.evaluate("window.isSecureContext") is False
        page.get_by_role("button", name="Use camera").click()
        problem = page.get_by_role("alert").filter(has_text="only to https:// pages")
        link = problem.get_by_role("link", name="Open this page at https://")
        expect(link).to_have_attribute("href", f"https://{NAME}/")
        link.click()
        expect(page).to_have_url(f"https://{NAME}/")
        page.get_by_role("button", name="Use camera").click()
        labels = page.get_by_role("list", name="What the camera shows, best first").get_by_role("listitem")
        expect(labels).to_have_count(3, timeout=FIRST_ANSWER)
    finally:
        context.close()
        _redirect(site, on=True)


@pytest.mark.browser
def test_a_private_site_classifies_in_chromium_with_credentials(app, browser, tmp_path):
    """The page, its script and style, and its predictions all pass basic authentication once
    the browser has the credentials (here given up front, as a person types them in the login box)."""
    nginx = start_nginx(tmp_path / "nginx", {"127.0.0.1:8001": app.address}, htpasswd=users(tmp_path))
    context = browser.new_context(http_credentials={"username": "alice", "password": "s3cret"},
                                  ignore_https_errors=True)  # the self-signed certificate
    try:
        page = context.new_page()
        page.goto(f"{nginx.https_url}/")
        page.set_input_files("#image", PHOTOS["chelsea"])
        expect(page.locator("#result .prediction-label").first).to_have_text(
            re.compile("Tabby|Tiger cat|Egyptian cat"), timeout=FIRST_ANSWER)
    finally:
        context.close()
        nginx.stop()
