#!/usr/bin/env bash
# Back up the product: the PostgreSQL database and the document storage.
#
#   DATABASE_URL=postgres://user@host:5432/unbinding MEDIA_ROOT=/srv/unbinding/documents \
#     scripts/backup.sh /backups/unbinding-$(date +%Y%m%d-%H%M)
#
# Writes into the (new or empty) directory:
#   database.dump       pg_dump custom format: one consistent snapshot, no owners
#   documents.tar.gz    every file under MEDIA_ROOT
#   SHA256SUMS          checksums of the two, checked by scripts/restore.sh
#
# The database is dumped first and the files archived after: a document is
# stored before its row is committed, so every document row in the dump has
# its file on disk by then (files stored later are extra, never missing).
set -euo pipefail

out="${1:?usage: backup.sh BACKUP_DIR (with DATABASE_URL and MEDIA_ROOT set)}"
: "${DATABASE_URL:?set DATABASE_URL (postgres://...)}"
: "${MEDIA_ROOT:?set MEDIA_ROOT (the document storage directory)}"
[ -d "$MEDIA_ROOT" ] || { echo "MEDIA_ROOT $MEDIA_ROOT is not a directory" >&2; exit 1; }

mkdir -p "$out"
if [ -n "$(ls -A "$out")" ]; then
  echo "backup directory $out is not empty" >&2
  exit 1
fi
umask 077  # identity documents: readable by the backup's owner only

pg_dump --format=custom --no-owner --no-privileges \
  --file="$out/database.dump" "$DATABASE_URL"
tar --create --gzip --file="$out/documents.tar.gz" --directory="$MEDIA_ROOT" .
(cd "$out" && sha256sum database.dump documents.tar.gz > SHA256SUMS)

echo "backup written to $out:"
(cd "$out" && ls -l database.dump documents.tar.gz SHA256SUMS)
