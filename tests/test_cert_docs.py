"""docs/certificates/ is checked against the code it describes.

Commands in the guides must be copy-pasteable, so every ``nectoproxy`` invocation is parsed by
the real argument parser, every file under ``~/.nectoproxy/certs/`` is one the CA store really
writes, and the names, paths and host names the guides share with the code (export file names,
trust-store anchors, the NSS nickname, the onboarding host and its downloads) are compared with
the code's own constants. The onboarding page's short steps must match the guides they summarise.
"""

from __future__ import annotations

import argparse
import itertools
import re
import shlex
from pathlib import Path

import pytest

from nectoproxy import certs, onboarding, truststore
from nectoproxy.certcli import EXPORT_NAMES
from nectoproxy.cli import build_parser
from nectoproxy.config import ProxyConfig

DOCS = Path(__file__).resolve().parent.parent / "docs" / "certificates"
PLATFORM_PAGES = ("macos.md", "windows.md", "linux.md", "firefox.md", "mobile.md")
ALL_PAGES = ("README.md", *PLATFORM_PAGES)
ONBOARDING_HOST = ProxyConfig().onboarding_host

_FENCE = re.compile(r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```[ \t]*$", re.MULTILINE | re.DOTALL)
_INLINE = re.compile(r"`([^`]+)`")
_PLACEHOLDER = re.compile(r"<[^>\s]+>|\.\.\.|\b(?:PATH|DIR|FILE)\b")
_SUBSTITUTION = re.compile(r"\$\((nectoproxy(?:\s[^)]*)?)\)")
_SEPARATORS = re.compile(r"&&|\|\||;|\|")
_LEADING = re.compile(r"^(?:(?:sudo|do|then|time|\$)\s+)+")


def read(page: str) -> str:
    return (DOCS / page).read_text(encoding="utf-8")


def snippets(text: str) -> list[str]:
    """Every line of every fenced code block, then every inline code span (whitespace joined)."""
    out: list[str] = []
    for block in _FENCE.findall(text):
        out += [line for line in block.splitlines() if line.strip()]
    prose = _FENCE.sub("", text)
    out += [" ".join(span.split()) for span in _INLINE.findall(prose)]
    return out


def nectoproxy_commands(snippet: str) -> list[str]:
    """The ``nectoproxy ...`` commands in one shell line (after sudo, in loops, in $(...))."""
    line = snippet.replace('"$(command -v nectoproxy)"', "nectoproxy")
    found = _SUBSTITUTION.findall(line)
    line = _SUBSTITUTION.sub("SUBSTITUTED", line)
    for part in _SEPARATORS.split(line):
        part = _LEADING.sub("", part.strip())
        if re.match(r"nectoproxy(\s|$)", part):
            found.append(part)
    return found


def all_commands() -> list[tuple[str, str]]:
    return [(page, command) for page in ALL_PAGES for snippet in snippets(read(page))
            for command in nectoproxy_commands(snippet)]


def parse(command: str) -> argparse.Namespace:
    argv = shlex.split(command, comments=True)
    assert argv[0] == "nectoproxy"
    try:
        return build_parser().parse_args(argv[1:])
    except SystemExit as exc:  # argparse reports errors by exiting
        raise AssertionError(f"the CLI rejects {command!r} (exit {exc.code})") from None


def normalized(text: str) -> str:
    """Markdown emphasis dropped and whitespace collapsed, for phrase searches."""
    return " ".join(text.replace("**", "").split())


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    kept = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return kept.replace(" ", "-")


def anchors(page: str) -> set[str]:
    prose = _FENCE.sub("", read(page))
    return {slug(h) for h in re.findall(r"^#{1,6}\s+(.+?)\s*$", prose, re.MULTILINE)}


# -- the pages exist and are shaped like guides ---------------------------------------------------


def test_every_page_exists() -> None:
    for page in ALL_PAGES:
        assert (DOCS / page).is_file(), page


@pytest.mark.parametrize("page", PLATFORM_PAGES)
def test_platform_page_ends_with_verify_and_remove(page: str) -> None:
    prose = _FENCE.sub("", read(page))
    sections = re.findall(r"^## (.+?)\s*$", prose, re.MULTILINE)
    assert sections[-2:] == ["Verify it worked", "Remove the CA again"], sections


def test_overview_links_every_platform_page() -> None:
    targets = {link.partition("#")[0]
               for link in re.findall(r"\]\(([^)\s]+)\)", read("README.md"))}
    assert set(PLATFORM_PAGES) <= targets


@pytest.mark.parametrize("page", ALL_PAGES)
def test_relative_links_resolve(page: str) -> None:
    for target in re.findall(r"\]\(([^)\s]+)\)", _FENCE.sub("", read(page))):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        file = file or page
        assert (DOCS / file).is_file(), f"{page}: broken link {target}"
        if anchor:
            assert anchor in anchors(file), f"{page}: no heading for #{anchor} in {file}"


def test_overview_covers_the_seed_page() -> None:
    text = normalized(read("README.md"))
    for phrase in ("man-in-the-middle", "CONNECT", "0.0.0.0:8888", "~/.nectoproxy/certs/",
                   "NECTOPROXY_HOME", "[certs] dir", "Security considerations",
                   "nectoproxy cert --clear-cache", f"http://{ONBOARDING_HOST}/",
                   "Why does Firefox need a separate guide?", "unique to your installation"):
        assert phrase in text, phrase
    for name in (certs.CA_CERT_FILE, certs.CA_KEY_FILE, certs.DOMAIN_DIR):
        assert f"`{name}" in text, name


# -- commands and names match the code -----------------------------------------------------------


def test_every_nectoproxy_command_parses() -> None:
    commands = all_commands()
    checked = [(page, c) for page, c in commands if not _PLACEHOLDER.search(c)]
    assert len(checked) >= 20, checked
    seen_actions: set[str | None] = set()
    seen_flags: set[str] = set()
    for page, command in checked:
        args = parse(command)
        if args.command == "cert":
            seen_actions.add(args.cert_command)
            seen_flags |= {flag for flag in ("path", "clear_cache") if getattr(args, flag)}
    assert {None, "info", "export", "install", "uninstall", "regenerate"} <= seen_actions
    assert {"path", "clear_cache"} <= seen_flags


def test_parser_check_catches_mistakes() -> None:
    with pytest.raises(AssertionError):
        parse("nectoproxy cert install --nss-db /tmp/x")
    with pytest.raises(AssertionError):
        parse("nectoproxy cert export --format pkcs12")
    assert nectoproxy_commands(
        'for d in a b; do nectoproxy cert install --nssdb "$d"; done'
    ) == ['nectoproxy cert install --nssdb "$d"']
    assert nectoproxy_commands('sudo cp "$(nectoproxy cert --path)" /x') == [
        "nectoproxy cert --path"]


def test_certs_dir_files_are_the_stores_own() -> None:
    known = {certs.CA_CERT_FILE, certs.CA_KEY_FILE, certs.DOMAIN_DIR}
    pattern = re.compile(r"\.nectoproxy[/\\]certs[/\\]([^\s\"'`/\\)|,;]+)")
    named = {(page, name) for page in ALL_PAGES for name in pattern.findall(read(page))}
    assert named, "the guides name no file in ~/.nectoproxy/certs/"
    for page, name in named:
        assert name.rstrip(".:") in known, f"{page}: {name} is not a file NectoProxy writes"


def test_export_default_names_match_certcli() -> None:
    text = read("README.md")
    described = dict(re.findall(r"`--format (\w+)`(?:\s+\(the default\))?\s+writes\s+`([\w.-]+)`",
                                 text))
    assert described == EXPORT_NAMES
    for page, command in all_commands():
        args = parse(command) if not _PLACEHOLDER.search(command) else None
        if args is not None and getattr(args, "cert_command", None) == "export" and not args.out:
            assert EXPORT_NAMES[args.format] in read(page), (page, command)


def test_certificate_file_names_are_known() -> None:
    known = {*EXPORT_NAMES.values(), onboarding.PEM_NAME, onboarding.DER_NAME,
             onboarding.MOBILECONFIG_NAME}
    known |= {store.anchor.name for store in truststore.SYSTEM_STORES.values()}
    for page in ALL_PAGES:
        for name in re.findall(r"nectoproxy-ca\.[a-z0-9]+", read(page)):
            assert name in known, f"{page}: unknown file name {name}"


def test_onboarding_host_and_downloads_match_the_code() -> None:
    routes = set(onboarding.ROUTES)
    for page in ALL_PAGES:
        text = read(page)
        for host, path in re.findall(r"http://(necto\.[a-z]+)(/[\w.-]*)?", text):
            assert host == ONBOARDING_HOST, f"{page}: {host}"
            assert (path or "/") in routes, f"{page}: http://{host}{path} is not served"
    assert f"http://{ONBOARDING_HOST}/" in read("README.md")
    for page in PLATFORM_PAGES:
        assert f"http://{ONBOARDING_HOST}/" in read(page), page


def test_linux_anchors_match_nectoproxy_cert_install() -> None:
    # Hand-made anchors must sit where `nectoproxy cert uninstall` looks for them.
    text = read("linux.md")
    for store in truststore.SYSTEM_STORES.values():
        assert str(store.anchor) in text, store
        assert " ".join(store.refresh) in text, store


def test_nss_commands_use_the_nickname_and_trust() -> None:
    adds = [s for page in ALL_PAGES for s in snippets(read(page))
            if re.search(r"\bcertutil\b.*\s-A\s", s)]
    assert adds
    for snippet in adds:
        assert f'-n "{truststore.NICKNAME}"' in snippet, snippet
        assert f'-t "{truststore.NSS_TRUST}"' in snippet, snippet
    for page in ALL_PAGES:
        for snippet in snippets(read(page)):
            if re.search(r"\bcertutil\b.*\s-[DL]\s", snippet):
                assert f'-n "{truststore.NICKNAME}"' in snippet, snippet


def test_macos_commands_use_the_system_keychain() -> None:
    text = read("macos.md")
    assert truststore.MACOS_KEYCHAIN in text
    ca_path = "~/.nectoproxy/certs/ca.pem"
    [install] = truststore.manual_steps("darwin", Path(ca_path), None, install=True)
    assert install.replace("'", "") in text  # the command `nectoproxy cert install` prints


def test_windows_commands_match_nectoproxy_cert_install() -> None:
    text = read("windows.md")
    for line in truststore.manual_steps("win32", Path("CA"), None, install=True):
        command = line.replace('"CA"', '"$env:USERPROFILE\\.nectoproxy\\certs\\ca.pem"')
        command = command.replace("Import-Certificate -FilePath", "").split()[0]
        assert command in text
    for store in ("Cert:\\CurrentUser\\Root", "Cert:\\LocalMachine\\Root", "-addstore -user Root",
                  "-addstore Root", "-delstore -user Root", "-delstore Root"):
        assert store in text, store


# -- the onboarding page summarises the guides ----------------------------------------------------


@pytest.mark.parametrize("platform", onboarding.PLATFORMS, ids=lambda p: p.title)
def test_onboarding_steps_match_the_guides(platform: onboarding.Platform) -> None:
    doc = read(platform.doc)
    flat = normalized(doc)
    assert platform.download in doc
    for step in platform.steps:
        if step.command:
            assert step.command in doc, f"{platform.doc} lacks: {step.command}"
        # Every menu step ("A > B") and every quoted label the page names is in the guide.
        pieces = step.text.split(" > ")
        for left, right in itertools.pairwise(pieces):
            pair = f"{left.split()[-1]} > {right.split()[0].rstrip('.,:;')}"
            assert pair in flat, f"{platform.doc} lacks the menu step {pair!r}"
        for label in re.findall(r'"([^"]+)"', step.text):
            assert label in flat, f"{platform.doc} lacks {label!r}"
