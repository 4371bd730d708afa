"""Raw-socket SMTP helpers for the black-box tests of the submission server.

The tests need to send exactly the bytes they mean (pipelined batches, bare
CR/LF, half a DATA transfer) and to read replies one at a time, which real
client libraries hide; this module is that thin layer."""
import base64
import re
import socket
import ssl
import uuid
from dataclasses import dataclass, field

from conftest import PASSWORD, RELAY_NET_SOURCE, wait_for

CRLF = b"\r\n"
_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})$")


@dataclass
class Reply:
    code: int
    lines: list = field(default_factory=list)  # text after "NNN-" / "NNN "

    @property
    def enhanced(self):
        """The RFC 3463 enhanced status code of the first line, or ''."""
        first = self.lines[0].split(" ", 1)[0] if self.lines else ""
        return first if _ENHANCED.match(first) else ""

    @property
    def text(self):
        return "\n".join(self.lines)

    def __str__(self):
        return "\n".join(f"{self.code} {l}" for l in self.lines)


def client_tls_context(strict_eof=False):
    """strict_eof: an EOF without the peer's close_notify raises SSLEOFError
    (Python ignores it by default)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the relay's self-signed certificate
    if strict_eof:
        ctx.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    return ctx


class Conn:
    """One SMTP connection over a plain socket, optionally upgraded to TLS."""

    def __init__(self, port, host="127.0.0.1", implicit_tls=False, timeout=5.0, greet=True,
                 source=None, suppress_ragged_eofs=True):
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.buf = b""
        self.tls_version = None
        self.suppress_ragged_eofs = suppress_ragged_eofs
        if implicit_tls:
            self._wrap()
        self.greeting = self.reply() if greet else None

    # -- transport --
    def _wrap(self):
        self.sock = client_tls_context(strict_eof=not self.suppress_ragged_eofs).wrap_socket(
            self.sock, server_hostname="relay.test",
            suppress_ragged_eofs=self.suppress_ragged_eofs)
        self.tls_version = self.sock.version()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed; unread: {self.buf!r}")
        self.buf += chunk

    def line(self):
        while b"\n" not in self.buf:
            self._fill()
        raw, self.buf = self.buf.split(b"\n", 1)
        assert raw.endswith(b"\r"), f"reply line without CRLF: {raw!r}"
        return raw[:-1].decode("utf-8", errors="replace")

    def reply(self):
        """Reads one complete (possibly multi-line) reply."""
        lines = []
        while True:
            l = self.line()
            assert re.match(r"^\d{3}[ -]", l) or re.match(r"^\d{3}$", l), f"bad reply line {l!r}"
            code = int(l[:3])
            lines.append(l[4:])
            if len(l) == 3 or l[3] == " ":
                return Reply(code, lines)

    def cmd(self, line):
        self.send(line.encode("utf-8") + CRLF if isinstance(line, str) else line + CRLF)
        return self.reply()

    def expect(self, line, code, enhanced=None):
        r = self.cmd(line)
        assert r.code == code, f"{line!r}: expected {code}, got {r}"
        if enhanced is not None:
            assert r.enhanced == enhanced, f"{line!r}: expected {enhanced}, got {r}"
        return r

    def closed(self, timeout=5.0):
        """True once the server closed the connection (EOF) with nothing
        left unread; fails if it sends anything more instead."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except ssl.SSLError:
            return True
        except ConnectionResetError:
            return True
        assert not data and not self.buf, f"unexpected data before close: {self.buf + data!r}"
        return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # -- SMTP steps --
    def ehlo(self, name="client.test"):
        r = self.expect(f"EHLO {name}", 250)
        return r

    def starttls(self, line="STARTTLS"):
        """Sends line (STARTTLS, possibly with more pipelined behind it),
        expects 220 and nothing else, then does the handshake."""
        self.expect(line, 220, "2.0.0")
        assert not self.buf, f"data after 220 to STARTTLS: {self.buf!r}"
        self._wrap()

    def auth_plain(self, user="app", password=PASSWORD):
        tok = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        return self.cmd(f"AUTH PLAIN {tok}")

    def login(self, user="app", password=PASSWORD):
        r = self.auth_plain(user, password)
        assert r.code == 235 and r.enhanced == "2.7.0", str(r)

    def send_message(self, data, sender="app@sender.test", rcpts=("rcpt@example.net",)):
        """One DATA transaction; returns the final reply (after the dot)."""
        self.expect(f"MAIL FROM:<{sender}>", 250, "2.1.0")
        for r in rcpts:
            self.expect(f"RCPT TO:<{r}>", 250, "2.1.5")
        self.expect("DATA", 354)
        self.send(dot_stuff(data) + b".\r\n")
        return self.reply()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def extensions(ehlo_reply):
    """EHLO keywords with parameters, without the greeting line."""
    return [l for l in ehlo_reply.lines[1:]]


