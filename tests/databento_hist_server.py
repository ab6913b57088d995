"""A real local HTTPS server standing in for Databento's Historical API, for the real ``databento.Historical``.

The client (databento 0.87) always talks HTTPS (``gateway="127.0.0.1:PORT"`` becomes
``https://127.0.0.1:PORT``), so the server has a self-signed certificate for 127.0.0.1; point
``requests`` at it with ``REQUESTS_CA_BUNDLE=server.ca_file``. It speaks the three endpoints the
warmup uses, as the client sends them (``POST /v0/<endpoint>``, form-encoded, HTTP basic auth with
the key as user name):

* ``metadata.get_cost`` → a JSON number (``costs[schema]``, default 0.01);
* ``timeseries.get_range`` → a zstd-compressed DBN stream (as the client asks with ``compression=zstd``)
  of ``data[schema]``'s records of the requested parents (``ES.FUT`` …: contract symbols starting ``ES``) in
  ``[start, end)``, after a metadata header;
* ``symbology.resolve`` (``instrument_id`` → ``raw_symbol``) → ``{"result": {"<id>": [{"d0", "d1", "s"}]}, …}``
  from ``symbols``.

Each request is recorded (``requests``, in arrival order). ``script[(endpoint, schema)]`` holds
replies used before the default answer, first in first out (``schema`` is None for symbology):
an error with Databento's JSON body (:func:`refusal`), ``EMPTY`` (a DBN stream without records),
``HANG`` (no answer until the server stops: the client's read timeout), a corrupt body, a 429.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import ssl
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs

import databento_dbn as dbn
import zstandard

ENDPOINTS = ("metadata.get_cost", "timeseries.get_range", "symbology.resolve")
_SCHEMAS = {"ohlcv-1m": dbn.Schema.OHLCV_1M, "ohlcv-1s": dbn.Schema.OHLCV_1S, "trades": dbn.Schema.TRADES}


@dataclass(frozen=True)
class Reply:
    """One scripted answer: ``body`` None means the endpoint's normal answer (``empty``: without records)."""

    status: int = 200
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False
    empty: bool = False


EMPTY = Reply(empty=True)
HANG = Reply(hang=True)


def refusal(status: int, case: str, message: str) -> Reply:
    """An error as Databento sends it: ``{"detail": {"case", "message", "status_code", "docs", "payload"}}``."""
    detail = {"case": case, "message": message, "status_code": status,
              "docs": "https://databento.com/docs/api-reference-historical/basics/errors", "payload": {}}
    return Reply(status, json.dumps({"detail": detail}).encode(), {"Content-Type": "application/json"})


@dataclass(frozen=True)
class Seen:
    """One request as the server saw it: endpoint, form fields, whether the basic-auth key matched."""

    endpoint: str
    form: dict[str, str]
    key_ok: bool

    @property
    def schema(self) -> str | None:
        return self.form.get("schema")


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (its own CA) and its key, as PEM files in ``directory``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "databento-standin.crt", directory / "databento-standin.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _ns(text: str) -> int:
    """A request time (ISO 8601 as the client sends datetimes, or integer nanoseconds) as UTC nanoseconds."""
    if text.isdigit():
        return int(text)
    ts = datetime.fromisoformat(text)
    ts = ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)
    return int(ts.timestamp()) * 1_000_000_000 + ts.microsecond * 1000


