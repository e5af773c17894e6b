"""Raw store ceilings: one accrual-shaped transaction (lock account, insert ledger row, update balance, commit)
with the plain driver and the same durability settings as the engine, no HTTP, no Python service layer."""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from pathlib import Path


def sqlite_ceiling(path: Path, seconds: float, accounts: int = 1000) -> float:
    """Transactions per second, one thread, WAL + synchronous=FULL + BEGIN IMMEDIATE."""
    path.unlink(missing_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE acc (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)")
    db.execute("CREATE TABLE ledger (id INTEGER PRIMARY KEY, acc INTEGER NOT NULL, amount INTEGER NOT NULL)")
    db.executemany("INSERT INTO acc VALUES (?, 0)", [(i,) for i in range(accounts)])
    done, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        acc = random.randrange(accounts)
        db.execute("BEGIN IMMEDIATE")
        (balance,) = db.execute("SELECT balance FROM acc WHERE id = ?", (acc,)).fetchone()
        db.execute("INSERT INTO ledger (acc, amount) VALUES (?, 100)", (acc,))
        db.execute("UPDATE acc SET balance = ? WHERE id = ?", (balance + 100, acc))
        db.execute("COMMIT")
        done += 1
    db.close()
    return done / seconds


def postgres_ceiling(url: str, seconds: float, clients: int = 8, accounts: int = 1000) -> float:
    """Transactions per second with `clients` connections (like pgbench -c 8), SELECT … FOR UPDATE."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        db.execute("DROP TABLE IF EXISTS raw_ledger, raw_acc")
        db.execute("CREATE TABLE raw_acc (id INTEGER PRIMARY KEY, balance BIGINT NOT NULL)")
        db.execute("CREATE TABLE raw_ledger (id BIGSERIAL PRIMARY KEY, acc INTEGER NOT NULL, amount BIGINT NOT NULL)")
        db.execute("INSERT INTO raw_acc SELECT g, 0 FROM generate_series(0, %s) g", (accounts - 1,))
    counts = [0] * clients
    end = time.perf_counter() + seconds

    def worker(slot: int) -> None:
        with psycopg.connect(url) as db:
            while time.perf_counter() < end:
                acc = random.randrange(accounts)
                with db.transaction():
                    balance = db.execute("SELECT balance FROM raw_acc WHERE id = %s FOR UPDATE", (acc,)).fetchone()
                    db.execute("INSERT INTO raw_ledger (acc, amount) VALUES (%s, 100)", (acc,))
                    db.execute("UPDATE raw_acc SET balance = %s WHERE id = %s", (balance[0] + 100, acc))
                counts[slot] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("DROP TABLE IF EXISTS raw_ledger, raw_acc")
    return sum(counts) / seconds
