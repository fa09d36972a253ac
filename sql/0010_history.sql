-- Layer history (issue 19, item 3): a layer whose manifest declares `history` keeps every
-- state of its rows in history.<layer id> (the layer's columns + valid_from, valid_to; the
-- current state has valid_to = 'infinity'). The database keeps it, so every writer is covered:
-- item writes, feed batches, publish, restore, seeding (COPY) and hand-made SQL.
--
-- Statement-level AFTER triggers with transition tables: one INSERT … SELECT per statement,
-- whatever the batch size. The function is generic: the history table is named after the
-- layer table (TG_TABLE_NAME), the retention read from ioc.layer_history.
CREATE SCHEMA IF NOT EXISTS history;

CREATE TABLE IF NOT EXISTS ioc.layer_history (
    layer_id       text PRIMARY KEY,
    retention_days integer NOT NULL CHECK (retention_days > 0),
    started_at     timestamptz NOT NULL DEFAULT now()  -- instants before it were not recorded
);

CREATE OR REPLACE FUNCTION ioc.history_prune(layer text, at timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    days integer;
BEGIN
    SELECT retention_days INTO days FROM ioc.layer_history WHERE layer_id = layer;
    IF days IS NOT NULL THEN  -- pruned on write: what closed more than N days ago goes
        EXECUTE format('DELETE FROM history.%I WHERE tstzrange(valid_from, valid_to)'
                       ' << tstzrange($1, NULL)', layer)
            USING at - make_interval(days => days);
    END IF;
END $$;

-- One function for the four triggers (one per event: transition tables cannot be declared on
-- OR'ed events). One clock reading per statement, taken after the statement's row locks are
-- held: the next writer of a row waits for this commit, so its reading is later and intervals
-- never overlap (now() is the transaction's start, which may precede another's commit).
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
        -- keeps its state: history records changes, not writes.
        EXECUTE close_open || ' AND h.fid IN (SELECT o.fid FROM old_rows o'
            || CASE WHEN TG_OP = 'UPDATE' THEN ' WHERE NOT EXISTS (SELECT 1 FROM new_rows n'
                    ' WHERE n.fid = o.fid AND n IS NOT DISTINCT FROM o)' ELSE '' END
            || ')' USING at;
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
