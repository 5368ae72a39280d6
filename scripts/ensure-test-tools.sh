#!/usr/bin/env bash
# Makes sure the system tools the test suite drives are present: Debian's chromium (browser test),
# openssl (TLS test) and postgresql-15-wal2json (the replication source on wal2json). On a fresh Debian machine, as root, it installs them; otherwise it says what to do.
set -euo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || missing+=(chromium)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# SOURCE=replication on wal2json: Debian's plug-in for the system PostgreSQL 15 (replication-wal2json.test.ts).
[ -e /usr/lib/postgresql/15/lib/wal2json.so ] || missing+=(postgresql-15-wal2json)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing test tools: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  exit 0
fi

echo "the tests need: ${missing[*]} (Debian: sudo apt-get install ${missing[*]})" >&2
exit 1
