# Prints, from Kamal's own classes, the commands Kamal runs for each
# accessory of an app, in the format of kamal/testdata/kamal_commands_golden.txt
# (kamal/commands_test.go), so understudy's builders and its kamal stand-in
# can be checked against real Kamal:
#
#   cd kamal/testdata/commands
#   ruby -I<shims> -I<kamal>/lib ../../../scripts/kamal-commands.rb | diff - ../kamal_commands_golden.txt
#
# docs/kamal-commands.md says how it was run and what it showed.
require "kamal"

cmdr = Kamal::Commander.new
cmdr.configure(config_file: Pathname.new("config/deploy.yml"), destination: nil, version: "x")

# SSHKit maps only a command's first word (docker to "docker", others
# through /usr/bin/env) and joins the rest with spaces.
def line(words)
  words = words.compact
  first, *rest = words
  head = first.to_s == "docker" ? "docker" : "/usr/bin/env #{first}"
  ([ head ] + rest.map(&:to_s)).join(" ")
end

%w[db db-replica].each do |name|
  acc = cmdr.accessory(name)
  cfg = cmdr.config.accessory(name)
  p = ->(k, v) { puts "#{name} #{k}: #{v}" }
  p.("service", acc.service_name)
  p.("run", line(acc.run(host: "10.211.7.10")))
  p.("start", line(acc.start))
  p.("stop", line(acc.stop))
  p.("info", line(acc.info))
  p.("info_all_quiet", line(acc.info(all: true, quiet: true)))
  p.("logs", line(acc.logs(timestamps: true, lines: 100)))
  p.("exec", line(acc.execute_in_new_container("pg_controldata")))
  p.("pull", line(acc.pull_image))
  p.("remove_container", line(acc.remove_container))
  p.("login", line(cmdr.registry.login(registry_config: cfg.registry)))
  p.("env_path", cfg.secrets_path)
  p.("env", cfg.secrets_io.string.inspect)
  cfg.files.each { |_, c| p.("file", "#{c[:host_path]} #{c[:mode]}") }
  cfg.directories.each { |key, _| p.("dir", key) }
end
puts "lock status: #{line(cmdr.lock.status)}"
puts "lock release: #{line(cmdr.lock.release)}"
