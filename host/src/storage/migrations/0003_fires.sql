-- Fires are committed before they are acknowledged: each is a row first, then (in the same
-- transaction as its run) marked with the run it started, or with why it started none. A fire
-- with an idempotency key is one row per plugin and key, so sending it again starts no second
-- run; a row left without an outcome (the server stopped in between) is finished at start-up.
CREATE TABLE fires (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    plugin_id       TEXT    NOT NULL,
    idempotency_key TEXT,
    handle          TEXT    NOT NULL,
    variables       TEXT    NOT NULL,
    received        INTEGER NOT NULL,
    run_namespace   TEXT,
    run_pipeline    TEXT,
    run_id          INTEGER,
    refused         TEXT
) STRICT;
CREATE UNIQUE INDEX fires_by_key ON fires (plugin_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX fires_pending ON fires (id) WHERE run_id IS NULL AND refused IS NULL;
