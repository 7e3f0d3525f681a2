#!/bin/sh
# Runs once, when the official entrypoint initialises an empty data dir: makes the
# server read the image's tuned settings. A later `include` line wins over initdb's
# defaults above it. An existing data dir needs this line added by hand once.
set -eu
echo "include '/etc/postgresql/vigia.conf'" >> "$PGDATA/postgresql.conf"
