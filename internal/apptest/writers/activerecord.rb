# App writer: ActiveRecord 6.1 on ruby-pg, the way a Rails app writes.
#
# Configuration, as a Rails app has it: APPTEST_DATABASE_YML is its
# config/database.yml, read as Rails reads it (ERB, then YAML), production
# environment; ActiveRecord merges DATABASE_URL from the environment into
# it, as Rails does. APPTEST_CLIENT names the writer in the log,
# APPTEST_INTERVAL_MS is the cadence (default 50).
#
# Each write is one "request": the pool checks a connection out (which
# verifies it and reconnects when it is gone, ActiveRecord's own policy),
# the INSERT runs, and the connection goes back as Rails' executor does at
# the end of a request (clear_active_connections!). One JSON line per
# attempt goes to stdout. SIGTERM ends the loop after the write in flight.
require "erb"
require "json"
require "yaml"
require "active_record"

$stdout.sync = true
CLIENT = ENV.fetch("APPTEST_CLIENT", "activerecord")
INTERVAL_MS = Integer(ENV.fetch("APPTEST_INTERVAL_MS", "50"))

stop = false
%w[TERM INT].each { |sig| Signal.trap(sig) { stop = true } }

def now_ms
  Process.clock_gettime(Process::CLOCK_REALTIME, :millisecond)
end

def one_line(e)
  "#{e.class}: #{e.message}".gsub(/\s+/, " ").strip[0, 500]
end

begin
  yml = File.read(ENV.fetch("APPTEST_DATABASE_YML"))
  ActiveRecord::Base.configurations = YAML.load(ERB.new(yml).result, aliases: true)
  ActiveRecord::Base.establish_connection(:production)
rescue => e
  warn "activerecord writer: cannot configure ActiveRecord: #{one_line(e)}"
  exit 2
end

class Write < ActiveRecord::Base
end

seq = 0
next_at = now_ms
until stop
  wait = next_at - now_ms
  sleep(wait / 1000.0) if wait > 0
  break if stop
  seq += 1
  start = now_ms
  node = nil
  err = nil
  begin
    rows = Write.insert_all!([{ client: CLIENT, seq: seq }], returning: %w[node])
    node = rows.rows.first&.first
  rescue => e
    err = one_line(e)
  ensure
    ActiveRecord::Base.clear_active_connections!
  end
  finish = now_ms
  puts JSON.generate({ client: CLIENT, seq: seq, ok: err.nil?, node: node, start: start, end: finish, error: err || "" })
  next_at += INTERVAL_MS
  next_at = now_ms if next_at < now_ms
end
