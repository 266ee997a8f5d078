"""PEC-shaped messages for the sandbox, the tests and the benchmark.

A PEC message (and each receipt) is ``multipart/signed`` (protocol ``application/pkcs7-signature``) around a
``multipart/mixed`` with a text part, ``daticert.xml`` (certification data), for messages and delivery
receipts ``postacert.eml`` (the original, ``message/rfc822``), and a real detached PKCS#7 ``smime.p7s``.
Everything is derived from a ``random.Random``: the same seed gives the same bytes (RSA PKCS#1 v1.5
signatures without signed attributes are deterministic).
"""

from __future__ import annotations

import base64
import datetime as dt
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence
from xml.sax.saxutils import escape

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7

CRLF = b"\r\n"
ReceiptKind = Literal["accettazione", "avvenuta-consegna", "mancata-consegna"]
_REF_DATE = dt.datetime(2026, 1, 1, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))

_SUBJECTS = ["Convocazione assemblea degli iscritti", "Richiesta certificato di iscrizione", "Rinnovo quota annuale",
             "Comunicazione variazione domicilio digitale", "Verbale del consiglio direttivo", "Fattura elettronica n. {n}",
             "Notifica atto giudiziario", "Diffida ad adempiere", "Richiesta accesso agli atti", "Parere di congruità",
             "Esito procedura disciplinare", "Trasmissione documentazione ECM", "Avviso di pagamento PagoPA"]
_WORDS = ("si trasmette in allegato la documentazione richiesta relativa alla pratica in oggetto con preghiera "
          "di riscontro entro i termini di legge distinti saluti il presidente dell'ordine società perché "
          "attività qualità università così").split()


@dataclass(frozen=True)
class Signer:
    """The sandbox 'PEC provider' key that signs envelopes."""

    cert: x509.Certificate
    key: object

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> "Signer":
        return cls(x509.load_pem_x509_certificate(cert_path.read_bytes()),
                   serialization.load_pem_private_key(key_path.read_bytes(), password=None))

    def detached_signature(self, data: bytes) -> bytes:
        """DER PKCS#7 detached signature of ``data`` (no signed attributes: deterministic, cheap)."""
        return (pkcs7.PKCS7SignatureBuilder().set_data(data)
                .add_signer(self.cert, self.key, hashes.SHA256())  # type: ignore[arg-type]
                .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.DetachedSignature,
                                                   pkcs7.PKCS7Options.NoAttributes,
                                                   pkcs7.PKCS7Options.Binary]))


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes


def _b64_lines(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", CRLF)


def _date(when: dt.datetime) -> str:
    return when.strftime("%a, %d %b %Y %H:%M:%S %z")


def _boundary(rng: random.Random, tag: str) -> str:
    return f"----=_{tag}_{rng.getrandbits(64):016x}"


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words))


def original_message(rng: random.Random, *, sender: str, recipients: Sequence[str], subject: str, when: dt.datetime,
                     message_id: str, attachments: Sequence[Attachment] = ()) -> bytes:
    """The member's original message (what becomes ``postacert.eml``)."""
    boundary = _boundary(rng, "orig")
    body = _text(rng, rng.randint(30, 200)).encode()
    parts = [
        f"From: {sender}\r\nTo: {', '.join(recipients)}\r\nSubject: {subject}\r\nDate: {_date(when)}\r\n"
        f"Message-ID: <{message_id}>\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'.encode(),
        f"--{boundary}\r\nContent-Type: text/plain; charset=UTF-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n".encode(),
        body, CRLF,
    ]
    for att in attachments:
        parts += [f'--{boundary}\r\nContent-Type: {att.content_type}; name="{att.filename}"\r\n'
                  f"Content-Transfer-Encoding: base64\r\n"
                  f'Content-Disposition: attachment; filename="{att.filename}"\r\n\r\n'.encode(), _b64_lines(att.data)]
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts)


