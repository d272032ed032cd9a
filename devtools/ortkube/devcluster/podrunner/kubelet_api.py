"""The podrunner's kubelet endpoint: it serves no kubelet API, and says so.

The apiserver dials a node's kubelet port for ``kubectl logs``, ``exec``, ``attach`` and
``port-forward``. Without a listener there it reports a bare ``connection refused``; this
HTTPS listener on loopback answers every such request with a 501 whose text names the tool
that does the job here instead.
"""

from __future__ import annotations

import ssl
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ortkube.devcluster import certs
from ortkube.devcluster.log import log_event
from ortkube.devcluster.network import HOST


def unsupported_message(path: str) -> str:
    """What a user reads when asking the podrunner for a kubelet API at ``path``."""
    parts = path.split("?", 1)[0].strip("/").split("/")
    action = parts[0] if parts and parts[0] else "this kubelet API"
    target = "/".join(parts[1:3]) if len(parts) >= 3 else "NAMESPACE/POD"
    return (
        f"the ortkube dev podrunner runs pods as local processes and serves no kubelet API "
        f"({action}: logs, exec, attach and port-forward are not available); read a pod's "
        f"log with `ortkube dev logs {target}`, and reach its server at the pod IP"
    )


class _Handler(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        message = unsupported_message(self.path)
        body = message.encode()  # plain text: the apiserver quotes it to the user as it is
        self.send_response(501)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        log_event("podrunner.kubelet_api_refused", path=self.path.split("?", 1)[0])

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: each request is logged once, structured, by ``_answer``."""


def _tls_context(pki: Path) -> ssl.SSLContext:
    ca = certs.KeyPair((pki / "ca.crt").read_bytes(), (pki / "ca.key").read_bytes())
    pair = certs.new_serving_cert(ca, ("ortkube-local",), (HOST,))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as folder:  # ssl loads certs from files only
        cert, key = Path(folder) / "tls.crt", Path(folder) / "tls.key"
        cert.write_bytes(pair.cert_pem)
        key.write_bytes(pair.key_pem)
        context.load_cert_chain(cert, key)
    return context


class KubeletEndpoint:
    """An HTTPS listener on 127.0.0.1 (a free port) that refuses kubelet calls with a reason."""

    def __init__(self, pki: Path) -> None:
        self._server = ThreadingHTTPServer((HOST, 0), _Handler)
        self._server.daemon_threads = True
        self._server.socket = _tls_context(pki).wrap_socket(self._server.socket, server_side=True)
        self.port = int(self._server.server_address[1])

    def start(self) -> None:
        """Serve in a daemon thread."""
        threading.Thread(target=self._server.serve_forever, name="kubelet-api", daemon=True).start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
