"""facts.entities on real log lines (fail2ban 1.0.2's test data): timestamps, entities of
every kind, masks, and no entities where a careless pattern would see some."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from streamd.facts.entities import scan_line

DATA = Path(__file__).parent / "data" / "fail2ban-more.log"
MORE = [line for line in DATA.read_text().splitlines() if line and not line.startswith("#")]


def _more(fragment: str) -> str:
    """The first line of the data file with this fragment."""
    return next(line for line in MORE if fragment in line)


def _entities(line: str) -> Counter[tuple[str, str]]:
    return Counter(scan_line(line).entities)


def _values(line: str, kind: str) -> list[str]:
    return [value for k, value in scan_line(line).entities if k == kind]


def test_a_syslog_sshd_line_is_masked_and_its_entities_found() -> None:
    line = (
        "Feb 25 14:34:10 belka sshd[31602]: Failed password for invalid user ROOT from "
        "194.117.26.69 port 50273 ssh2"
    )
    scanned = scan_line(line)
    # the timestamp, syslog host and pid are dropped; variable parts masked
    assert scanned.masked == (
        "sshd: Failed password for invalid user ROOT from <IP> port <NUM> ssh2"
    )
    assert scanned.timestamp == "Feb 25 14:34:10"
    assert _entities(line) == Counter(
        {
            ("host", "belka"): 1,
            ("program", "sshd"): 1,
            ("user", "ROOT"): 1,
            ("ip", "194.117.26.69"): 1,
        }
    )
    assert scanned.severities == ("failure", "denied")


@pytest.mark.parametrize(
    ("line", "ips"),
    [
        (  # compressed IPv6
            "Feb 25 14:34:10 belka sshd[31603]: Failed password for invalid user ROOT from "
            "aaaa:bbbb:cccc:1234::1:1 port 50273 ssh2",
            ["aaaa:bbbb:cccc:1234::1:1"],
        ),
        (  # IPv4-mapped
            "Jan  5 01:31:41 www sshd[1643]: ROOT LOGIN REFUSED FROM ::ffff:1.2.3.4",
            ["::ffff:1.2.3.4"],
        ),
        (  # all eight groups
            "May 29 20:56:56 imago sshd[28732]: error: PAM: Authentication failure for "
            "test-ipv6 from 2606:2800:220:1:248:1893:25c8:1946",
            ["2606:2800:220:1:248:1893:25c8:1946"],
        ),
        (  # an address with a port; and the port after a mapped address
            "Feb 11 15:23:17 dropbear[1252]: login attempt for nonexistent user from "
            "::ffff:198.51.100.215:60495",
            ["::ffff:198.51.100.215"],
        ),
        (  # haproxy's "address:port": the port is no hex group
            "Nov 14 22:45:11 test haproxy[760]: 2001:db8::1234:58430 [14/Nov/2015:22:45:11.608] "
            'main main/<NOSRV> -1/-1/-1/-1/0 401 248 - - PR-- 0/0/0/0/0 0/0 "GET / HTTP/1.1"',
            ["2001:db8::1234"],
        ),
        (  # postfix: host[ip], and a leading-zero octet that fail2ban counts as an address
            "Jun 21 16:47:48 digital-mlhhyiqscv sshd[13709]: error: PAM: Authentication failure "
            "for myhlj1374 from 192.030.0.6",
            ["192.030.0.6"],
        ),
        (
            "Dec 21 21:17:29 xxx postfix/smtpd[7150]: NOQUEUE: reject: RCPT from "
            "badserver.example.com[93.184.216.34]: 450 4.7.1 Client host rejected: cannot find "
            "your hostname, [93.184.216.34]; from=<badactor@example.com> "
            "to=<goodguy@example.com> proto=ESMTP helo=<badserver.example.com>",
            ["93.184.216.34", "93.184.216.34"],
        ),
    ],
)
def test_ip_addresses_as_written(line: str, ips: list[str]) -> None:
    assert _values(line, "ip") == ips
    assert "<IP>" in scan_line(line).masked


@pytest.mark.parametrize(
    "line",
    [
        # a key fingerprint is MAC-ish hex junk, not IPv6; times are not addresses
        "Sep 29 17:15:02 spaceman sshd[12946]: Failed hostbased for dan from 127.0.0.1 port "
        '45785 ssh2: RSA 8c:e3:aa:0f:64:51:02:f7:14:79:89:3f:65:84:7c:30, client user "dan"',
        # versions, status codes and numbers with dots are not addresses
        "Nov 24 23:46:39 host sshd[32686]: SSH: Server;Ltype: Version;Remote: 127.0.0.1-1780;"
        "Protocol: 2.0;Client: libssh2_1.4.3",
        "Jul 12 07:47:48 saturn postfix/smtpd[8738]: NOQUEUE: reject: RCPT from "
        "unknown[1.2.3.4]: 554 5.7.1 Relay access denied; at 13:02:04 after 999.1.1.1",
    ],
)
def test_no_false_addresses(line: str) -> None:
    ips = _values(line, "ip")
    assert all(ip in ("127.0.0.1", "1.2.3.4") for ip in ips), ips


@pytest.mark.parametrize(
    ("line", "users"),
    [
        ("Jul 20 14:42:11 localhost sshd[22708]: Invalid user ftp from 192.0.2.1", ["ftp"]),
        (
            "Sep 29 16:28:02 spaceman sshd[16699]: Failed password for dan from 127.0.0.1 "
            "port 45416 ssh1",
            ["dan"],
        ),
        (
            "Mar  3 00:17:22 [sshd]: User root from 211.188.220.49 not allowed because not "
            "listed in AllowUsers",
            ["root"],
        ),
        (
            "Nov 28 09:16:05 srv sshd[32310]: Disconnecting: Too many authentication failures "
            "for git [preauth]",
            ["git"],
        ),
        (
            "Mar 16 09:29:50 host sshd[19131]: Connection reset by authenticating user root "
            "192.0.2.20 port 1558 [preauth]",
            ["root"],
        ),
        (  # PAM fields: ruser= and user=; empty logname= and ruser= are no names
            "2015-04-16T18:02:50.321974+00:00 host sshd[2716]: pam_unix(sshd:auth): "
            "authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=192.0.2.112  "
            "user=root",
            ["root"],
        ),
        (
            "Mar  7 18:53:20 bar sshd[1556]: pam_unix(sshd:session): session opened for user "
            "rda by (uid=0)",
            ["rda"],
        ),
        (  # dovecot
            "Jun 13 16:30:54 platypus dovecot: imap-login: Disconnected (auth failed, 2 "
            "attempts): user=<username.bob>, method=PLAIN, rip=49.176.98.87, lip=113.212.99.194",
            ["username.bob"],
        ),
        (
            "Jan 29 05:32:50 mail dovecot: auth-worker(304): pam(username,1.2.3.4): "
            "pam_authenticate() failed: Authentication failure (password mismatch?)",
            ["username"],
        ),
        (  # nginx and apache web auth
            '2012/04/09 11:53:29 [error] 2865#0: *66647 user "xyz" was not found in '
            '"/var/www/.htpasswd", client: 192.0.43.10, server: www.myhost.com',
            ["xyz"],
        ),
        (
            "[Wed Jul 17 22:32:48 2013] [error] [client 127.0.0.1] user wrongusername not "
            "found: /basic/file",
            ["wrongusername"],
        ),
        (  # mysqld, proftpd, exim, pure-ftpd, vsftpd, dropbear
            "130324  0:04:00 [Warning] Access denied for user 'root'@'192.168.1.35' "
            "(using password: NO)",
            ["root"],
        ),
        (
            "2013-11-16 21:59:30,121 novo proftpd[25891] localhost (andy[1.2.3.4]): USER kjsad: "
            "no such user found from andy [1.2.3.5] to ::ffff:192.168.1.14:21",
            ["kjsad"],
        ),
        (
            "2014-01-12 02:07:48 dovecot_login authenticator failed for "
            "h1832461.stratoserver.net (User) [85.214.85.40]: 535 Incorrect authentication "
            "data (set_id=scanner)",
            ["scanner"],
        ),
        (_more("[Administrator]"), ["Administrator"]),  # pure-ftpd
        (_more("[anonymous] FAIL LOGIN"), ["anonymous"]),  # vsftpd
        (_more("for 'root' from"), ["root"]),  # dropbear
        (_more("10.0.0.2 - username ["), ["username"]),  # an access log's remote user
        # no names: "user  from" (empty), "user not known", "no such user found"
        ("Jun  6 04:17:04 host sshd[1189074]: Invalid user  from 192.0.2.68 port 34916", []),
        (
            "Apr 27 13:02:04 host sshd[29116]: Received disconnect from 1.2.3.4: 11: Normal "
            "Shutdown, Thank you for playing [preauth]",
            [],
        ),
        (_more("for nonexistent user from"), []),  # dropbear
    ],
)
def test_user_names_from_the_common_phrasings(line: str, users: list[str]) -> None:
    assert _values(line, "user") == users


@pytest.mark.parametrize(
    ("line", "hosts"),
    [
        (  # the syslog host field, and a DNS name in the message
            "Feb 25 14:34:11 belka sshd[31607]: User root from example.com not allowed because "
            "not listed in AllowUsers",
            ["belka", "example.com"],
        ),
        (  # host[ip]; helo=<...>; e-mail addresses are no hosts
            "Dec 30 18:19:15 xxx postfix/smtpd[1574]: NOQUEUE: reject: RCPT from "
            "badguy.example.com[93.184.216.34]: 454 4.7.1 Service unavailable; from="
            "<spammer@example.com> to=<goodguy@example.com> proto=ESMTP helo=<badguy.example.com>",
            ["xxx", "badguy.example.com", "badguy.example.com"],
        ),
        (  # a Java class and a file name are no hosts; a dotted syslog host is one
            "Jul 13 18:44:28 mdop.example.org sshd[4931]: Received disconnect from 89.24.13.192: "
            "3: com.jcraft.jsch.JSchException: Auth fail, see /var/log/auth.log and app.log",
            ["mdop.example.org"],
        ),
        (  # Solaris' "[ID 800047 auth.info]" is a facility, not a host
            "Mar 29 05:20:09 dusky sshd[19558]: [ID 800047 auth.info] Failed keyboard-interactive "
            "for james from 205.186.180.30 port 54520 ssh2",
            ["dusky"],
        ),
    ],
)
def test_hosts_are_dns_names_not_files_or_classes(line: str, hosts: list[str]) -> None:
    assert _values(line, "host") == hosts


@pytest.mark.parametrize(
    ("line", "program"),
    [
        ("Feb 25 14:34:10 belka sshd[31602]: Failed password for x from 1.2.3.4", "sshd"),
        ("Feb 21 09:21:54 xxx postfix/smtpd[14398]: NOQUEUE: reject: RCPT", "postfix/smtpd"),
        ("Dec 12 11:19:11 dunnart dovecot: pop3-login: Aborted login", "dovecot"),
        ("Nov 23 21:50:19 sshd[8148]: Disconnecting: Too many authentication failures", "sshd"),
        ("Jun 25 23:53:34 [sshd] User root from 1.2.3.4 not allowed because", "sshd"),
        ("2015-04-16T18:02:50.321974+00:00 host sshd[2716]: Connection closed by 1.2.3.4", "sshd"),
        ("Jul 02 13:49:31 hostname dovecot[442]: pop3-login: Aborted login", "dovecot"),
    ],
)
def test_the_program_of_the_syslog_header(line: str, program: str) -> None:
    assert _values(line, "program") == [program]
    assert scan_line(line).masked.startswith(program + ":")


def test_no_program_where_a_level_stands() -> None:
    line = "2024-01-02 03:04:05,123 ERROR db: connection to 10.0.0.5 timed out"
    scanned = scan_line(line)
    assert _values(line, "program") == [] and _values(line, "host") == []
    assert scanned.masked == "ERROR db: connection to <IP> timed out"
    assert scanned.timestamp == "2024-01-02 03:04:05,123"


def test_an_access_log_line_has_its_status_path_and_time() -> None:
    line = _more("//phpMyAdmin-2.8.2.3/")
    scanned = scan_line(line)
    assert _entities(line) == Counter(
        {
            ("ip", "12.34.56.78"): 1,
            ("path", "//phpMyAdmin-2.8.2.3/scripts/setup.php"): 1,
            ("status", "404"): 1,
        }
    )
    # the status stays in the template: a 404 and a 200 are different events
    assert scanned.masked == '<IP> - - [<TIME> +0100] "GET <PATH> HTTP/1.1" 404 <NUM> "-" "-" "-"'
    assert scanned.timestamp == "20/Jan/2015:19:53:28 +0100"
    url_line = _more('"POST /123.html/trackback/')  # a referer URL: its host and path
    assert ("host", "www.mydomain.tld") in _entities(url_line)
    assert _values(url_line, "status") == ["301"]


@pytest.mark.parametrize(
    ("line", "paths"),
    [
        (
            "[Wed Jul 17 23:20:45 2013] [error] [client 127.0.0.1] client denied by server "
            "configuration: /var/www/html/noentry/cant_get_me.html",
            ["/var/www/html/noentry/cant_get_me.html"],
        ),
        (
            "[Thu Jul 11 01:21:43 2013] [error] [client 194.228.20.113] user dsfasdf not found: /",
            ["/"],
        ),
        # "auth=0/1", "HTTP/1.1", "postfix/smtpd" and "1939/0/1/0/1940" are no paths
        (
            "Feb 10 13:26:34 srv postfix/smtpd[123]: disconnect from unknown[192.0.2.1] helo=1 "
            "auth=0/1 quit=1 commands=2/3 HTTP/1.1 1939/0/1/0/1940",
            [],
        ),
    ],
)
def test_absolute_paths(line: str, paths: list[str]) -> None:
    assert _values(line, "path") == paths


@pytest.mark.parametrize(
    ("line", "timestamp"),
    [
        ("Feb 25 14:34:10 belka sshd[31602]: x", "Feb 25 14:34:10"),
        ("Jan  5 01:31:41 www sshd[1643]: x", "Jan  5 01:31:41"),
        ("2019-07-08T17:40:16.954167-04:00 host sshd[1]: x", "2019-07-08T17:40:16.954167-04:00"),
        ("2024-01-02T03:04:05Z app: x", "2024-01-02T03:04:05Z"),
        ("2013-11-16 21:59:30,121 novo proftpd[25891] x", "2013-11-16 21:59:30,121"),
        ("[Sat Jun 01 02:17:42 2013] [error] [client 192.168.0.2] x", "Sat Jun 01 02:17:42 2013"),
        (
            '12.34.56.78 - - [20/Jan/2015:19:53:28 +0100] "GET / HTTP/1.1" 200 1',
            "20/Jan/2015:19:53:28 +0100",
        ),
        ("081109 203615 148 INFO dfs.DataNode$PacketResponder: x", "081109 203615"),
        ("130324  0:04:00 [Warning] Access denied for user 'root'@'1.2.3.4'", "130324  0:04:00"),
        ("2012/04/09 11:53:29 [error] 2865#0: *66647 x", "2012/04/09 11:53:29"),
        ("[2012-02-13 17:21:54] NOTICE[1638] chan_sip.c: x", "2012-02-13 17:21:54"),
        (
            "Fri Jan 19 12:20:33 2007 [pid 27202] [anonymous] FAIL LOGIN: x",
            "Fri Jan 19 12:20:33 2007",
        ),
        # a kernel's uptime is no wall time, but it is masked
        ("[12345.678901] usb 1-1: new high-speed USB device number 2", None),
        ("no time here at 12:00:01", None),
    ],
)
def test_timestamps_as_written(line: str, timestamp: str | None) -> None:
    assert scan_line(line).timestamp == timestamp


def test_times_and_numbers_are_masked_inside_the_message() -> None:
    scanned = scan_line("[12345.678901] usb 1-1: new device at 14:34:10, id 0x1f2e, 1408F10B")
    assert scanned.masked == "[<NUM>] usb 1-1: new device at <TIME>, id <NUM>, <NUM>"
    assert scanned.entities == ()


def test_every_line_of_the_real_samples_scans() -> None:
    sample = Path(__file__).parents[2] / "daemon" / "data" / "fail2ban-sample.log"
    lines = sample.read_text().splitlines() + MORE
    kinds: Counter[str] = Counter()
    for line in lines:
        scanned = scan_line(line)
        assert scanned.masked or not line.strip()
        kinds.update(kind for kind, _ in scanned.entities)
    # every kind shows up in real logs
    assert set(kinds) == {"ip", "user", "host", "program", "status", "path"}
