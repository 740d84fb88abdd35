# Prints, as real Kamal computes them, the values of a secrets file: the
# dotenv gem's parser (3.1) with Kamal's own command substitution, as
# Kamal::Secrets installs it. kamal/dotenv_test.go compares understudy's
# reader with this output (kamal/testdata/dotenv/expected.txt):
#
#   US_DOTENV_TEST_VAR=from-env ruby scripts/kamal-secrets.rb DOTENV_LIB KAMAL_LIB kamal/testdata/dotenv/secrets
#
# DOTENV_LIB is an unpacked bkeepers/dotenv v3.1.x lib/, KAMAL_LIB an
# unpacked basecamp/kamal 2.12 lib/. docs/kamal-commands.md says when it
# was run.
dotenv_lib, kamal_lib, file = ARGV
$LOAD_PATH.unshift dotenv_lib
require "dotenv"
require "English"
module Kamal; class Secrets; module Dotenv; end; end; end
load File.join(kamal_lib, "kamal/secrets/dotenv/inline_command_substitution.rb")
Kamal::Secrets::Dotenv::InlineCommandSubstitution.install!
::Dotenv.parse(file, overwrite: true).sort.each { |k, v| puts "#{k}=#{v.inspect}" }
