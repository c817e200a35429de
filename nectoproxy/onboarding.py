"""The onboarding page: ``http://necto.setup/`` answered by the proxy itself.

A device that already uses the proxy but does not trust its CA yet opens this page to download
the CA certificate in the format its platform wants and to read the steps that make it trusted.
It is plain HTTP on purpose (over HTTPS the browser would reject the very CA it is about to
install) and it never contacts an upstream. Only the public certificate is served: routes are a
fixed table of generated documents, nothing maps a path to a file, so no path reaches the key.

The per-platform steps are data (:data:`PLATFORMS`) so that a test can check every command on
the page against the matching page in ``docs/certificates/``.
"""

from __future__ import annotations

import html
import logging
import plistlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio.to_thread
from cryptography.hazmat.primitives import serialization

from nectoproxy.certs import CertStore
from nectoproxy.config import Config
from nectoproxy.errors import CertError
from nectoproxy.flow import Flow, Response

log = logging.getLogger("nectoproxy.onboarding")

PEM_NAME = "nectoproxy-ca.pem"
DER_NAME = "nectoproxy-ca.crt"
MOBILECONFIG_NAME = "nectoproxy-ca.mobileconfig"
PROFILE_IDENTIFIER = "nectoproxy.ca"
DISPLAY_NAME = "NectoProxy CA"
#: uuid5 namespace for the profile's PayloadUUIDs: the same CA always gives the same UUIDs, so
#: installing the profile twice updates it instead of adding a second copy.
_UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "nectoproxy:onboarding:mobileconfig")
_COMMON_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


@dataclass(frozen=True)
class Step:
    """One instruction; ``command`` is shown as copy-pasteable code under the text."""

    text: str
    command: str | None = None


@dataclass(frozen=True)
class Platform:
    title: str
    doc: str  # the page in docs/certificates/ with the full story
    download: str  # the file this platform wants
    steps: tuple[Step, ...]


PLATFORMS: tuple[Platform, ...] = (
    Platform("macOS", "macos.md", PEM_NAME, (
        Step(f"Download {PEM_NAME}, then trust it for every user (asks for your password):",
             "sudo security add-trusted-cert -d -r trustRoot "
             f"-k /Library/Keychains/System.keychain ~/Downloads/{PEM_NAME}"),
        Step("Or double-click the file, add it to the System keychain, open NectoProxy CA in "
             "Keychain Access, expand Trust and set \"When using this certificate\" to "
             "\"Always Trust\"."),
    )),
    Platform("Windows", "windows.md", DER_NAME, (
        Step(f"Download {DER_NAME}, then in PowerShell trust it for your user account "
             "(confirm the security warning with Yes):",
             f'certutil -addstore -user Root "$env:USERPROFILE\\Downloads\\{DER_NAME}"'),
        Step("For every user of the machine, run this in PowerShell as Administrator instead:",
             f'certutil -addstore Root "$env:USERPROFILE\\Downloads\\{DER_NAME}"'),
    )),
    Platform("Linux", "linux.md", PEM_NAME, (
        Step(f"Download {PEM_NAME}. Debian and Ubuntu:",
             f"sudo cp ~/Downloads/{PEM_NAME} /usr/local/share/ca-certificates/nectoproxy-ca.crt"
             " && sudo update-ca-certificates"),
        Step("Fedora and RHEL:",
             f"sudo cp ~/Downloads/{PEM_NAME} /etc/pki/ca-trust/source/anchors/nectoproxy-ca.pem"
             " && sudo update-ca-trust"),
        Step("Chrome and Chromium keep their own database (certutil is in libnss3-tools):",
             f'certutil -d sql:$HOME/.pki/nssdb -A -t "C,," -n "NectoProxy CA" '
             f"-i ~/Downloads/{PEM_NAME}"),
    )),
    Platform("Firefox", "firefox.md", PEM_NAME, (
        Step(f"Download {PEM_NAME}. Open Settings > Privacy & Security > Certificates > View "
             "Certificates > Authorities > Import, choose the file and tick \"Trust this CA to "
             "identify websites\"."),
    )),
    Platform("iOS / iPadOS", "mobile.md", MOBILECONFIG_NAME, (
        Step(f"In Safari, tap {MOBILECONFIG_NAME} and allow the download."),
        Step("Settings > General > VPN & Device Management: tap NectoProxy CA, then Install."),
        Step("Settings > General > About > Certificate Trust Settings: switch on full trust for "
             "NectoProxy CA."),
    )),
    Platform("Android", "mobile.md", DER_NAME, (
        Step(f"Tap {DER_NAME} to download it."),
        Step("Settings > Security > Encryption & credentials > Install a certificate > CA "
             f"certificate, tap Install anyway, then pick {DER_NAME}."),
        Step("Browsers then trust it; apps only if their network_security_config.xml trusts "
             "user CAs (see mobile.md)."),
    )),
)


