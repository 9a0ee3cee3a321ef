-- Gofer schema, version 1: the whole domain. Times are epoch milliseconds (INTEGER), booleans 0/1,
-- structured values JSON (TEXT). Every table a list endpoint pages through has an index that serves
-- its ORDER BY.

CREATE TABLE namespaces (
    id          TEXT    NOT NULL PRIMARY KEY,
    name        TEXT    NOT NULL,
    description TEXT    NOT NULL,
    created     INTEGER NOT NULL,
    modified    INTEGER NOT NULL
) STRICT;

CREATE TABLE pipeline_metadata (
    namespace_id TEXT    NOT NULL REFERENCES namespaces (id) ON DELETE CASCADE,
    pipeline_id  TEXT    NOT NULL,
    created      INTEGER NOT NULL,
    modified     INTEGER NOT NULL,
    state        TEXT    NOT NULL,
    PRIMARY KEY (namespace_id, pipeline_id)
) STRICT;

CREATE TABLE pipeline_configs (
    namespace_id TEXT    NOT NULL,
    pipeline_id  TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    parallelism  INTEGER NOT NULL,
    name         TEXT    NOT NULL,
    description  TEXT    NOT NULL,
    registered   INTEGER NOT NULL,
    deprecated   INTEGER NOT NULL,
    state        TEXT    NOT NULL,
    timeout      TEXT,
    triggers     TEXT    NOT NULL DEFAULT '[]',
    PRIMARY KEY (namespace_id, pipeline_id, version),
    FOREIGN KEY (namespace_id, pipeline_id)
        REFERENCES pipeline_metadata (namespace_id, pipeline_id) ON DELETE CASCADE
) STRICT;
CREATE INDEX pipeline_configs_by_state ON pipeline_configs (namespace_id, pipeline_id, state);

-- One row per task of a config version; `task` is the task's JSON (registry password included:
-- the API redacts it on the way out).
CREATE TABLE tasks (
    namespace_id   TEXT    NOT NULL,
    pipeline_id    TEXT    NOT NULL,
    config_version INTEGER NOT NULL,
    task_id        TEXT    NOT NULL,
    task           TEXT    NOT NULL,
    PRIMARY KEY (namespace_id, pipeline_id, config_version, task_id),
    FOREIGN KEY (namespace_id, pipeline_id, config_version)
        REFERENCES pipeline_configs (namespace_id, pipeline_id, version) ON DELETE CASCADE
) STRICT;

CREATE TABLE deployments (
    namespace_id  TEXT    NOT NULL,
    pipeline_id   TEXT    NOT NULL,
    deployment_id INTEGER NOT NULL,
    start_version INTEGER NOT NULL,
    end_version   INTEGER NOT NULL,
    started       INTEGER NOT NULL,
    ended         INTEGER NOT NULL,
    state         TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    status_reason TEXT,
    PRIMARY KEY (namespace_id, pipeline_id, deployment_id),
    FOREIGN KEY (namespace_id, pipeline_id)
        REFERENCES pipeline_metadata (namespace_id, pipeline_id) ON DELETE CASCADE
) STRICT;

CREATE TABLE runs (
    namespace_id            TEXT    NOT NULL,
    pipeline_id             TEXT    NOT NULL,
    run_id                  INTEGER NOT NULL,
    pipeline_config_version INTEGER NOT NULL,
    started                 INTEGER NOT NULL,
    ended                   INTEGER NOT NULL,
    state                   TEXT    NOT NULL,
    status                  TEXT    NOT NULL,
    status_reason           TEXT,
    initiator               TEXT    NOT NULL,
    variables               TEXT    NOT NULL,
    token_id                TEXT,
    store_objects_expired   INTEGER NOT NULL DEFAULT 0,
    event_id                TEXT,
    -- Position in the durable run queue (NULL once dispatched).
    queued_at               INTEGER,
    PRIMARY KEY (namespace_id, pipeline_id, run_id),
    FOREIGN KEY (namespace_id, pipeline_id)
        REFERENCES pipeline_metadata (namespace_id, pipeline_id) ON DELETE CASCADE
) STRICT;
CREATE INDEX runs_by_state ON runs (state);
CREATE INDEX runs_queue ON runs (queued_at) WHERE queued_at IS NOT NULL;
CREATE INDEX runs_by_config ON runs (namespace_id, pipeline_id, pipeline_config_version);

