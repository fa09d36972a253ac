-- History writes without index churn (issue 19 item 3 follow-up). Closing a state
-- (UPDATE … SET valid_to) rewrote every index of history.<id>: the partial index on open states
-- and the range GiST both read valid_to, so no update could be HOT. Now valid_to is in no index
-- and each page keeps room (fillfactor 60) for the closed version of its rows, so a close is a
-- heap-only update: no index entry, the geometry GiST untouched.
--   * the state a write closes: per written id, the state with the latest valid_from (by the
--     (fid, valid_from) index; intervals never overlap, so the open one is the latest);
--   * 'at' and pruning: a btree on valid_from (what began by the instant / the cutoff), then
--     valid_to is checked on those rows.
CREATE OR REPLACE FUNCTION ioc.history_prune(layer text, at timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    days integer;
BEGIN
    SELECT retention_days INTO days FROM ioc.layer_history WHERE layer_id = layer;
    IF days IS NOT NULL THEN  -- pruned on write: what closed more than N days ago goes
        EXECUTE format('DELETE FROM history.%I WHERE valid_from <= $1 AND valid_to <= $1', layer)
            USING at - make_interval(days => days);
    END IF;
END $$;

CREATE OR REPLACE FUNCTION ioc.history_record() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    at timestamptz := clock_timestamp();
    close_open text := format('UPDATE history.%I h SET valid_to = greatest($1, h.valid_from)'
                              ' WHERE h.valid_to = ''infinity''', TG_TABLE_NAME);
BEGIN
    IF TG_OP = 'TRUNCATE' THEN  -- no transition table: every open state closes
        EXECUTE close_open USING at;
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        -- A row written with the values it had (a repeated PATCH, an unchanged feed line)
        -- keeps its state: history records changes, not writes. The open state of each
        -- written id is its latest: found by (fid, valid_from), not by valid_to.
        EXECUTE close_open || format(' AND (h.fid, h.valid_from) IN (SELECT c.fid,'
            ' (SELECT max(m.valid_from) FROM history.%I m WHERE m.fid = c.fid)'
            ' FROM (SELECT o.fid FROM old_rows o', TG_TABLE_NAME)
            || CASE WHEN TG_OP = 'UPDATE' THEN ' WHERE NOT EXISTS (SELECT 1 FROM new_rows n'
                    ' WHERE n.fid = o.fid AND n IS NOT DISTINCT FROM o)' ELSE '' END
            || ') c)' USING at;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        EXECUTE format('INSERT INTO history.%I SELECT n.*, $1, ''infinity'' FROM new_rows n',
                       TG_TABLE_NAME)
            || CASE WHEN TG_OP = 'UPDATE' THEN ' WHERE NOT EXISTS (SELECT 1 FROM old_rows o'
                    ' WHERE o.fid = n.fid AND o IS NOT DISTINCT FROM n)' ELSE '' END
            USING at;
    END IF;
    PERFORM ioc.history_prune(TG_TABLE_NAME, at);
    RETURN NULL;
END $$;

-- Existing history tables: the new layout (ioc/db/history.py creates new ones so). The
-- fillfactor applies to pages written from now on.
DO $$
DECLARE
    t record;
    name text;
BEGIN
    FOR t IN SELECT c.relname FROM pg_class c JOIN ioc.layer_history l ON l.layer_id = c.relname
             WHERE c.relnamespace = 'history'::regnamespace AND c.relkind = 'r' LOOP
        name := left(t.relname, 40);
        EXECUTE format('ALTER TABLE history.%I SET (fillfactor = 60)', t.relname);
        EXECUTE format('DROP INDEX IF EXISTS history.%I', name || '_hist_open');
        EXECUTE format('DROP INDEX IF EXISTS history.%I', name || '_hist_valid');
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON history.%I (valid_from)',
                       name || '_hist_from', t.relname);
    END LOOP;
END $$;
