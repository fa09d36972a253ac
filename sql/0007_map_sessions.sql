-- Map sessions (POST /maps/session): a random token per browser sign-in stands for an API key
-- on the map pages. Only the token's SHA-256 is stored; a session ends when it expires, when it
-- is closed (DELETE /maps/session) or when its key is revoked (ioc/sessions.py joins
-- api_keys.revoked_at on every look-up).
CREATE TABLE ioc.map_sessions (
    token_hash  text PRIMARY KEY,
    key_id      bigint NOT NULL REFERENCES ioc.api_keys (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    CHECK (expires_at > created_at)
);
CREATE INDEX map_sessions_key_idx ON ioc.map_sessions (key_id);
CREATE INDEX map_sessions_expires_idx ON ioc.map_sessions (expires_at);
