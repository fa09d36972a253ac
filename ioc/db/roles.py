"""The managed cluster's serving role: ioc never connects to its own cluster as a superuser.

The cluster's superuser (``postgres``, trusted on the private socket) only makes the role, the
database it owns and the extensions only a superuser may create (PostGIS is not a trusted
extension) — what deploy/patroni/post_bootstrap.sh does in production. Migrations, ``ioc
serve`` and every command then connect as the role. A database an older ioc migrated as the
superuser is handed over once: each object outside the system and extensions that the role
does not own yet (later runs find none).
"""

from __future__ import annotations

from psycopg2 import sql as pgsql

from ioc.errors import ClusterError

# What ioc's migrations create (sql/0001, sql/0012); IF NOT EXISTS there is then a no-op.
EXTENSIONS = ("postgis", "pg_trgm", "unaccent", "btree_gist")

# Objects the role must own: ioc's schemas and what is in them, and ioc's own objects in
# public; not the system's, not an extension's (PostGIS's spatial_ref_sys, its functions), not
# what goes with its table (indexes, a serial's sequence).
NOT_OWNED_SQL = """
WITH who AS (SELECT oid FROM pg_roles WHERE rolname = %(role)s),
members AS (SELECT objid, classid FROM pg_depend WHERE deptype = 'e'),
mine AS (SELECT oid FROM pg_namespace
         WHERE nspname NOT LIKE 'pg\\_%%' AND nspname <> 'information_schema')
SELECT 'SCHEMA', NULL, nspname, NULL FROM pg_namespace
 WHERE oid IN (SELECT oid FROM mine) AND nspname <> 'public'
   AND nspowner <> (SELECT oid FROM who)
UNION ALL
SELECT CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                      WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
       n.nspname, c.relname, NULL
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relnamespace IN (SELECT oid FROM mine) AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
   AND c.relowner <> (SELECT oid FROM who)
   AND (c.oid, 'pg_class'::regclass) NOT IN (SELECT objid, classid FROM members)
   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid
                   AND d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i'))
UNION ALL
SELECT CASE p.prokind WHEN 'a' THEN 'AGGREGATE' ELSE 'ROUTINE' END, n.nspname, p.proname,
       pg_get_function_identity_arguments(p.oid)
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE p.pronamespace IN (SELECT oid FROM mine) AND p.proowner <> (SELECT oid FROM who)
   AND (p.oid, 'pg_proc'::regclass) NOT IN (SELECT objid, classid FROM members)
UNION ALL
SELECT 'TYPE', n.nspname, t.typname, NULL
  FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
 WHERE t.typnamespace IN (SELECT oid FROM mine) AND t.typowner <> (SELECT oid FROM who)
   AND t.typtype IN ('e', 'd', 'r', 'c')
   AND (t.typrelid = 0 OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
   AND (t.oid, 'pg_type'::regclass) NOT IN (SELECT objid, classid FROM members)
"""


def ensure_role(cur, role: str) -> None:
    """Create the login role (no superuser, no CREATEDB, no CREATEROLE) when it is missing;
    refuse a role that is a superuser."""
    cur.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (role,))
    row = cur.fetchone()
    if row is None:
        cur.execute(
            pgsql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE").format(
                pgsql.Identifier(role)
            )
        )
    elif row[0]:
        raise ClusterError(
            f"The database role '{role}' is a superuser: ioc serves as a role without it "
            "(set IOC_DB_ROLE to another name)."
        )


def ensure_owned_database(cur, name: str, role: str) -> None:
    """Create database ``name`` owned by ``role``, or give an existing one to it."""
    cur.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (name,))
    row = cur.fetchone()
    if row is None:
        statement = "CREATE DATABASE {} OWNER {}"
    elif row[0] != role:
        statement = "ALTER DATABASE {} OWNER TO {}"
    else:
        return
    cur.execute(pgsql.SQL(statement).format(pgsql.Identifier(name), pgsql.Identifier(role)))


def prepare_database(conn, role: str) -> int:
    """In the database of superuser connection ``conn``: the extensions, the role's rights on
    PostGIS's table of reference systems (ioc adds VN-2000's), and the hand-over. Returns how
    many objects changed owner."""
    with conn.cursor() as cur:
        for name in EXTENSIONS:
            cur.execute(
                pgsql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(pgsql.Identifier(name))
            )
        cur.execute(
            pgsql.SQL("GRANT SELECT, INSERT, UPDATE ON public.spatial_ref_sys TO {}").format(
                pgsql.Identifier(role)
            )
        )
        handed = hand_over(cur, role)
    conn.commit()
    return handed


def hand_over(cur, role: str) -> int:
    """Give the role every object it should own and does not (see NOT_OWNED_SQL)."""
    cur.execute(NOT_OWNED_SQL, {"role": role})
    found = cur.fetchall()
    for kind, schema, name, args in found:
        target: pgsql.Composable = (
            pgsql.Identifier(name) if schema is None else pgsql.Identifier(schema, name)
        )
        if args is not None:  # a routine is named by its arguments' types (from the catalog)
            target = pgsql.SQL("{}({})").format(target, pgsql.SQL(args))
        cur.execute(
            pgsql.SQL("ALTER {} {} OWNER TO {}").format(
                pgsql.SQL(kind), target, pgsql.Identifier(role)
            )
        )
    return len(found)
