// App writer: node-postgres (argument "pg": npm pg, through its Pool) or
// postgres.js (argument "postgres": npm postgres).
//
// Configuration: DATABASE_URL. node-postgres takes one host only;
// postgres.js takes several, and needs target_session_attrs=primary to
// stay off a PostgreSQL >= 14 hot standby. APPTEST_CLIENT names the writer
// in the log, APPTEST_INTERVAL_MS is the cadence (default 50).
//
// Reconnect policy, each library's own: node-postgres' Pool drops a client
// whose connection broke and opens a new one for the next query (idle
// clients' errors come as the pool's 'error' event, which its docs say an
// app must handle); postgres.js replaces a broken connection on the next
// query. One JSON line per attempt goes to stdout. SIGTERM ends the loop
// after the write in flight.
'use strict';

const driver = process.argv[2] || 'pg';
const CLIENT = process.env.APPTEST_CLIENT || driver;
const INTERVAL_MS = parseInt(process.env.APPTEST_INTERVAL_MS || '50', 10);
if (!process.env.DATABASE_URL) {
  console.error('node writer: DATABASE_URL is not set');
  process.exit(2);
}

let stop = false;
process.on('SIGTERM', () => { stop = true; });
process.on('SIGINT', () => { stop = true; });

const oneLine = (e) => `${e && e.name ? e.name : 'Error'}: ${e && e.message ? e.message : String(e)}${e && e.code ? ' code=' + e.code : ''}`.replace(/\s+/g, ' ').trim().slice(0, 500);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// insert(client, seq) resolves to the node that took the write.
function connect() {
  if (driver === 'pg') {
    const { Pool } = require('pg');
    const pool = new Pool({ connectionString: process.env.DATABASE_URL, max: 2 });
    pool.on('error', (e) => console.error('node-postgres: idle client error:', oneLine(e)));
    return async (client, seq) => {
      const res = await pool.query('INSERT INTO writes (client, seq) VALUES ($1, $2) RETURNING node', [client, seq]);
      return res.rows[0].node;
    };
  }
  if (driver === 'postgres') {
    const sql = require('postgres')(process.env.DATABASE_URL, { max: 2, onnotice: () => {} });
    return async (client, seq) => {
      const rows = await sql`INSERT INTO writes (client, seq) VALUES (${client}, ${seq}) RETURNING node`;
      return rows[0].node;
    };
  }
  console.error(`node writer: the argument is pg or postgres, not ${driver}`);
  process.exit(2);
}

async function main() {
  const insert = connect();
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
      node = await insert(CLIENT, seq);
    } catch (e) {
      err = oneLine(e);
    }
    const end = Date.now();
    process.stdout.write(JSON.stringify({ client: CLIENT, seq, ok: err === null, node, start, end, error: err || '' }) + '\n');
    nextAt += INTERVAL_MS;
    if (nextAt < Date.now()) nextAt = Date.now();
  }
  // Closing the pool could wait on a connection that hangs: just exit.
  process.exit(0);
}

main().catch((e) => { console.error('node writer:', oneLine(e)); process.exit(1); });
