#!/usr/bin/env python3
"""Reference receiver for the Event Reward Platform's reward-delivery webhook.

The platform POSTs each granted reward ("delivery") as JSON with two headers:

    ERP-Delivery-Id: <delivery id>
    ERP-Signature:   t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>" with the secret>

This receiver does the four things every game-side receiver must do:

1. verify the signature over the exact bytes received, in constant time (401 if wrong);
2. refuse a timestamp outside the replay window (400), so a captured request cannot be
   replayed later;
3. apply each delivery id once, durably: the "applied" mark and the reward are written in one
   SQLite transaction, so a crash can neither lose a reward nor apply it twice;
4. answer 2xx only after the reward is applied (and 2xx again for an id already applied:
   delivery is at least once, so the same delivery may arrive more than once).

Anything else (a non-2xx answer, a timeout) makes the platform retry later with backoff.

Python 3.8+ standard library only. Run:

    python3 receiver.py --port 8099 --secret "$ERP_DELIVERY_WEBHOOK_SECRET"

With --port 0 the system picks a free port; the first line printed says which.
`python3 receiver.py --db receiver.sqlite3 --dump` prints what was applied, as JSON.
"""

import argparse
import hashlib
import hmac
import json
import os
import sqlite3
import sys
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY_BYTES = 1 << 20

SCHEMA = """
CREATE TABLE IF NOT EXISTS applied_deliveries (
    delivery_id TEXT PRIMARY KEY,   -- the idempotency key: one row per delivery, ever
    claim_id    TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    applied_at  TEXT NOT NULL,
    body        TEXT NOT NULL
);
-- Stands in for your game's inventory / wallet.
CREATE TABLE IF NOT EXISTS player_rewards (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id TEXT NOT NULL REFERENCES applied_deliveries(delivery_id),
    user_id     TEXT NOT NULL,
    reward_type TEXT NOT NULL,
    item_code   TEXT,
    quantity    INTEGER NOT NULL
);
"""


# ---------------------------------------------------------------------------------------------
# REPLACE THIS with your game's logic. It runs inside the transaction that marks the delivery
# applied: write the reward with `db` and it commits together with the mark (exactly once).
# If your game keeps inventories elsewhere, make that write idempotent by `delivery["id"]`
# (e.g. a unique key on it) instead. Raise to refuse: nothing is kept, the platform retries.
# ---------------------------------------------------------------------------------------------
def apply_reward(db, delivery):
    for reward in delivery["rewards"]:
        db.execute(
            "INSERT INTO player_rewards (delivery_id, user_id, reward_type, item_code, quantity)"
            " VALUES (?, ?, ?, ?, ?)",
            (
                delivery["id"],
                delivery["userId"],
                reward["type"],
                reward.get("itemCode"),
                reward["quantity"],
            ),
        )


class Refused(Exception):
    """A request the receiver does not accept: the HTTP status and why."""

    def __init__(self, status, reason):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def verify_signature(secret, header, body, replay_window, now=None):
    """Checks `ERP-Signature` against `body`; raises Refused unless it is valid and fresh."""
    timestamp, signatures = None, []
    for part in (header or "").split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            timestamp = value
        elif key == "v1":
            signatures.append(value)
    if timestamp is None or not timestamp.isdigit() or not signatures:
        raise Refused(401, "missing or malformed ERP-Signature")
    signed = timestamp.encode() + b"." + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    # compare_digest takes the same time however many characters match.
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures):
        raise Refused(401, "bad signature")
    # Checked after the signature, so only the platform learns that its clock is off.
    now = time.time() if now is None else now
    if abs(now - int(timestamp)) > replay_window:
        raise Refused(400, "stale timestamp (outside the replay window)")


def open_store(path):
    # isolation_level=None: transactions are begun explicitly below. timeout: wait for a
    # concurrent writer instead of failing.
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")  # committed means on disk
    return db