CREATE TABLE task_executions (
    namespace_id  TEXT    NOT NULL,
    pipeline_id   TEXT    NOT NULL,
    run_id        INTEGER NOT NULL,
    task_id       TEXT    NOT NULL,
    task          TEXT    NOT NULL,
    created       INTEGER NOT NULL,
    started       INTEGER NOT NULL,
    ended         INTEGER NOT NULL,
    exit_code     INTEGER,
    logs_expired  INTEGER NOT NULL DEFAULT 0,
    logs_removed  INTEGER NOT NULL DEFAULT 0,
    state         TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    status_reason TEXT,
    variables     TEXT    NOT NULL,
    attempt       INTEGER NOT NULL DEFAULT 1,
    container_name TEXT,
    PRIMARY KEY (namespace_id, pipeline_id, run_id, task_id),
    FOREIGN KEY (namespace_id, pipeline_id, run_id)
        REFERENCES runs (namespace_id, pipeline_id, run_id) ON DELETE CASCADE
) STRICT;
CREATE INDEX task_executions_by_state ON task_executions (state);

-- `seq` orders the log (and lets live streams resume without gaps); `id` is the public UUIDv7.
CREATE TABLE events (
    seq     INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    id      TEXT    NOT NULL UNIQUE,
    kind    TEXT    NOT NULL,
    emitted INTEGER NOT NULL
) STRICT;
CREATE INDEX events_by_emitted ON events (emitted);

CREATE TABLE subscriptions (
    namespace_id    TEXT NOT NULL,
    pipeline_id     TEXT NOT NULL,
    plugin_id       TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    settings        TEXT NOT NULL,
    status          TEXT NOT NULL,
    status_reason   TEXT,
    -- 1 when the live config declared it (deploys reconcile those), 0 when made through the API.
    declared        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (namespace_id, pipeline_id, plugin_id, subscription_id),
    FOREIGN KEY (namespace_id, pipeline_id)
        REFERENCES pipeline_metadata (namespace_id, pipeline_id) ON DELETE CASCADE
) STRICT;
CREATE INDEX subscriptions_by_plugin ON subscriptions (plugin_id);

CREATE TABLE roles (
    id          TEXT    NOT NULL PRIMARY KEY,
    description TEXT    NOT NULL,
    permissions TEXT    NOT NULL,
    system_role INTEGER NOT NULL
) STRICT;

CREATE TABLE tokens (
    id       TEXT    NOT NULL PRIMARY KEY,
    hash     TEXT    NOT NULL UNIQUE,
    created  INTEGER NOT NULL,
    metadata TEXT    NOT NULL,
    expires  INTEGER NOT NULL,
    disabled INTEGER NOT NULL,
    user     TEXT    NOT NULL,
    roles    TEXT    NOT NULL
) STRICT;

CREATE TABLE object_keys_pipeline (
    namespace_id TEXT    NOT NULL,
    pipeline_id  TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    created      INTEGER NOT NULL,
    PRIMARY KEY (namespace_id, pipeline_id, key),
    FOREIGN KEY (namespace_id, pipeline_id)
        REFERENCES pipeline_metadata (namespace_id, pipeline_id) ON DELETE CASCADE
) STRICT;
CREATE INDEX object_keys_pipeline_by_created ON object_keys_pipeline (namespace_id, pipeline_id, created);

CREATE TABLE object_keys_run (
    namespace_id TEXT    NOT NULL,
    pipeline_id  TEXT    NOT NULL,
    run_id       INTEGER NOT NULL,
    key          TEXT    NOT NULL,
    created      INTEGER NOT NULL,
    PRIMARY KEY (namespace_id, pipeline_id, run_id, key),
    FOREIGN KEY (namespace_id, pipeline_id, run_id)
        REFERENCES runs (namespace_id, pipeline_id, run_id) ON DELETE CASCADE
) STRICT;

CREATE TABLE object_keys_plugin (
    plugin_id TEXT    NOT NULL,
    key       TEXT    NOT NULL,
    created   INTEGER NOT NULL,
    PRIMARY KEY (plugin_id, key)
) STRICT;

CREATE TABLE secret_keys_pipeline (
    namespace_id TEXT    NOT NULL,
    pipeline_id  TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    created      INTEGER NOT NULL,
    PRIMARY KEY (namespace_id, pipeline_id, key),
    FOREIGN KEY (namespace_id, pipeline_id)
        REFERENCES pipeline_metadata (namespace_id, pipeline_id) ON DELETE CASCADE
) STRICT;

CREATE TABLE secret_keys_global (
    key        TEXT    NOT NULL PRIMARY KEY,
    namespaces TEXT    NOT NULL,
    created    INTEGER NOT NULL
) STRICT;

CREATE TABLE system (
    id                         INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    bootstrap_token_created    INTEGER NOT NULL,
    ignore_pipeline_run_events INTEGER NOT NULL
) STRICT;
INSERT INTO system (id, bootstrap_token_created, ignore_pipeline_run_events) VALUES (1, 0, 0);
