"""``tocsin``: the command line of Tocsin (docs/cli.md).

Pure parts (exit codes, output rendering, matcher parsing, SSE parsing, the profile and
credential files' rules) live in their own modules with unit tests; the commands in
``commands/`` are thin: parse options, call the REST API (``client``) or Kafka
(``kafka_admin``), render.
"""
