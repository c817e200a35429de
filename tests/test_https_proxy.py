"""HTTPS interception over real sockets and real TLS: curl, httpx, openssl, Python's ssl."""

from __future__ import annotations

import hashlib
import socket
import ssl
import stat
import subprocess

import pytest

from nectoproxy.testing import RunningProxy, proxy_config
from nectoproxy.testing.origin import Origin, pattern_sha256

MIB = 1024 * 1024


def tunnel(proxy_port: int, target: str, *, timeout: float = 10) -> socket.socket:
    """A socket on which CONNECT ``target`` succeeded."""
    sock = socket.create_connection(("127.0.0.1", proxy_port), timeout=timeout)
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


def test_curl_strict_verification(proxy, tls_origin):
    result = proxy.curl(f"https://localhost:{tls_origin.port}/json")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b'{"hello": "world", "n": 1}'


def test_leaf_chains_to_ca_and_verifies_x509_strict(proxy, tls_origin, tmp_path):
    sock = tunnel(proxy.port, f"localhost:{tls_origin.port}")
    context = ssl.create_default_context(cafile=str(proxy.ca_path))
    context.set_alpn_protocols(["h2", "http/1.1"])
    with context.wrap_socket(sock, server_hostname="localhost") as tls:
        assert tls.selected_alpn_protocol() == "h2"  # [proxy] http2 is on by default
        der = tls.getpeercert(binary_form=True)
    leaf = tmp_path / "leaf.pem"
    leaf.write_text(ssl.DER_cert_to_PEM_cert(der))
    result = subprocess.run(["openssl", "verify", "-x509_strict", "-CAfile", str(proxy.ca_path),
                             str(leaf)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    text = subprocess.run(["openssl", "x509", "-in", str(leaf), "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout
    assert "DNS:localhost" in text and "TLS Web Server Authentication" in text


def test_sni_names_the_leaf_and_the_upstream(proxy, tls_origin):
    # CONNECT by IP, SNI "localhost": the leaf is for the SNI name, the origin's certificate
    # is checked against it too.
    sock = tunnel(proxy.port, f"127.0.0.1:{tls_origin.port}")
    context = ssl.create_default_context(cafile=str(proxy.ca_path))
    with context.wrap_socket(sock, server_hostname="localhost") as tls:
        tls.sendall(b"GET /json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := tls.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200")
    assert reply.endswith(b'{"hello": "world", "n": 1}')


def test_a_server_name_that_is_no_host_name_falls_back_to_the_connect_target(proxy, tls_origin):
    # Go's hey sends "host:port" as its SNI: not a name a certificate can hold. The leaf is
    # for the CONNECT target instead (here an IP, in its IP SAN) and the request goes through.
    sock = tunnel(proxy.port, f"127.0.0.1:{tls_origin.port}")
    context = ssl.create_default_context(cafile=str(proxy.ca_path))
    context.check_hostname = False  # ssl would check the name it sent, not the IP
    with context.wrap_socket(sock, server_hostname=f"127.0.0.1:{tls_origin.port}") as tls:
        der = tls.getpeercert(binary_form=True)
        tls.sendall(b"GET /json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := tls.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    assert reply.endswith(b'{"hello": "world", "n": 1}')
    from cryptography import x509

    names = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_ip_literal_target_gets_ip_san(proxy, tls_origin):
    with proxy.client() as client:
        response = client.get(f"https://127.0.0.1:{tls_origin.port}/json")
    assert response.status_code == 200


def test_ipv6_connect_target(make_proxy, origin_ca):
    with Origin(tls=True, ca=origin_ca, host="::1") as v6, make_proxy() as proxy:
        result = proxy.curl(f"https://[::1]:{v6.port}/json")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b'{"hello": "world", "n": 1}'


@pytest.mark.parametrize("chunked", [False, True])
def test_https_download_and_upload_byte_exact(proxy, tls_origin, chunked):
    size = 4 * MIB + 7
    query = "?chunked=1" if chunked else ""
    with proxy.client() as client:
        response = client.get(f"{tls_origin.url}/bytes/{size}{query}")
        assert hashlib.sha256(response.content).hexdigest() == pattern_sha256(size)
        body = bytes(range(256)) * (3 * MIB // 256)
        content = iter([body[: MIB], body[MIB:]]) if chunked else body
        upload = client.put(tls_origin.url + "/upload", content=content)
    assert upload.json() == {"sha256": hashlib.sha256(body).hexdigest(), "length": len(body)}


def test_untrusted_upstream_is_502_naming_the_reason(make_proxy):
    import trustme

    with (Origin(tls=True, ca=trustme.CA()) as stranger, make_proxy() as proxy,
          proxy.client() as client):
        response = client.get(f"https://localhost:{stranger.port}/")
    assert response.status_code == 502
    assert "certificate verification failed for localhost" in response.text
    assert "self-signed" in response.text or "unable to get local issuer" in response.text


def test_ssl_insecure_accepts_untrusted_upstream(make_proxy):
    import trustme

    with Origin(tls=True, ca=trustme.CA()) as stranger, \
            make_proxy(config={"proxy": {"ssl_insecure": True}}) as proxy, \
            proxy.client() as client:
        response = client.get(f"https://localhost:{stranger.port}/json")
    assert response.status_code == 200


def test_ca_files_modes_and_reuse_across_restarts(tmp_path, origin_ca_path, tls_origin):
    certs = tmp_path / "certs"
    config = proxy_config(certs, origin_ca_path)
    with RunningProxy(config) as proxy:
        first = proxy.curl(f"https://localhost:{tls_origin.port}/")
        assert first.returncode == 0, first.stderr
    assert stat.S_IMODE(certs.stat().st_mode) == 0o700
    assert stat.S_IMODE((certs / "ca-key.pem").stat().st_mode) == 0o600
    leaves = sorted((certs / "domain-certs").iterdir())
    assert [p.name for p in leaves] == ["localhost.pem"]
    ca_before = (certs / "ca.pem").read_bytes()
    leaf_before = leaves[0].read_bytes()
    with RunningProxy(config) as proxy:
        again = proxy.curl(f"https://localhost:{tls_origin.port}/")
        assert again.returncode == 0, again.stderr
    assert (certs / "ca.pem").read_bytes() == ca_before
    assert (certs / "domain-certs" / "localhost.pem").read_bytes() == leaf_before


def test_clear_cache_cli_empties_domain_certs(tmp_path, origin_ca_path, tls_origin):
    certs = tmp_path / "certs"
    with RunningProxy(proxy_config(certs, origin_ca_path)) as proxy:
        assert proxy.curl(f"https://localhost:{tls_origin.port}/").returncode == 0
    assert list((certs / "domain-certs").iterdir())
    result = subprocess.run(["python", "-m", "nectoproxy", "--no-config", "cert", "--clear-cache",
                             "--certs-dir", str(certs)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert "1" in result.stdout
    assert list((certs / "domain-certs").iterdir()) == []


@pytest.mark.parametrize("target", ["localhost", "localhost:0", "localhost:99999", "[::1",
                                    "exa mple:443", ":443"])
def test_bad_connect_target_is_400(proxy, target):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 400"), reply


def test_garbage_instead_of_tls_is_closed_quietly(proxy, tls_origin, caplog):
    sock = tunnel(proxy.port, f"localhost:{tls_origin.port}")
    with sock:
        sock.sendall(b"\x16\x03\x01\x00\x05hello-not-a-client-hello")
        sock.settimeout(10)
        try:
            data = sock.recv(4096)
        except ConnectionResetError:
            data = b""
        assert not data.startswith(b"HTTP")  # closed (or a TLS alert), never an HTTP answer
    # The proxy is still fine and logged no traceback.
    assert proxy.curl(f"https://localhost:{tls_origin.port}/").returncode == 0
    assert "Traceback" not in caplog.text


def test_untrusting_client_fails_handshake_without_traceback(proxy, tls_origin, caplog):
    sock = tunnel(proxy.port, f"localhost:{tls_origin.port}")
    context = ssl.create_default_context()  # does not trust the NectoProxy CA
    with pytest.raises(ssl.SSLCertVerificationError):
        context.wrap_socket(sock, server_hostname="localhost")
    sock.close()
    assert proxy.curl(f"https://localhost:{tls_origin.port}/").returncode == 0
    assert "Traceback" not in caplog.text


def test_plain_http_inside_connect_is_proxied(proxy, origin):
    sock = tunnel(proxy.port, f"127.0.0.1:{origin.port}")
    with sock:
        sock.sendall(b"GET /json HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b'"n": 1}')
