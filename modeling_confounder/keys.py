"""Owner keys: any ``str``, ``bytes`` or ``int`` becomes the code a keyed generator is conditioned on.

A key is hashed (SHAKE-256, with a domain prefix) into ``dim`` independent standard normal numbers: the same key
always gives the same code, different keys give unrelated codes, and there is no table of known keys. A dataset
owner's secret and a class label give that class its own key (``class_key``), for any number of classes.

Keys are secrets: nothing here logs, prints or stores them, and their ``repr`` never appears in an error message.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

Key = str | bytes | int
DOMAIN = b"confounder-gan owner key v1\0"


def key_bytes(key: Key) -> bytes:
    """The bytes a key stands for: UTF-8 for text, the decimal digits for an integer."""
    if isinstance(key, bool) or not isinstance(key, (str, bytes, int)):
        raise TypeError(f"a key is a str, bytes or int, got {type(key).__name__}")
    data = key if isinstance(key, bytes) else str(key).encode()
    if not data:
        raise ValueError("the key is empty: use a long random secret, e.g. from new_key()")
    return data


def key_code(key: Key, dim: int) -> torch.Tensor:
    """``dim`` standard normal numbers drawn deterministically from the key's hash."""
    raw = np.frombuffer(hashlib.shake_256(DOMAIN + key_bytes(key)).digest(4 * dim), dtype="<u4")
    uniform = torch.from_numpy((raw.astype(np.float64) + 0.5) / 2**32)
    return torch.special.ndtri(uniform).float()


def key_codes(keys: Sequence[Key], dim: int) -> torch.Tensor:
    """One code per key, (len(keys), dim); each distinct key is hashed once."""
    unique = {key: key_code(key, dim) for key in dict.fromkeys(keys)}
    return torch.stack([unique[key] for key in keys]) if keys else torch.empty(0, dim)


def class_key(secret: Key, label: int) -> bytes:
    """The key of class ``label`` of a dataset protected with ``secret``: its own shortcut, derived, not stored."""
    return hashlib.sha256(b"class\0" + key_bytes(secret) + b"\0" + str(int(label)).encode()).digest()


def new_key() -> str:
    """A fresh random key (256 bits, URL-safe text) from the operating system's secure generator."""
    return secrets.token_urlsafe(32)


def default_key_file() -> Path:
    """Where the command line keeps the user's key: ``$XDG_CONFIG_HOME/confounder/key`` (``~/.config`` by default)."""
    config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config) / "confounder" / "key"


def load_or_create_key(path: Path) -> tuple[str, bool]:
    """The key stored in ``path``, or a new one written there readable by the user only; and whether it is new."""
    if path.exists():
        key = path.read_text(encoding="utf-8").strip()
        if not key:
            raise ValueError(f"the key file {path} is empty: delete it to make a new key, or restore your key")
        return key, False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = new_key()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(key + "\n")
    return key, True
