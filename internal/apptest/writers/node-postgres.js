// App writer: node-postgres (npm `pg`), through its Pool.
//
// Configuration: DATABASE_URL (node-postgres takes one host only).
// APPTEST_CLIENT names the writer in the log, APPTEST_INTERVAL_MS is the
// cadence (default 50).
//
// Reconnect policy, node-postgres' own: the Pool drops a client whose
// connection broke and opens a new one for the next query; idle-client
// errors are reported on the pool's 'error' event, which its docs say an
// app must handle. One JSON line per attempt goes to stdout. SIGTERM ends
// the loop after the write in flight.
'use strict';
const { Pool } = require('pg');

const CLIENT = process.env.APPTEST_CLIENT || 'node-postgres';
const INTERVAL_MS = parseInt(process.env.APPTEST_INTERVAL_MS || '50', 10);
if (!process.env.DATABASE_URL) {
  console.error('node-postgres writer: DATABASE_URL is not set');
  process.exit(2);
}

let stop = false;
process.on('SIGTERM', () => { stop = true; });
process.on('SIGINT', () => { stop = true; });

const oneLine = (e) => `${e && e.name ? e.name : 'Error'}: ${e && e.message ? e.message : String(e)}${e && e.code ? ' code=' + e.code : ''}`.replace(/\s+/g, ' ').trim().slice(0, 500);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const pool = new Pool({ connectionString: process.env.DATABASE_URL, max: 2 });
  pool.on('error', (e) => console.error('node-postgres writer: idle client error:', oneLine(e)));
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
      const res = await pool.query('INSERT INTO writes (client, seq) VALUES ($1, $2) RETURNING node', [CLIENT, seq]);
      node = res.rows[0].node;
    } catch (e) {
      err = oneLine(e);
    }
    const end = Date.now();
    process.stdout.write(JSON.stringify({ client: CLIENT, seq, ok: err === null, node, start, end, error: err || '' }) + '\n');
    nextAt += INTERVAL_MS;
    if (nextAt < Date.now()) nextAt = Date.now();
  }
  // Do not wait on a pool whose connection may hang.
  pool.end().catch(() => {});
  process.exit(0);
}

main().catch((e) => { console.error('node-postgres writer:', oneLine(e)); process.exit(1); });
