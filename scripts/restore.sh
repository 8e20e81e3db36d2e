#!/usr/bin/env bash
# Restore a backup of scripts/backup.sh into a NEW database and a NEW directory.
#
#   scripts/restore.sh /backups/unbinding-20261126-0300 \
#     postgres://user@host:5432/unbinding_restored /srv/unbinding/documents-restored
#
# Checks the backup's checksums, creates the database (it must not exist),
# restores the dump into it, unpacks the documents into the directory (new or
# empty), then runs `manage.py backup_check` against the two: every case,
# event and document counted, every document's file present with its SHA-256.
# Point DATABASE_URL and MEDIA_ROOT at them to serve the restored copy.
set -euo pipefail

backup="${1:?usage: restore.sh BACKUP_DIR NEW_DATABASE_URL NEW_MEDIA_ROOT}"
target_url="${2:?usage: restore.sh BACKUP_DIR NEW_DATABASE_URL NEW_MEDIA_ROOT}"
target_media="${3:?usage: restore.sh BACKUP_DIR NEW_DATABASE_URL NEW_MEDIA_ROOT}"
here="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-$here/.venv/bin/python}"

(cd "$backup" && sha256sum --check --quiet SHA256SUMS)

# postgres://user@host:port/NAME?options -> NAME, and the same server's
# maintenance database to create it from.
without_query="${target_url%%\?*}"
name="${without_query##*/}"
maintenance="${without_query%/*}/postgres"
[ -n "$name" ] || { echo "no database name in $target_url" >&2; exit 1; }

mkdir -p "$target_media"
if [ -n "$(ls -A "$target_media")" ]; then
  echo "document directory $target_media is not empty" >&2
  exit 1
fi

createdb --maintenance-db="$maintenance" "$name"
pg_restore --no-owner --no-privileges --exit-on-error \
  --dbname="$target_url" "$backup/database.dump"
umask 077
tar --extract --gzip --file="$backup/documents.tar.gz" --directory="$target_media"

DATABASE_URL="$target_url" MEDIA_ROOT="$target_media" \
  "$python" "$here/manage.py" backup_check
