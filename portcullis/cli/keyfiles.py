"""Writing a freshly made key pair: the private half readable by its owner only, never over an existing file."""

from __future__ import annotations

import os
from pathlib import Path


def write_key_pair(private_path: str, public_path: str, private_pem: bytes, public_pem: bytes) -> None:
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem)
    Path(public_path).write_bytes(public_pem)