@dataclass(frozen=True)
class _CA:
    """Everything the pages need, computed once from the CA certificate."""

    pem: bytes
    der: bytes
    sha256: str
    sha1: str
    mobileconfig: bytes
    index: bytes


def mobileconfig(der: bytes, sha256: str) -> bytes:
    """An Apple configuration profile with the CA as its one root-certificate payload."""
    profile_uuid = uuid.uuid5(_UUID_NAMESPACE, f"profile:{sha256}")
    cert_uuid = uuid.uuid5(_UUID_NAMESPACE, f"root:{sha256}")
    profile = {
        "PayloadContent": [{
            "PayloadCertificateFileName": DER_NAME,
            "PayloadContent": der,
            "PayloadDescription": "Adds the NectoProxy root certificate authority.",
            "PayloadDisplayName": DISPLAY_NAME,
            "PayloadIdentifier": f"{PROFILE_IDENTIFIER}.root",
            "PayloadType": "com.apple.security.root",
            "PayloadUUID": str(cert_uuid).upper(),
            "PayloadVersion": 1,
        }],
        "PayloadDescription": "Lets this device trust HTTPS connections intercepted by "
                              f"NectoProxy (CA SHA-256 {sha256}).",
        "PayloadDisplayName": DISPLAY_NAME,
        "PayloadIdentifier": PROFILE_IDENTIFIER,
        "PayloadRemovalDisallowed": False,
        "PayloadType": "Configuration",
        "PayloadUUID": str(profile_uuid).upper(),
        "PayloadVersion": 1,
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML, sort_keys=True)


_CSS = """
body{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;
color:#1d1d1f;background:#fff}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
code,pre{font-family:ui-monospace,monospace;font-size:.9rem}
pre{background:#f4f4f6;padding:.6rem;overflow-x:auto;white-space:pre-wrap;word-break:break-all}
.fp{word-break:break-all;background:#f4f4f6;padding:.4rem;display:block}
.downloads a{display:inline-block;margin:.2rem .6rem .2rem 0;padding:.4rem .8rem;
border:1px solid #0a58ca;border-radius:.3rem;text-decoration:none}
.note{color:#555;font-size:.9rem}
""".strip()


