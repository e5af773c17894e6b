"""Identifiers: UUIDv7 transaction ids (time-ordered, so `from_id` cursors mean "after"), 24-hex profile ids."""

from __future__ import annotations

import secrets

import uuid6


def new_txn_id() -> str:
    return str(uuid6.uuid7())


def new_profile_id() -> str:
    return secrets.token_hex(12)