def apply_once(db, delivery, body):
    """Applies `delivery` unless its id was applied before. True if applied now."""
    db.execute("BEGIN IMMEDIATE")  # one writer at a time: no two threads apply one id
    try:
        seen = db.execute(
            "SELECT 1 FROM applied_deliveries WHERE delivery_id = ?", (delivery["id"],)
        ).fetchone()
        if seen:
            db.execute("ROLLBACK")
            return False
        db.execute(
            "INSERT INTO applied_deliveries"
            " (delivery_id, claim_id, event_id, user_id, applied_at, body)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                delivery["id"],
                delivery["claimId"],
                delivery["eventId"],
                delivery["userId"],
                datetime.now(timezone.utc).isoformat(),
                body.decode(),
            ),
        )
        apply_reward(db, delivery)
        db.execute("COMMIT")
        return True
    except BaseException:
        db.execute("ROLLBACK")
        raise


class Handler(BaseHTTPRequestHandler):
    # Set by main(): the shared secret, the replay window (seconds) and the SQLite path.
    secret = ""
    replay_window = 300
    db_path = "receiver.sqlite3"

    def do_POST(self):
        try:
            length = int(self.headers.get("Content-Length") or "0")
            if length < 0 or length > MAX_BODY_BYTES:
                raise Refused(413, "body too large")
            body = self.rfile.read(length)
            verify_signature(
                self.secret, self.headers.get("ERP-Signature"), body, self.replay_window
            )
            delivery = json.loads(body)
            if delivery.get("id") != self.headers.get("ERP-Delivery-Id"):
                raise Refused(400, "ERP-Delivery-Id does not match the body's id")
            db = open_store(self.db_path)
            try:
                applied = apply_once(db, delivery, body)
            finally:
                db.close()
            self.answer(200, {"deliveryId": delivery["id"], "applied": applied})
        except Refused as refused:
            self.answer(refused.status, {"error": refused.reason})
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            self.answer(400, {"error": f"not a delivery: {error}"})
        except Exception as error:  # a failure of ours: not applied, the platform retries
            self.log_error("failed to apply: %r", error)
            self.answer(500, {"error": "not applied"})

    def answer(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def dump(db_path):
    """What was applied, as JSON (for people and tests)."""
    db = open_store(db_path)
    db.executescript(SCHEMA)
    applied = []
    for delivery_id, user_id, applied_at in db.execute(
        "SELECT delivery_id, user_id, applied_at FROM applied_deliveries ORDER BY applied_at"
    ):
        rewards = db.execute(
            "SELECT reward_type, item_code, quantity FROM player_rewards WHERE delivery_id = ?",
            (delivery_id,),
        ).fetchall()
        applied.append(
            {
                "deliveryId": delivery_id,
                "userId": user_id,
                "appliedAt": applied_at,
                "rewards": [
                    {"type": t, "itemCode": code, "quantity": q} for t, code, q in rewards
                ],
            }
        )
    db.close()
    print(json.dumps({"applied": applied}, indent=2))


def main():
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default=env("RECEIVER_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env("RECEIVER_PORT", "8099")))
    parser.add_argument(
        "--secret",
        default=env("ERP_DELIVERY_WEBHOOK_SECRET"),
        help="the platform's ERP_DELIVERY_WEBHOOK_SECRET (default: that environment variable)",
    )
    parser.add_argument("--db", default=env("RECEIVER_DB", "receiver.sqlite3"))
    parser.add_argument(
        "--replay-window",
        type=int,
        default=int(env("RECEIVER_REPLAY_WINDOW_SECS", "300")),
        help="seconds a signature's timestamp may differ from now (default 300)",
    )
    parser.add_argument("--dump", action="store_true", help="print what was applied and exit")
    args = parser.parse_args()

    if args.dump:
        dump(args.db)
        return
    if not args.secret:
        parser.error("--secret or ERP_DELIVERY_WEBHOOK_SECRET is required")

    db = open_store(args.db)
    db.executescript(SCHEMA)
    db.close()
    Handler.secret = args.secret
    Handler.replay_window = args.replay_window
    Handler.db_path = args.db
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    host, port = server.server_address[:2]
    print(f"listening on http://{host}:{port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    sys.exit(main())
