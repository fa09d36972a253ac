#!/bin/sh
# Patroni's post_bootstrap, run once on the node that makes the cluster, with a superuser
# connection string as $1: ioc's role and database, and the extensions ioc's migrations need
# that only a superuser may create (postgis is not a trusted extension), and its rights on
# spatial_ref_sys; ioc itself is no superuser. The replica clones all.
set -eu
psql "$1" -v ON_ERROR_STOP=1 -v db="${IOC_DB_NAME:-ioc}" -v who="${IOC_DB_USER:-ioc}" \
  -v pw="$IOC_DB_PASSWORD" <<'SQL'
CREATE ROLE :"who" LOGIN PASSWORD :'pw';
CREATE DATABASE :"db" OWNER :"who";
\connect :"db"
CREATE EXTENSION postgis;
CREATE EXTENSION pg_trgm;
CREATE EXTENSION unaccent;
CREATE EXTENSION btree_gist;
-- ioc's migrations add the VN-2000 systems to PostGIS's table of the superuser
GRANT SELECT, INSERT, UPDATE ON spatial_ref_sys TO :"who";
SQL
