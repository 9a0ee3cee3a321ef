-- The image a container task actually ran (its content-addressed id, `sha256:…`), recorded when
-- the container starts: a tag can move, the id cannot.
ALTER TABLE task_executions ADD COLUMN image_digest TEXT;
