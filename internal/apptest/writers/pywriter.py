# App writer: psycopg2 (argument "psycopg2") or psycopg 3 ("psycopg"),
# Debian's python3-psycopg2 / python3-psycopg.
#
# Not named psycopg.py: the script's directory comes first on sys.path,
# so that name would shadow the psycopg package.
#
# Configuration: DATABASE_URL, a libpq URL (several hosts allowed, with
# target_session_attrs, connect_timeout, tcp_user_timeout as query
# parameters). APPTEST_CLIENT names the writer in the log,
# APPTEST_INTERVAL_MS is the cadence (default 50).
#
# Reconnect policy, as a plain psycopg app has it: one connection, kept
# while it works; after any error it is closed and the next write opens a
# new one. One JSON line per attempt goes to stdout. SIGTERM ends the loop
# after the write in flight.
import json
import os
import signal
import sys
import time

driver = sys.argv[1] if len(sys.argv) > 1 else "psycopg2"
if driver == "psycopg2":
    import psycopg2 as db
elif driver == "psycopg":
    import psycopg as db
else:
    sys.exit("psycopg writer: the argument is psycopg2 or psycopg, not %r" % driver)

CLIENT = os.environ.get("APPTEST_CLIENT", driver)
INTERVAL_MS = int(os.environ.get("APPTEST_INTERVAL_MS", "50"))
URL = os.environ.get("DATABASE_URL", "")
if not URL:
    sys.exit("psycopg writer: DATABASE_URL is not set")

stop = False


def on_signal(signum, frame):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGINT, on_signal)


def now_ms():
    return time.time_ns() // 1_000_000


def one_line(e):
    return " ".join(("%s: %s" % (type(e).__name__, e)).split())[:500]


conn = None
seq = 0
next_at = now_ms()
while not stop:
    wait = next_at - now_ms()
    if wait > 0:
        time.sleep(wait / 1000)
    if stop:
        break
    seq += 1
    start = now_ms()
    node, err = None, None
    try:
        if conn is None:
            conn = db.connect(URL)
            conn.autocommit = True
        cur = conn.cursor()
        cur.execute("INSERT INTO writes (client, seq) VALUES (%s, %s) RETURNING node", (CLIENT, seq))
        node = cur.fetchone()[0]
        cur.close()
    except Exception as e:  # any error: drop the connection, reconnect on the next write
        err = one_line(e)
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass
            conn = None
    finish = now_ms()
    print(json.dumps({"client": CLIENT, "seq": seq, "ok": err is None, "node": node,
                      "start": start, "end": finish, "error": err or ""}), flush=True)
    next_at += INTERVAL_MS
    if next_at < now_ms():
        next_at = now_ms()