def render_index(sha256: str, sha1: str, onboarding_host: str) -> str:
    """The HTML page: fingerprint, downloads, short steps per platform. Everything escaped."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>NectoProxy certificate setup</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>NectoProxy certificate setup</h1>",
        ("<p>This device reaches this page through NectoProxy. To let NectoProxy inspect HTTPS "
         "traffic without certificate warnings, install and trust its root CA certificate, "
         "then check that the fingerprint your system shows matches this one:</p>"),
        f'<p>SHA-256 fingerprint:<code class="fp" id="sha256">{esc(sha256)}</code></p>',
        f'<p class="note">SHA-1 (the Windows "thumbprint"): <code>{esc(sha1)}</code></p>',
        '<p class="downloads">',
        f'<a href="/{PEM_NAME}" download>{PEM_NAME}</a>',
        f'<a href="/{DER_NAME}" download>{DER_NAME}</a>',
        f'<a href="/{MOBILECONFIG_NAME}">{MOBILECONFIG_NAME}</a>',
        "</p>",
        ('<p class="note">The same certificate three ways: PEM for macOS, Linux and Firefox, DER '
         "for Windows and Android, a configuration profile for iOS. On the machine running "
         "NectoProxy, <code>nectoproxy cert install</code> does the work for you.</p>"),
    ]
    for platform in PLATFORMS:
        parts.append(f"<h2>{esc(platform.title)}</h2><ol>")
        for step in platform.steps:
            code = f"<pre><code>{esc(step.command)}</code></pre>" if step.command else ""
            parts.append(f"<li>{esc(step.text)}{code}</li>")
        parts.append(f'</ol><p class="note">Details: docs/certificates/{esc(platform.doc)} in '
                     "the NectoProxy documentation.</p>")
    parts += [
        "<h2>When you are done</h2>",
        ("<p>Anyone holding this CA's private key can impersonate any website to a device that "
         "trusts it. Remove the certificate again when you no longer use NectoProxy (each "
         "documentation page ends with the exact steps).</p>"),
        (f'<p class="note">Served by NectoProxy itself on http://{esc(onboarding_host)}/; '
         "nothing here left this proxy.</p>"),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _load_ca(store: CertStore, onboarding_host: str) -> _CA:
    store.load_or_create()
    pem = store.ca_pem()
    der = store.ca_cert.public_bytes(serialization.Encoding.DER)
    sha256, sha1 = store.fingerprint("sha256"), store.fingerprint("sha1")
    index = render_index(sha256, sha1, onboarding_host).encode()
    return _CA(pem, der, sha256, sha1, mobileconfig(der, sha256), index)


_Route = tuple[str, Callable[[_CA], bytes], str | None]  # content type, body, disposition
ROUTES: dict[str, _Route] = {
    "/": ("text/html; charset=utf-8", lambda ca: ca.index, None),
    # Saved as files: Android 11+ installs CA certificates only from a file, via Settings.
    f"/{PEM_NAME}": ("application/x-pem-file", lambda ca: ca.pem,
                     f'attachment; filename="{PEM_NAME}"'),
    f"/{DER_NAME}": ("application/x-x509-ca-cert", lambda ca: ca.der,
                     f'attachment; filename="{DER_NAME}"'),
    # Inline: Safari hands a profile it displays to the profile installer.
    f"/{MOBILECONFIG_NAME}": ("application/x-apple-aspen-config", lambda ca: ca.mobileconfig,
                              f'inline; filename="{MOBILECONFIG_NAME}"'),
}


class Onboarding:
    """Answers plain-HTTP requests for ``proxy.onboarding_host`` with the setup pages."""

    def __init__(self, config: Config) -> None:
        self._host = config.proxy.onboarding_host.strip().rstrip(".").lower()
        self._store = CertStore(config.certs_dir)
        self._ca: _CA | None = None

    def _is_for_us(self, flow: Flow) -> bool:
        request = flow.request
        return (
            bool(self._host)
            and flow.response is None  # a plugin that ran earlier answered already
            and request.scheme == "http"
            and request.method != "CONNECT"
            and request.host.rstrip(".").lower() == self._host
        )

    def on_request_headers(self, flow: Flow) -> Awaitable[None] | None:
        # The headers are all a page needs. Answering here, and not in on_request, matters:
        # a built-in on_request would make the engine buffer every request body of every flow.
        # A plain function that returns a coroutine only for the setup host: every other
        # request, all of them but a few, costs no coroutine (a third of this hook's cost).
        if not self._is_for_us(flow):
            return None
        return self._respond(flow)

    async def _respond(self, flow: Flow) -> None:
        flow.response = await self._answer(flow.request.method, flow.request.pathname)

    async def _answer(self, method: str, path: str) -> Response:
        route = ROUTES.get(path)
        if route is None:
            return _text(404, f"Not found. The certificate setup page is http://{self._host}/\n")
        if method not in ("GET", "HEAD"):
            response = _text(405, "Only GET and HEAD are supported here.\n")
            response.headers["Allow"] = "GET, HEAD"
            return response
        if self._ca is None:
            try:
                # The proxy created the CA before it started serving, so this only reads it.
                self._ca = await anyio.to_thread.run_sync(_load_ca, self._store, self._host)
            except CertError as exc:
                log.error("onboarding page: cannot read the CA: %s", exc)
                # The details (paths) go to the log, not to whoever asked on the network.
                return _text(503, "NectoProxy cannot read its CA certificate; see its log.\n")
        content_type, body_of, disposition = route
        headers = {"Content-Type": content_type, **_COMMON_HEADERS}
        if disposition:
            headers["Content-Disposition"] = disposition
        else:
            headers["Content-Security-Policy"] = (
                "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
                "form-action 'none'"
            )
        response = Response.make(200, body_of(self._ca), headers)
        if method == "HEAD":
            response.raw_content = b""  # Content-Length stays that of the GET body
        return response


def _text(status: int, message: str) -> Response:
    return Response.make(status, message, {"Content-Type": "text/plain; charset=utf-8",
                                           **_COMMON_HEADERS})


__all__ = ["PLATFORMS", "ROUTES", "Onboarding", "Platform", "Step", "mobileconfig"]
