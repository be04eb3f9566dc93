"""IPv4 and IPv6 address patterns, and which names are hosts or addresses (facts.entities and
facts.header use them)."""

from __future__ import annotations

import re

HEX = r"[0-9A-Fa-f]"
H16 = r"[0-9A-Fa-f]{1,4}"
IPV4 = r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}"
# After an IPv6 address: no more hex groups (MAC-ish junk), but a ":port" may follow.
IPV6_END = rf"(?![\w.]|::|:{H16}(?![0-9A-Fa-f]))"
# IPv6 split by its first character, so that each branch starts with a character set.
IPV6_AFTER_COLON = (
    rf"(?::(?:ffff:(?:0{{1,4}}:)?)?{IPV4}"  # ::ffff:1.2.3.4
    rf"|(?::{H16}){{1,7}}"  # ::1, ::ffff:a:b
    r"|:(?![\w:]))"  # ::
)
IPV6_AFTER_FIRST_GROUP = (  # after "2001:"
    rf"(?:(?:{H16}:){{0,3}}:?(?:ffff:)?{IPV4}"  # 64:ff9b::1.2.3.4
    rf"|{H16}(?::{H16}){{6}}"  # all eight groups
    rf"|(?:{H16}:){{0,5}}(?::{H16}){{1,6}}"  # one "::" inside
    rf"|(?:{H16}:){{0,6}}:)"  # trailing "::"
)
OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|0?\d?\d)"  # "030" too: fail2ban's tests have one
IP4_OCTETS = re.compile(rf"{OCTET}\.{OCTET}\.{OCTET}\.{OCTET}")
_IP6_FULL = re.compile(rf"(?::{IPV6_AFTER_COLON}|{H16}:{IPV6_AFTER_FIRST_GROUP})")

# File name endings that look like a top-level domain; "app.log" is not a host.
_FILE_ENDINGS_TEXT = """
    log txt conf cfg ini json xml yml yaml toml csv tsv php html htm shtml xhtml js mjs css py
    pyc sh bash pl pm rb go rs java class jar war cpp hpp hh cc so dll exe bin gz tgz bz2 xz zip
    tar rar deb rpm pid sock lock tmp bak old orig swp db sqlite sql md rst pdf doc docx xls xlsx
    png jpg jpeg gif svg ico webp mp3 mp4 asp aspx jsp cgi htaccess htpasswd pem crt key csr
    service socket timer mount target slice scope err out env ts tsx vue map wasm iso img whl
    egg po mo inc tpl bat cmd ps ps1 tf lua erl ex exs kt swift scala dat idx tmpl
"""
_FILE_ENDINGS = frozenset(_FILE_ENDINGS_TEXT.split())


def is_domain_tld(tld: str) -> bool:
    # "JSchException" in com.jcraft.jsch.JSchException is a class, not a TLD
    return (tld.islower() or tld.isupper()) and tld.lower() not in _FILE_ENDINGS


def host_or_ip(name: str) -> tuple[str, str] | None:
    """The entity a bare name (URL host, syslog host field) stands for, if any."""
    if name[0].isalpha() and ":" not in name:
        return ("host", name)
    bare = name.strip("[]")
    if bare[0].isdigit() and "." in bare and ":" not in bare:
        return ("ip", bare) if IP4_OCTETS.fullmatch(bare) else None
    if ":" in bare:
        return ("ip", bare) if _IP6_FULL.fullmatch(bare) else None
    return ("host", name)