class DatabentoHistServer:
    """ThreadingHTTPServer with TLS on 127.0.0.1 (free port) in a daemon thread; see the module docstring."""

    def __init__(self, cert_dir: Path, key: str) -> None:
        self.key = key
        self.data: dict[str, list[Any]] = {}
        self.symbols: dict[int, str] = {}
        self.costs: dict[str, float] = {}
        self.script: dict[tuple[str, str | None], list[Reply]] = {}
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._release = threading.Event()
        self.ca_file, key_file = self_signed_cert(cert_dir)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.ca_file, key_file)
        server = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True

            def setup(self) -> None:
                # The TLS handshake in the request's own thread, not in the accepting one.
                self.request.do_handshake()
                super().setup()

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                form = {k: v[-1] for k, v in parse_qs(raw, keep_blank_values=True).items()}
                endpoint = self.path.removeprefix("/v0/")
                seen = Seen(endpoint, form, self.headers.get("Authorization") == server.basic_auth)
                with server._lock:
                    server.requests.append(seen)
                    queue = server.script.get((endpoint, seen.schema if endpoint in ENDPOINTS[:2] else None))
                    reply = queue.pop(0) if queue else Reply()
                if reply.hang:
                    server._release.wait(60)
                    return
                if not seen.key_ok:
                    reply = refusal(401, "auth_authentication_failed", "Authentication failed.")
                elif endpoint not in ENDPOINTS:
                    reply = refusal(404, "not_found", f"no endpoint {endpoint}")
                try:
                    body, ctype = (reply.body, reply.headers.get("Content-Type", "application/octet-stream")) \
                        if reply.body is not None else server.answer(endpoint, form, empty=reply.empty)
                    self.send_response(reply.status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(body)))
                    for k, v in reply.headers.items():
                        if k != "Content-Type":
                            self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True, do_handshake_on_connect=False)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def basic_auth(self) -> str:
        return "Basic " + base64.b64encode(f"{self.key}:".encode()).decode()

    @property
    def gateway(self) -> str:
        """``https://127.0.0.1:PORT``, for ``databento.Historical(gateway=…)``."""
        host, port = self.httpd.server_address[:2]
        return f"https://{host}:{port}"

    def seen(self, endpoint: str | None = None) -> list[Seen]:
        """Requests in arrival order (of one endpoint)."""
        with self._lock:
            return [r for r in self.requests if endpoint is None or r.endpoint == endpoint]

    def answer(self, endpoint: str, form: dict[str, str], *, empty: bool = False) -> tuple[bytes, str]:
        """The normal answer to a request: (body, content type)."""
        if endpoint == "metadata.get_cost":
            return json.dumps(self.costs.get(form["schema"], 0.01)).encode(), "application/json"
        if endpoint == "symbology.resolve":
            ids = form["symbols"].split(",")
            result = {i: [{"d0": form["start_date"], "d1": form["end_date"], "s": self.symbols[int(i)]}]
                      for i in ids if int(i) in self.symbols}
            return json.dumps({"result": result, "symbols": ids, "stype_in": form["stype_in"],
                               "stype_out": form["stype_out"], "start_date": form["start_date"],
                               "end_date": form["end_date"], "partial": [],
                               "not_found": [i for i in ids if i not in result], "message": "OK", "status": 0}
                              ).encode(), "application/json"
        stream = self.dbn_stream(form, empty=empty)
        if form.get("compression") == "zstd":
            stream = zstandard.ZstdCompressor().compress(stream)
        return stream, "application/octet-stream"

    def dbn_stream(self, form: dict[str, str], *, empty: bool = False) -> bytes:
        """A ``timeseries.get_range`` DBN stream: metadata, then the matching records in time order."""
        schema, parents = form["schema"], form["symbols"].split(",")
        start, end = _ns(form["start"]), _ns(form["end"]) if form.get("end") else 2**63 - 1
        meta = dbn.Metadata(dataset=form["dataset"], start=start, end=end, stype_in=dbn.SType.PARENT,
                            stype_out=dbn.SType.INSTRUMENT_ID, schema=_SCHEMAS[schema], symbols=parents)
        roots = tuple(p.removesuffix(".FUT") for p in parents)
        records = [] if empty else [
            r for r in self.data.get(schema, [])
            if self.symbols.get(r.instrument_id, "").startswith(roots)
            and start <= getattr(r, "ts_recv", r.ts_event) < end]
        records.sort(key=lambda r: getattr(r, "ts_recv", r.ts_event))
        return meta.encode() + b"".join(bytes(r) for r in records)

    def __enter__(self) -> DatabentoHistServer:
        self.thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
