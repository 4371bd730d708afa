#!/usr/bin/python3
"""Scriptable upstream SMTP server for Sluice's tests (a smarthost stand-in).

Built on aiosmtpd (Debian python3-aiosmtpd); run it with /usr/bin/python3.
It prints "READY <port>" on stdout once listening, so tests wait for that
line instead of sleeping. SIGTERM/SIGINT stop it cleanly.

Listening and TLS
  --host ADDR              listen address (default 127.0.0.1)
  --port N                 port; 0 picks a free one (printed in READY)
  --tls MODE               none | starttls | implicit (default none)
  --cert FILE --key FILE   server certificate and key (PEM) for starttls/implicit
  --require-starttls       refuse commands other than EHLO/NOOP/QUIT before STARTTLS
  --starttls-inject        answer STARTTLS with "220" plus an extra injected line
                           in the same packet, then close (tests the client's check)
  --hostname NAME          name in greeting and EHLO (default upstream.test)

Extensions announced in EHLO
  --no-pipelining --no-8bitmime --no-smtputf8
  --size N                 SIZE limit in bytes (default 33554432; 0: no SIZE)

Authentication (offered as PLAIN, LOGIN and XOAUTH2 once a user exists)
  --user NAME --password SECRET    one account (the secret is also the bearer
                                   token accepted by XOAUTH2)
  --auth-user NAME:SECRET          more accounts (repeatable)
  --users-file FILE                lines "name:secret" ('#' comments)
  --auth-mechs LIST                mechanisms to offer, e.g. PLAIN,LOGIN
  --auth-reject                    answer every AUTH with 535 5.7.8
  --auth-required                  MAIL before AUTH gets 530 5.7.0
  --auth-plaintext                 offer AUTH without TLS too

Scripted replies (REPLY is "CODE text", e.g. '451 4.3.0 try later'; a literal
\\n separates the lines of a multiline reply: '550-5.1.1 a\\n550 5.1.1 b')
  --greeting-reply REPLY   greet with REPLY instead of 220 and close (e.g. 421)
  --mail-reply [ADDR=]REPLY        reply to MAIL (for one sender, or all)
  --rcpt-reply ADDR=REPLY          reply to RCPT for ADDR ('*' for all; repeatable)
  --data-reply REPLY       reply to the final "." (message then not stored
                           unless REPLY is 2xx)
  --reply VERB=REPLY       reply to any command verb with REPLY instead of
                           handling it, e.g. 'EHLO=502 5.5.1 no', 'DATA=554 no',
                           'STARTTLS=454 4.7.0 TLS not available' (repeatable)
  --drop-after N           serve N connections, then close new ones at once
  --drop-on VERB           close without replying when VERB arrives (EHLO, MAIL,
                           RCPT, DATA, DOT for the final ".", ...)
  --stall SECONDS          wait this long before replying ...
  --stall-on VERB          ... to VERB (default DOT; also GREETING or any verb)

Chaos (for torture tests)
  --chaos P                each command misbehaves with probability P: 421 and
                           close, 451/452 (and 550 at RCPT), a dropped connection,
                           a stall past the client's timeout (--chaos-stall), or
                           a broken TLS handshake after STARTTLS
  --chaos-seed N           seed for reproducible chaos
  --chaos-stall SECONDS    how long a chaotic stall lasts (default 3)

Output
  --store DIR              each accepted message as DIR/NNNNNN.eml and
                           DIR/NNNNNN.json (envelope; written last, atomically:
                           count *.json to count deliveries). Also the event
                           log DIR/events.jsonl unless --log is given.
  --wire DIR               every octet each connection sent, as received (after
                           TLS), in DIR/conn-N.raw: for tests of what reached
                           the wire, before any parsing
  --log FILE               JSON lines: connect, command (verb, tls), tls,
                           auth (user, ok), message, drop. Secrets never appear.

Run-time control (for "provider down, then back" scenarios)
  --control DIR            files whose presence flips behaviour, checked at
                           each use:
    DIR/down         greeting "421 4.3.2 service down" and close (after the
                     number of seconds the file holds, if any)
    DIR/refuse       close new connections without a greeting
    DIR/reject-auth  every AUTH gets 535 5.7.8
    DIR/mail-reply   its content is the reply to every MAIL (one line per
                     line of a multiline reply)
    DIR/rcpt-reply   its content is the reply to every RCPT
    DIR/data-reply   its content is the reply to every final "."
    DIR/stall        its content (seconds) delays the reply to the final "."
    DIR/drop-dot-once  the next final "." (on any connection) gets no reply:
                     the connection closes and the file is removed
"""