def dot_stuff(data):
    """RFC 5321 4.5.2 transparency, and a final CRLF if missing."""
    if not data.endswith(CRLF):
        data += CRLF
    out = []
    for line in data.split(CRLF)[:-1]:
        out.append(b"." + line if line.startswith(b".") else line)
    return CRLF.join(out) + CRLF


def new_msgid():
    return f"{uuid.uuid4().hex}@client.test"


def message(msgid=None, subject="test", body=b"Hello.\r\n", headers=b"", date=True):
    """A CRLF message with From/To/Subject and, unless None, the Message-ID."""
    h = b"From: App <app@sender.test>\r\nTo: rcpt@example.net\r\n"
    h += b"Subject: " + subject.encode() + CRLF
    if date:
        h += b"Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
    if msgid is not None:
        h += f"Message-ID: <{msgid}>\r\n".encode()
    return h + headers + CRLF + body


def queued_id(reply):
    m = re.search(r"queued as ([0-9A-Za-z]+)", reply.text)
    assert reply.code == 250 and m, f"no queue id in {reply}"
    return m.group(1)


def captured_with(sluice, msgid):
    """Captured messages whose Message-ID is msgid."""
    return [m for m in sluice.captured()
            if m["envelope"].get("meta", {}).get("message_id") == msgid]


def wait_captured_id(sluice, msgid, timeout=10):
    return wait_for(lambda: captured_with(sluice, msgid), timeout, f"capture of <{msgid}>")[0]


def body_of(data):
    """The body of a raw message: everything after the first empty line."""
    i = data.find(b"\r\n\r\n")
    assert i >= 0, data
    return data[i + 4:]


def header_block(data):
    return data[:data.find(b"\r\n\r\n") + 2]


def open_session(sluice, tls=False, auth=True, implicit=False):
    """A connection that said EHLO (after STARTTLS when tls) and may send:
    logged in as 'app' when auth, else coming from the relay network
    address that shared_sluice lets send without AUTH."""
    c = Conn(sluice.tls_port if implicit else sluice.port, implicit_tls=implicit,
             source=None if auth else RELAY_NET_SOURCE)
    assert c.greeting.code == 220, str(c.greeting)
    c.ehlo()
    if tls and not implicit:
        c.starttls()
        c.ehlo()
    if auth:
        c.login()
    return c


def _msgids(sluice):
    return [m["envelope"].get("meta", {}).get("message_id") for m in sluice.captured()]


class CaptureWatch:
    """Remembers what a relay had accepted and captured, so a test can later
    prove that nothing but the messages it expects was added."""

    def __init__(self, sluice):
        self.sluice = sluice
        self.n_events = len(sluice.events("smtp.accepted"))
        self.before = set(_msgids(sluice))

    def new_accepted(self):
        return [e.get("message_id") for e in self.sluice.events("smtp.accepted")[self.n_events:]]

    def assert_only(self, allowed_msgids=(), auth=False):
        """Sends a sentinel message, waits for its capture and checks that
        everything accepted or captured since the watch began is in
        allowed_msgids (or the sentinel): a refused message that had been
        queued earlier would have been captured by then."""
        sentinel = new_msgid()
        with open_session(self.sluice, auth=auth) as c:
            r = c.send_message(message(sentinel, subject="sentinel"))
            assert r.code == 250, str(r)
            c.expect("QUIT", 221)
        wait_captured_id(self.sluice, sentinel)
        allowed = set(allowed_msgids) | {sentinel}
        accepted = self.new_accepted()
        assert set(accepted) <= allowed, f"unexpected accepted messages: {accepted}"
        new = [i for i in _msgids(self.sluice) if i not in self.before]
        extra = [i for i in new if i not in allowed]
        assert not extra, f"unexpected captured messages: {extra}"
        return new


def count_captured(sluice, msgid):
    return len(captured_with(sluice, msgid))
