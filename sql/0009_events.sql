-- Change events (issue 19, item 4): every write records one in its own transaction and
-- announces it with NOTIFY ioc_events (delivered at commit). Kept for a retention period
-- (IOC_EVENTS_RETENTION_HOURS) so a client resumes with Last-Event-ID across restarts.
CREATE TABLE IF NOT EXISTS ioc.events (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    layer_id    text NOT NULL,
    op          text NOT NULL,
    version     integer,
    feature_ids text[],          -- NULL for a whole-layer change or a batch above the bound
    count       integer NOT NULL DEFAULT 0,
    bbox        double precision[] CHECK (bbox IS NULL OR cardinality(bbox) = 4)  -- CRS84
);
CREATE INDEX IF NOT EXISTS events_layer_id ON ioc.events (layer_id, id);
CREATE INDEX IF NOT EXISTS events_at ON ioc.events (at);