def daticert_xml(*, kind: str, sender: str, recipients: Sequence[str], subject: str, identifier: str,
                 when: dt.datetime, domain: str, error: str = "nessuno") -> bytes:
    """Certification data (``daticert.xml``): who, to whom, which identifier, date and time."""
    dest = "\n".join(f'    <destinatari tipo="certificato">{escape(r)}</destinatari>' for r in recipients)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<postacert tipo="{kind}" errore="{error}">
  <intestazione>
    <mittente>{escape(sender)}</mittente>
{dest}
    <risposte>{escape(sender)}</risposte>
    <oggetto>{escape(subject)}</oggetto>
  </intestazione>
  <dati>
    <gestore-emittente>Sandbox PEC {escape(domain)}</gestore-emittente>
    <data zona="{when.strftime('%z')}">
      <giorno>{when.strftime('%d/%m/%Y')}</giorno>
      <ora>{when.strftime('%H:%M:%S')}</ora>
    </data>
    <identificativo>{escape(identifier)}</identificativo>
    <msgid>&lt;{escape(identifier)}&gt;</msgid>
  </dati>
</postacert>
""".replace("\n", "\r\n").encode()


def _envelope(signer: Signer, rng: random.Random, *, headers: str, text: str, daticert: bytes,
              original: bytes | None) -> bytes:
    """Wrap text + daticert.xml (+ postacert.eml) in multipart/mixed, sign it, wrap in multipart/signed."""
    mixed_b = _boundary(rng, "mixed")
    signed_b = _boundary(rng, "signed")
    inner = [
        f'Content-Type: multipart/mixed; boundary="{mixed_b}"\r\n\r\n'.encode(),
        f"--{mixed_b}\r\nContent-Type: text/plain; charset=UTF-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n".encode(),
        text.replace("\n", "\r\n").encode(), CRLF,
        f'--{mixed_b}\r\nContent-Type: application/xml; name="daticert.xml"\r\nContent-Transfer-Encoding: 8bit\r\n'
        f'Content-Disposition: inline; filename="daticert.xml"\r\n\r\n'.encode(), daticert, CRLF,
    ]
    if original is not None:
        inner += [f'--{mixed_b}\r\nContent-Type: message/rfc822; name="postacert.eml"\r\n'
                  f'Content-Disposition: inline; filename="postacert.eml"\r\n\r\n'.encode(), original, CRLF]
    inner.append(f"--{mixed_b}--\r\n".encode())
    signed_part = b"".join(inner)
    signature = signer.detached_signature(signed_part)
    return b"".join([
        headers.encode(),
        f'MIME-Version: 1.0\r\nContent-Type: multipart/signed; protocol="application/pkcs7-signature"; '
        f'micalg=sha-256; boundary="{signed_b}"\r\n\r\nQuesto è un messaggio S/MIME firmato.\r\n'.encode(),
        f"--{signed_b}\r\n".encode(), signed_part, CRLF,
        f'--{signed_b}\r\nContent-Type: application/pkcs7-signature; name="smime.p7s"\r\n'
        f'Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename="smime.p7s"\r\n\r\n'.encode(),
        _b64_lines(signature), f"--{signed_b}--\r\n".encode(),
    ])


class PecMessageFactory:
    """Makes PEC messages and receipts for one domain, signed by the sandbox signer, from one RNG."""

    def __init__(self, signer: Signer, rng: random.Random, *, domain: str = "pec.fnofi.it") -> None:
        self.signer = signer
        self.rng = rng
        self.domain = domain
        self._counter = 0

    def _identifier(self) -> str:
        self._counter += 1
        return f"opec{self.rng.getrandbits(48):012x}.{self._counter}@{self.domain}"

    def random_date(self, *, years_back: float = 6.0) -> dt.datetime:
        """A date up to ``years_back`` before a fixed reference (never 'now': the output stays deterministic)."""
        return (_REF_DATE - dt.timedelta(seconds=self.rng.randint(3600, int(years_back * 365 * 86400)))).replace(microsecond=0)

    def subject(self) -> str:
        return self.rng.choice(_SUBJECTS).format(n=self.rng.randint(1, 9999))

    def attachment(self, size: int, filename: str | None = None) -> Attachment:
        name = filename or f"documento_{self.rng.randint(1, 99999)}.pdf"
        return Attachment(name, "application/pdf", b"%PDF-1.4\n" + self.rng.randbytes(max(0, size - 9)))

    def posta_certificata(self, *, sender: str, recipients: Sequence[str], subject: str | None = None,
                          when: dt.datetime | None = None, attachments: Sequence[Attachment] = ()) -> bytes:
        """A certified message as the recipient's mailbox stores it (envelope 'POSTA CERTIFICATA')."""
        subject = subject or self.subject()
        when = when or self.random_date()
        original_id = f"{self.rng.getrandbits(64):016x}@{sender.partition('@')[2] or self.domain}"
        original = original_message(self.rng, sender=sender, recipients=recipients, subject=subject, when=when,
                                    message_id=original_id, attachments=attachments)
        identifier = self._identifier()
        headers = (f"Date: {_date(when)}\r\nFrom: \"Per conto di: {sender}\" <posta-certificata@{self.domain}>\r\n"
                   f"Reply-To: {sender}\r\nTo: {', '.join(recipients)}\r\nSubject: POSTA CERTIFICATA: {subject}\r\n"
                   f"Message-ID: <{identifier}>\r\nX-Riferimento-Message-ID: <{original_id}>\r\n"
                   f"X-Trasporto: posta-certificata\r\n")
        text = (f"Messaggio di posta certificata\n\nIl giorno {when.strftime('%d/%m/%Y')} alle ore "
                f"{when.strftime('%H:%M:%S')} ({when.strftime('%z')}) il messaggio\n\"{subject}\" è stato inviato da "
                f"\"{sender}\"\nindirizzato a:\n" + "\n".join(recipients) +
                "\nIl messaggio originale è incluso in allegato.\nIdentificativo messaggio: " + identifier + "\n")
        dati = daticert_xml(kind="posta-certificata", sender=sender, recipients=recipients, subject=subject,
                            identifier=identifier, when=when, domain=self.domain)
        return _envelope(self.signer, self.rng, headers=headers, text=text, daticert=dati, original=original)

    def receipt(self, kind: ReceiptKind, *, sender: str, recipients: Sequence[str], subject: str | None = None,
                when: dt.datetime | None = None, attachments: Sequence[Attachment] = ()) -> bytes:
        """A receipt to ``sender``: accettazione, avvenuta-consegna (with the original) or mancata-consegna."""
        subject = subject or self.subject()
        when = when or self.random_date()
        identifier = self._identifier()
        label = {"accettazione": "ACCETTAZIONE", "avvenuta-consegna": "CONSEGNA",
                 "mancata-consegna": "AVVISO DI MANCATA CONSEGNA"}[kind]
        original = None
        if kind != "accettazione":
            original = original_message(self.rng, sender=sender, recipients=recipients, subject=subject, when=when,
                                        message_id=f"{self.rng.getrandbits(64):016x}@{self.domain}",
                                        attachments=attachments)
        headers = (f"Date: {_date(when)}\r\nFrom: posta-certificata@{self.domain}\r\nTo: {sender}\r\n"
                   f"Subject: {label}: {subject}\r\nMessage-ID: <{identifier}>\r\nX-Ricevuta: {kind}\r\n")
        verb = {"accettazione": "è stato accettato dal sistema", "avvenuta-consegna": "è stato consegnato",
                "mancata-consegna": "non è stato consegnato"}[kind]
        text = (f"Ricevuta di {kind.replace('-', ' ')}\n\nIl giorno {when.strftime('%d/%m/%Y')} alle ore "
                f"{when.strftime('%H:%M:%S')} il messaggio \"{subject}\" proveniente da \"{sender}\" e indirizzato a "
                + ", ".join(recipients) + f" {verb}.\nIdentificativo messaggio: {identifier}\n")
        dati = daticert_xml(kind=kind, sender=sender, recipients=recipients, subject=subject, identifier=identifier,
                            when=when, domain=self.domain,
                            error="no-dest" if kind == "mancata-consegna" else "nessuno")
        return _envelope(self.signer, self.rng, headers=headers, text=text, daticert=dati, original=original)


__all__ = ["PecMessageFactory", "Signer", "Attachment", "ReceiptKind", "original_message", "daticert_xml"]
