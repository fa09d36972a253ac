-- Spatial queries: background jobs, saved queries (derived layers) and the cache of which
-- administrative unit (ward, district) each feature of a large layer lies in.

-- Long queries run as jobs in the API process (ioc/jobs.py); a job belongs to the API key that
-- submitted it and is visible to that key only.
CREATE TABLE ioc.query_jobs (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_key_id  bigint NOT NULL,
    owner         text NOT NULL,                  -- role[:department], for logs and admins
    owner_role    text NOT NULL,
    owner_department text,
    query         jsonb NOT NULL,                 -- the validated query document
    format        text NOT NULL CHECK (format IN ('geojson', 'csv', 'gpkg')),
    status        text NOT NULL DEFAULT 'queued'
                  CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    phase         text NOT NULL DEFAULT 'queued', -- queued, planning, querying, writing, done
    progress      real NOT NULL DEFAULT 0 CHECK (progress >= 0 AND progress <= 1),
    rows_expected bigint,                         -- the planner's estimate, for progress
    rows_written  bigint NOT NULL DEFAULT 0,
    truncated     boolean NOT NULL DEFAULT false,
    bytes         bigint,
    result_path   text,                           -- file under IOC_QUERY_JOB_DIR
    error         text,
    worker        text,                           -- host:pid of the process running it
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    heartbeat_at  timestamptz,
    finished_at   timestamptz,
    expires_at    timestamptz
);
CREATE INDEX query_jobs_queue_idx ON ioc.query_jobs (created_at) WHERE status = 'queued';
CREATE INDEX query_jobs_owner_idx ON ioc.query_jobs (owner_key_id, created_at DESC);

-- A saved query is materialised as a derived layer (ioc.layers origin 'derived', table
-- data."<id>"); it is refreshed on demand or every ``every``.
CREATE TABLE ioc.saved_queries (
    layer_id         text PRIMARY KEY REFERENCES ioc.layers (id) ON DELETE CASCADE,
    query            jsonb NOT NULL,
    owner_key_id     bigint,
    owner            text NOT NULL,
    owner_role       text NOT NULL,
    owner_department text,
    every            interval CHECK (every IS NULL OR every >= interval '1 minute'),
    next_refresh_at  timestamptz,
    last_refresh_at  timestamptz,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX saved_queries_due_idx ON ioc.saved_queries (next_refresh_at)
    WHERE next_refresh_at IS NOT NULL;

-- Which unit each feature of a large layer intersects, so that per-ward statistics over a
-- million points do not repeat a million point-in-polygon tests. A set is valid while the
-- layer's and the units' versions are those recorded and the rows with fid <= max_fid are
-- still member_rows in number; rows added since (fid > max_fid) are joined live.
CREATE TABLE ioc.unit_member_sets (
    layer_id       text NOT NULL REFERENCES ioc.layers (id) ON DELETE CASCADE,
    unit_layer_id  text NOT NULL REFERENCES ioc.layers (id) ON DELETE CASCADE,
    status         text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'ready', 'failed')),
    layer_version  integer,
    unit_version   integer,
    max_fid        bigint,
    member_rows    bigint,
    built_at       timestamptz,
    build_ms       integer,
    used_at        timestamptz NOT NULL DEFAULT now(),
    error          text,
    PRIMARY KEY (layer_id, unit_layer_id)
);

CREATE TABLE ioc.unit_members (
    layer_id      text NOT NULL,
    unit_layer_id text NOT NULL,
    fid           bigint NOT NULL,
    unit_fid      bigint NOT NULL,
    PRIMARY KEY (layer_id, unit_layer_id, fid, unit_fid)
);
