<?php
// App writer: PHP PDO with pdo_pgsql (Debian's php-pgsql).
//
// Configuration, as a PHP app is told: APP_DB_DSN (a pgsql: DSN, host
// and port lists allowed, with target_session_attrs), APP_DB_USER,
// APP_DB_PASSWORD, APP_DB_TIMEOUT (PDO::ATTR_TIMEOUT in seconds: pdo_pgsql
// passes it to libpq as connect_timeout, overriding the DSN's).
// APPTEST_CLIENT names the writer in the log, APPTEST_INTERVAL_MS is the
// cadence (default 50).
//
// Reconnect policy, as a plain PDO app has it: one connection, kept while
// it works; after any error it is dropped and the next write opens a new
// one. One JSON line per attempt goes to stdout. SIGTERM ends the loop
// after the write in flight.
$client = getenv('APPTEST_CLIENT') ?: 'pdo';
$interval = (int)(getenv('APPTEST_INTERVAL_MS') ?: 50);
$dsn = getenv('APP_DB_DSN');
if (!$dsn) {
    fwrite(STDERR, "pdo writer: APP_DB_DSN is not set\n");
    exit(2);
}
$options = [PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION];
if (getenv('APP_DB_TIMEOUT')) {
    $options[PDO::ATTR_TIMEOUT] = (int)getenv('APP_DB_TIMEOUT');
}

$stop = false;
pcntl_async_signals(true);
pcntl_signal(SIGTERM, function () use (&$stop) { $stop = true; });
pcntl_signal(SIGINT, function () use (&$stop) { $stop = true; });

function now_ms(): int { return (int)floor(microtime(true) * 1000); }
function one_line(Throwable $e): string {
    return substr(trim(preg_replace('/\s+/', ' ', get_class($e) . ': ' . $e->getMessage())), 0, 500);
}

$db = null;
$seq = 0;
$next = now_ms();
while (!$stop) {
    $wait = $next - now_ms();
    if ($wait > 0) usleep($wait * 1000);
    if ($stop) break;
    $seq++;
    $start = now_ms();
    $node = null;
    $err = null;
    try {
        if ($db === null) {
            $db = new PDO($dsn, getenv('APP_DB_USER') ?: null, getenv('APP_DB_PASSWORD') ?: null, $options);
        }
        $st = $db->prepare('INSERT INTO writes (client, seq) VALUES (?, ?) RETURNING node');
        $st->execute([$client, $seq]);
        $node = $st->fetchColumn();
    } catch (Throwable $e) {
        $err = one_line($e);
        $db = null;
    }
    $end = now_ms();
    echo json_encode(['client' => $client, 'seq' => $seq, 'ok' => $err === null, 'node' => $node,
        'start' => $start, 'end' => $end, 'error' => $err ?? '']), "\n";
    $next += $interval;
    if ($next < now_ms()) $next = now_ms();
}
exit(0);
