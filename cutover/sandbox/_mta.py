"""The sandbox providers' inbound MTA: where each Dovecot's submission service hands mail on.

Dovecot's submission service needs a relay (``submission_relay_host``) and speaks SMTP to it; Dovecot's LMTP
server refuses EHLO, so the two cannot be chained directly. This small SMTP server stands for the provider's
MTA: it accepts what the submission service relays (loopback only, no AUTH: the submission service already
authenticated the sender), delivers it by LMTP to the same provider's Dovecot, so the message lands in the
recipient's mailbox, and answers ``250 2.0.0 Ok: queued as <id>``, which the submission service passes back to
the client (the PEC clients' Postfix relay logs it as the provider's queue id).

It also stands for the provider's MX (``cutover.sandbox._sender`` delivers to it by the domain's MX): a recipient
whose mailbox has another name on that provider (an InfoCert user ID) is delivered to that mailbox, as the
provider's alias map does.

Run by the sandbox as ``python -m cutover.sandbox._mta CONFIG`` (JSON: ``{"listeners": [{"name", "port",
"lmtp", "mailboxes": {address: mailbox}}], "log": path}``); one line per delivery in the log.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import smtplib
import sys
import time
from pathlib import Path

MAX_BYTES = 150 * 1024 * 1024  # above PEC's 100 MB per message


class _Session:
    def __init__(self, name: str, lmtp: str, log: Path, mailboxes: dict[str, str] | None = None) -> None:
        self.name, self.lmtp, self.log = name, lmtp, log
        self.mailboxes = mailboxes or {}
        self.reset()

    def reset(self) -> None:
        self.sender: str | None = None
        self.recipients: list[str] = []

    def deliver(self, data: bytes) -> str:
        """LMTP to the provider's Dovecot; returns the queue id (raises on any refused recipient)."""
        queue_id = f"{self.name.upper()}{secrets.token_hex(5).upper()}"
        client = smtplib.LMTP(self.lmtp, timeout=30)
        # The provider's alias map: an address whose mailbox is named otherwise (InfoCert's user IDs).
        rcpts = [self.mailboxes.get(r.lower(), r) for r in self.recipients]
        try:
            refused = client.sendmail(self.sender or "", rcpts, data)
        finally:
            try:
                client.quit()
            except smtplib.SMTPException:
                pass
        if refused:
            raise smtplib.SMTPRecipientsRefused(refused)
        with self.log.open("a", encoding="utf-8") as fh:
            fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {self.name} queued as {queue_id} from=<{self.sender}> "
                     f"to={','.join(f'<{r}>' for r in self.recipients)} size={len(data)} delivered by LMTP\n")
        return queue_id


def _address(arg: str) -> str | None:
    start, end = arg.find("<"), arg.find(">")
    return arg[start + 1:end] if 0 <= start < end else None


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str, lmtp: str, log: Path,
                 mailboxes: dict[str, str] | None = None) -> None:
    session = _Session(name, lmtp, log, mailboxes)

    async def reply(text: str) -> None:
        writer.write(text.encode() + b"\r\n")
        await writer.drain()

    await reply(f"220 {name}-mta.sandbox.invalid ESMTP pec-cutover sandbox")
    try:
        while line := await reader.readline():
            verb, _, arg = line.decode("utf-8", "replace").strip().partition(" ")
            verb = verb.upper()
            if verb == "EHLO":
                await reply(f"250-{name}-mta.sandbox.invalid\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n"
                            f"250-SIZE {MAX_BYTES}\r\n250 PIPELINING")
            elif verb == "HELO":
                await reply(f"250 {name}-mta.sandbox.invalid")
            elif verb == "MAIL" and arg.upper().startswith("FROM:"):
                session.reset()
                session.sender = _address(arg) or ""
                await reply("250 2.1.0 Ok")
            elif verb == "RCPT" and arg.upper().startswith("TO:"):
                if session.sender is None:
                    await reply("503 5.5.1 MAIL first")
                elif (rcpt := _address(arg)):
                    session.recipients.append(rcpt)
                    await reply("250 2.1.5 Ok")
                else:
                    await reply("501 5.1.3 bad recipient address syntax")
            elif verb == "DATA":
                if not session.recipients:
                    await reply("503 5.5.1 RCPT first")
                    continue
                await reply("354 End data with <CR><LF>.<CR><LF>")
                chunks: list[bytes] = []
                size = 0
                while (part := await reader.readline()) not in (b".\r\n", b".\n", b""):
                    size += len(part)
                    if size <= MAX_BYTES:
                        chunks.append(part[1:] if part.startswith(b"..") else part)
                if size > MAX_BYTES:
                    await reply("552 5.3.4 message too big")
                    session.reset()
                    continue
                try:
                    queue_id = await asyncio.to_thread(session.deliver, b"".join(chunks))
                except (OSError, smtplib.SMTPException) as exc:
                    await reply(f"451 4.3.0 delivery to the mailbox failed: {type(exc).__name__}")
                else:
                    await reply(f"250 2.0.0 Ok: queued as {queue_id}")
                session.reset()
            elif verb == "RSET":
                session.reset()
                await reply("250 2.0.0 Ok")
            elif verb == "NOOP":
                await reply("250 2.0.0 Ok")
            elif verb == "QUIT":
                await reply("221 2.0.0 Bye")
                break
            else:
                await reply("502 5.5.2 command not implemented")
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def _main(config_path: Path) -> None:
    config = json.loads(config_path.read_text(encoding="utf-8"))
    log = Path(config["log"])
    servers = []
    for listener in config["listeners"]:
        def handler(r, w, listener=listener):
            return _serve(r, w, listener["name"], listener["lmtp"], log, listener.get("mailboxes"))
        servers.append(await asyncio.start_server(handler, "127.0.0.1", int(listener["port"])))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"sandbox MTA listening on {', '.join(str(x['port']) for x in config['listeners'])}", flush=True)
    await stop.wait()
    for server in servers:
        server.close()


if __name__ == "__main__":
    asyncio.run(_main(Path(sys.argv[1])))