import argparse
import asyncio
import base64
import binascii
import json
import logging
import os
import random
import re
import signal
import ssl
import sys
import time

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword, MISSING

REPLY_RE = re.compile(r"^[2-5]\d\d(?:[ -].*)?$")
NULL_SENDER_PLACEHOLDER = "null-sender.placeholder@upstream.invalid"


class NullPath(str):
    """The null reverse-path "<>": empty, yet a set sender for aiosmtpd."""

    def __bool__(self):
        return True


def parse_reply(value, what):
    """Validates a scripted reply; a literal backslash-n separates the lines
    of a multiline reply ('550-5.1.1 a\\n550 5.1.1 b')."""
    lines = [line.strip() for line in value.strip().split("\\n")]
    for line in lines:
        if not REPLY_RE.match(line):
            raise SystemExit(f"upstream.py: {what}: not an SMTP reply: {value!r}")
    return "\r\n".join(lines)


def split_addr_reply(value, what, need_addr):
    m = re.match(r"^([^=\s]+)=(.*)$", value)
    if m and not re.match(r"^\d{3}", value):
        return m.group(1).lower(), parse_reply(m.group(2), what)
    if need_addr:
        raise SystemExit(f"upstream.py: {what}: expected ADDR=REPLY, got {value!r}")
    return "*", parse_reply(value, what)


class Config:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.chaos_seed)
        self.wire = args.wire
        if self.wire:
            os.makedirs(self.wire, exist_ok=True)
        self.users = {}
        if args.user is not None:
            self.users[args.user] = args.password or ""
        for spec in args.auth_user:
            name, _, secret = spec.partition(":")
            self.users[name] = secret
        if args.users_file:
            with open(args.users_file, encoding="utf-8") as f:
                for line in f:
                    line = line.strip()
                    if line and not line.startswith("#"):
                        name, _, secret = line.partition(":")
                        self.users[name] = secret
        self.mail_replies = dict(split_addr_reply(v, "--mail-reply", False) for v in args.mail_reply)
        self.rcpt_replies = dict(split_addr_reply(v, "--rcpt-reply", True) for v in args.rcpt_reply)
        self.verb_replies = {}
        for spec in args.reply:
            verb, _, reply = spec.partition("=")
            self.verb_replies[verb.upper()] = parse_reply(reply, "--reply")
        self.greeting_reply = parse_reply(args.greeting_reply, "--greeting-reply") \
            if args.greeting_reply else None
        self.data_reply = parse_reply(args.data_reply, "--data-reply") if args.data_reply else None
        self.mechs = [m.strip().upper() for m in args.auth_mechs.split(",") if m.strip()]

    def control(self, name):
        """Content of control file name (stripped), or None when absent."""
        d = self.args.control
        if not d:
            return None
        try:
            with open(os.path.join(d, name), encoding="utf-8") as f:
                return f.read().strip()
        except FileNotFoundError:
            return None


    def take_control(self, name):
        """True once per creation of control file name: it is removed."""
        d = self.args.control
        if not d:
            return False
        try:
            os.unlink(os.path.join(d, name))
            return True
        except FileNotFoundError:
            return False

    def control_reply(self, name):
        """A reply from control file name (lines of a multiline reply on
        lines of the file), or None when absent or empty."""
        content = self.control(name)
        if not content:
            return None
        return "\r\n".join(line.strip() for line in content.splitlines() if line.strip())


