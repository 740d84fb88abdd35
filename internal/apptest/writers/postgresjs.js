// App writer: postgres.js (npm `postgres`).
//
// Configuration: DATABASE_URL (several hosts allowed; postgres.js needs
// target_session_attrs=primary to stay off a PostgreSQL >= 14 hot
// standby). APPTEST_CLIENT names the writer in the log,
// APPTEST_INTERVAL_MS is the cadence (default 50).
//
// Reconnect policy, postgres.js' own: its pool replaces a connection that
// broke on the next query. One JSON line per attempt goes to stdout.
// SIGTERM ends the loop after the write in flight.
'use strict';
const postgres = require('postgres');

const CLIENT = process.env.APPTEST_CLIENT || 'postgresjs';
const INTERVAL_MS = parseInt(process.env.APPTEST_INTERVAL_MS || '50', 10);
if (!process.env.DATABASE_URL) {
  console.error('postgres.js writer: DATABASE_URL is not set');
  process.exit(2);
}

let stop = false;
process.on('SIGTERM', () => { stop = true; });
process.on('SIGINT', () => { stop = true; });

const oneLine = (e) => `${e && e.name ? e.name : 'Error'}: ${e && e.message ? e.message : String(e)}${e && e.code ? ' code=' + e.code : ''}`.replace(/\s+/g, ' ').trim().slice(0, 500);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const sql = postgres(process.env.DATABASE_URL, { max: 2, onnotice: () => {} });
  let seq = 0;
  let nextAt = Date.now();
  while (!stop) {
    const wait = nextAt - Date.now();
    if (wait > 0) await sleep(wait);
    if (stop) break;
    seq += 1;
    const start = Date.now();
    let node = null;
    let err = null;
    try {
      const rows = await sql`INSERT INTO writes (client, seq) VALUES (${CLIENT}, ${seq}) RETURNING node`;
      node = rows[0].node;
    } catch (e) {
      err = oneLine(e);
    }
    const end = Date.now();
    process.stdout.write(JSON.stringify({ client: CLIENT, seq, ok: err === null, node, start, end, error: err || '' }) + '\n');
    nextAt += INTERVAL_MS;
    if (nextAt < Date.now()) nextAt = Date.now();
  }
  sql.end({ timeout: 0 }).catch(() => {});
  process.exit(0);
}

main().catch((e) => { console.error('postgres.js writer:', oneLine(e)); process.exit(1); });
