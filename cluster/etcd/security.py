"""How to reach a secured etcd: TLS files and a user (``Security``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from cluster.errors import Unavailable


@dataclass(frozen=True, slots=True)
class Security:
    """How to reach a secured etcd: TLS (server CA, optional client certificate) and/or a user.

    Paths are read at connect time. ``https://`` endpoints use TLS even without a CA (then the
    system roots verify the server).
    """

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    user: str | None = None
    password: str | None = None

    def tls(self, endpoints: Sequence[str]) -> bool:
        return bool(self.ca or self.cert) or any(e.startswith("https://") for e in endpoints)

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: str | None) -> bytes | None:
            if path is None:
                return None
            try:
                with open(path, "rb") as f:
                    return f.read()
            except OSError as exc:
                raise Unavailable(f"cannot read etcd TLS file {path}: {exc}") from exc

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca),
            private_key=read(self.key),
            certificate_chain=read(self.cert),
        )


def token_expired(code: grpc.StatusCode | None, details: str | None) -> bool:
    return code == grpc.StatusCode.UNAUTHENTICATED or "invalid auth token" in (details or "")
