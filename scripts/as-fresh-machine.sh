#!/usr/bin/env bash
# Run a command (e.g. `make test`) as on a machine without PostgreSQL and Redis: the tests bring
# their own (KERASYARD_TEST_SERVICES=own), and the machine's binaries are shadowed on PATH by
# stubs that fail. A stub that was run at all fails this script, even where its caller went on.
#   ./scripts/as-fresh-machine.sh make test
set -euo pipefail
stubs="$(mktemp -d "${TMPDIR:-/tmp}/kerasyard-stubs.XXXXXX")"
trap 'rm -rf "$stubs"' EXIT
for name in postgres postmaster initdb pg_ctl pg_ctlcluster pg_lsclusters pg_isready psql \
            createdb dropdb redis-server redis-cli; do
  cat > "$stubs/$name" <<STUB
#!/bin/sh
echo "$name \$*" >> "$stubs/called"
echo "$name: the machine's binary is not to be used in this run (scripts/as-fresh-machine.sh)" >&2
exit 127
STUB
  chmod +x "$stubs/$name"
done
status=0
PATH="$stubs:$PATH" KERASYARD_TEST_SERVICES=own "$@" || status=$?
if [ -s "$stubs/called" ]; then
  echo "as-fresh-machine: the machine's PostgreSQL/Redis binaries were run:" >&2
  cat "$stubs/called" >&2
  [ "$status" -ne 0 ] || status=1
fi
exit "$status"