class State:
    """Counters shared by all connections, and the output files."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.connections = 0
        self.messages = 0
        self.log_file = None
        log_path = cfg.args.log
        if log_path is None and cfg.args.store:
            log_path = os.path.join(cfg.args.store, "events.jsonl")
        if cfg.args.store:
            os.makedirs(cfg.args.store, exist_ok=True)
        if log_path:
            self.log_file = open(log_path, "a", encoding="utf-8")

    def log(self, **event):
        if self.log_file is None:
            return
        event["t"] = round(time.time(), 6)
        self.log_file.write(json.dumps(event, separators=(",", ":")) + "\n")
        self.log_file.flush()

    def store(self, conn, session, envelope, tls):
        self.messages += 1
        n = self.messages
        d = self.cfg.args.store
        if not d:
            return n
        base = os.path.join(d, f"{n:06d}")
        with open(base + ".eml", "wb") as f:
            f.write(envelope.original_content or b"")
        meta = {
            "id": n,
            "connection": conn,
            "mail_from": str(envelope.mail_from),
            "rcpt_tos": list(envelope.rcpt_tos),
            "mail_options": list(envelope.mail_options),
            "rcpt_options": list(envelope.rcpt_options),
            "smtputf8": bool(envelope.smtp_utf8),
            "tls": tls,
            "auth_user": session.login_data.decode("utf-8", "replace")
            if isinstance(session.login_data, bytes) else session.login_data,
            "size": len(envelope.original_content or b""),
            "received": time.time(),
        }
        tmp = base + ".json.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(meta, f)
        os.rename(tmp, base + ".json")
        return n


class Handler:
    def __init__(self, state):
        self.state = state
        self.cfg = state.cfg

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        args = self.cfg.args
        out = []
        for line in responses[:-1]:
            kw = line[4:].split(" ")[0].upper()
            if kw == "8BITMIME" and args.no_8bitmime:
                continue
            if kw == "AUTH":
                mechs = [m for m in line[4:].split()[1:] if m in self.cfg.mechs]
                if not self.cfg.users or not mechs:
                    continue
                line = "250-AUTH " + " ".join(mechs)
            out.append(line)
        if not args.no_pipelining:
            out.append("250-PIPELINING")
        out.append("250-ENHANCEDSTATUSCODES")
        out.append(responses[-1])
        session.host_name = hostname
        return out

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if address == NULL_SENDER_PLACEHOLDER:
            address = NullPath("")
        reply = self.cfg.control_reply("mail-reply")
        if reply is None:
            reply = self.cfg.mail_replies.get(str(address).lower(), self.cfg.mail_replies.get("*"))
        if reply is None:
            reply = "250 2.1.0 OK"
        if reply.startswith("2"):
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
        return reply

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.cfg.control_reply("rcpt-reply")
        if reply is None:
            reply = self.cfg.rcpt_replies.get(address.lower(), self.cfg.rcpt_replies.get("*"))
        if reply is None:
            reply = "250 2.1.5 OK"
        if reply.startswith("2"):
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
        return reply

    async def handle_DATA(self, server, session, envelope):
        args = self.cfg.args
        if args.chaos and self.cfg.rng.random() < args.chaos:
            act = self.cfg.rng.choice(["451", "452", "drop", "stall"])
            self.state.log(event="chaos", conn=server.conn_id, verb="DOT", action=act)
            if act == "drop":
                await server.drop("DOT")
            elif act == "stall":
                await asyncio.sleep(args.chaos_stall)
            else:
                return {"451": "451 4.3.0 chaos: try later", "452": "452 4.3.1 chaos: no space"}[act]
        stall = self.cfg.control("stall")
        if stall:
            await asyncio.sleep(float(stall))
        if args.stall and args.stall_on.upper() == "DOT":
            await asyncio.sleep(args.stall)
        if args.drop_on and args.drop_on.upper() == "DOT":
            await server.drop("DOT")
        if self.cfg.take_control("drop-dot-once"):
            await server.drop("DOT")
        reply = self.cfg.control_reply("data-reply") or self.cfg.data_reply or None
        if reply is not None and not reply.startswith("2"):
            self.state.log(event="message-rejected", conn=server.conn_id, reply=reply)
            return reply
        n = self.state.store(server.conn_id, session, envelope, server.is_tls())
        self.state.log(event="message", conn=server.conn_id, id=n,
                       mail_from=str(envelope.mail_from), rcpt_tos=list(envelope.rcpt_tos),
                       size=len(envelope.original_content or b""))
        return reply or f"250 2.0.0 OK queued as {n:06d}"

    async def auth_XOAUTH2(self, server, args):
        if len(args) >= 2:
            try:
                blob = base64.b64decode(args[1].encode(), validate=True)
            except binascii.Error:
                await server.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        else:
            blob = await server.challenge_auth("", encode_to_b64=False)
            if blob is MISSING:
                return AuthResult(success=False, handled=True)
        parts = blob.split(b"\x01")
        user = token = b""
        for p in parts:
            if p.startswith(b"user="):
                user = p[5:]
            elif p.lower().startswith(b"auth=bearer "):
                token = p[12:]
        result = server.authenticate_pair("XOAUTH2", user, token)
        if result.success:
            return result
        # Google's behaviour: an error challenge, an empty client line, then 535.
        err = base64.b64encode(json.dumps(
            {"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"}
        ).encode()).decode()
        await server.push("334 " + err)
        await server._reader.readline()
        return AuthResult(success=False, handled=False,
                          message="535 5.7.8 Username and Password not accepted")


class ScriptedSMTP(SMTP):
    def __init__(self, handler, state, conn_id, implicit_tls, **kw):
        super().__init__(handler, **kw)
        self.state = state
        self.cfg = state.cfg
        self.conn_id = conn_id
        self.implicit_tls = implicit_tls
        for verb, method in list(self._smtp_methods.items()):
            self._smtp_methods[verb] = self._wrap(verb, method)

    def is_tls(self):
        return self.implicit_tls or self._tls_protocol is not None

    def data_received(self, data):
        if self.cfg.wire:
            with open(os.path.join(self.cfg.wire, f"conn-{self.conn_id}.raw"), "ab") as f:
                f.write(data)
        super().data_received(data)

    async def drop(self, where):
        self.state.log(event="drop", conn=self.conn_id, at=where)
        if self.transport is not None:
            self.transport.close()
        # Wait to be cancelled by connection_lost; never reply.
        await asyncio.sleep(3600)

    async def chaos(self, verb):
        """Misbehaves at random when --chaos is set; True when it replied."""
        args = self.cfg.args
        rnd = self.cfg.rng
        if not args.chaos or rnd.random() >= args.chaos:
            return False
        choices = {
            "EHLO": ["421", "drop"],
            "STARTTLS": ["breaktls", "drop"],
            "MAIL": ["421", "451", "drop", "stall"],
            "RCPT": ["452", "550", "drop"],
            "DATA": ["451", "drop"],
            "DOT": ["451", "452", "drop", "stall"],
        }.get(verb)
        if not choices:
            return False
        act = rnd.choice(choices)
        self.state.log(event="chaos", conn=self.conn_id, verb=verb, action=act)
        if act == "drop":
            await self.drop(verb)
        elif act == "stall":
            await asyncio.sleep(args.chaos_stall)
            return False
        elif act == "breaktls":
            await self.push("220 2.0.0 Ready to start TLS")
            self.transport.write(b"\x15\x03\x03\x00\x02\x02\x28")  # not a ServerHello
            self.transport.close()
        elif act == "421":
            await self.push("421 4.3.2 chaos: closing")
            self.transport.close()
        else:
            texts = {"451": "451 4.3.0 chaos: try later", "452": "452 4.3.1 chaos: no space",
                     "550": "550 5.1.1 chaos: no such user"}
            await self.push(texts[act])
        return True

    def _wrap(self, verb, method):
        async def wrapped(arg):
            args = self.cfg.args
            shown = arg or ""
            if verb == "AUTH":
                shown = shown.split(" ")[0]  # never log an initial response
            self.state.log(event="command", conn=self.conn_id, verb=verb, arg=shown,
                           tls=self.is_tls())
            if args.drop_on and args.drop_on.upper() == verb:
                await self.drop(verb)
            if await self.chaos(verb):
                return
            if args.stall and args.stall_on.upper() == verb:
                await asyncio.sleep(args.stall)
            if verb in self.cfg.verb_replies:
                await self.push(self.cfg.verb_replies[verb])
                return
            if verb == "STARTTLS" and args.starttls_inject and self.tls_context:
                await self.push("220 2.0.0 Ready to start TLS\r\n250 2.0.0 injected")
                self.transport.close()
                return
            if verb == "MAIL" and arg:
                m = re.match(r"^(FROM:\s*)<>(.*)$", arg, re.IGNORECASE)
                if m:
                    arg = f"{m.group(1)}<{NULL_SENDER_PLACEHOLDER}>{m.group(2)}"
            await method(arg)
        return wrapped

    def authenticate_pair(self, mechanism, user, secret):
        name = user.decode("utf-8", "replace") if isinstance(user, bytes) else user
        pw = secret.decode("utf-8", "replace") if isinstance(secret, bytes) else secret
        rejected = self.cfg.args.auth_reject or self.cfg.control("reject-auth") is not None
        ok = not rejected and name in self.cfg.users and self.cfg.users[name] == pw
        self.state.log(event="auth", conn=self.conn_id, mechanism=mechanism, user=name, ok=ok,
                       tls=self.is_tls())
        if ok:
            return AuthResult(success=True, auth_data=LoginPassword(user, b""))
        return AuthResult(success=False, handled=False)

    async def _handle_client(self):
        args = self.cfg.args
        peer = self.transport.get_extra_info("peername") if self.transport else None
        self.state.log(event="connect", conn=self.conn_id, peer=str(peer), tls=self.is_tls())
        if (args.drop_after is not None and self.conn_id > args.drop_after) or \
                self.cfg.control("refuse") is not None:
            self.state.log(event="drop", conn=self.conn_id, at="CONNECT")
            self.transport.close()
            return
        if args.stall and args.stall_on.upper() == "GREETING":
            await asyncio.sleep(args.stall)
        greeting = None
        down = self.cfg.control("down")
        if down is not None:
            if down:
                await asyncio.sleep(float(down))  # a slow refusal
            greeting = "421 4.3.2 service down"
        elif self.cfg.greeting_reply:
            greeting = self.cfg.greeting_reply
        if greeting is not None and not greeting.startswith("220"):
            await self.push(greeting)
            self.transport.close()
            return
        await super()._handle_client()


def make_tls_context(args):
    if not args.cert or not args.key:
        raise SystemExit("upstream.py: --tls starttls/implicit needs --cert and --key")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(args.cert, args.key)
    return ctx


def authenticator_for(state):
    def authenticate(server, session, envelope, mechanism, auth_data):
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        return server.authenticate_pair(mechanism, auth_data.login, auth_data.password)
    return authenticate


def parse_args(argv):
    p = argparse.ArgumentParser(description="Scriptable upstream SMTP server for tests.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--tls", choices=["none", "starttls", "implicit"], default="none")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--require-starttls", action="store_true")
    p.add_argument("--starttls-inject", action="store_true")
    p.add_argument("--hostname", default="upstream.test")
    p.add_argument("--no-pipelining", action="store_true")
    p.add_argument("--no-8bitmime", action="store_true")
    p.add_argument("--no-smtputf8", action="store_true")
    p.add_argument("--size", type=int, default=33554432)
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--auth-user", action="append", default=[])
    p.add_argument("--users-file")
    p.add_argument("--auth-mechs", default="PLAIN,LOGIN,XOAUTH2")
    p.add_argument("--auth-reject", action="store_true")
    p.add_argument("--auth-required", action="store_true")
    p.add_argument("--auth-plaintext", action="store_true")
    p.add_argument("--greeting-reply")
    p.add_argument("--mail-reply", action="append", default=[])
    p.add_argument("--rcpt-reply", action="append", default=[])
    p.add_argument("--data-reply")
    p.add_argument("--reply", action="append", default=[])
    p.add_argument("--drop-after", type=int)
    p.add_argument("--drop-on")
    p.add_argument("--stall", type=float, default=0.0)
    p.add_argument("--stall-on", default="DOT")
    p.add_argument("--chaos", type=float, default=0.0)
    p.add_argument("--chaos-seed", type=int)
    p.add_argument("--chaos-stall", type=float, default=3.0)
    p.add_argument("--store")
    p.add_argument("--log")
    p.add_argument("--wire")
    p.add_argument("--control")
    return p.parse_args(argv)


async def serve(args):
    cfg = Config(args)
    state = State(cfg)
    handler = Handler(state)
    tls_ctx = make_tls_context(args) if args.tls != "none" else None
    implicit = args.tls == "implicit"

    def factory():
        state.connections += 1
        return ScriptedSMTP(
            handler, state, state.connections, implicit,
            hostname=args.hostname,
            ident="Sluice test upstream",
            data_size_limit=args.size or None,
            enable_SMTPUTF8=not args.no_smtputf8,
            tls_context=tls_ctx if args.tls == "starttls" else None,
            require_starttls=args.require_starttls,
            auth_required=args.auth_required,
            auth_require_tls=not (args.auth_plaintext or implicit),
            authenticator=authenticator_for(state),
        )

    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, host=args.host, port=args.port,
                                      ssl=tls_ctx if implicit else None, reuse_address=True)
    port = server.sockets[0].getsockname()[1]
    print(f"READY {port}", flush=True)

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    await server.wait_closed()


def main(argv):
    args = parse_args(argv)
    # aiosmtpd warns about plaintext AUTH and logs every handshake failure;
    # tests provoke both on purpose.
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("mail.log").setLevel(logging.CRITICAL)
    import warnings
    warnings.simplefilter("ignore")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main(sys.argv[1:])
