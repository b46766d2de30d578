#!/bin/sh
# Runs once, when the official postgres image initialises its volume: allows
# replication connections (the standby's pg_basebackup and WAL stream) from
# the compose network, with the password.
set -e
echo "host replication all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
