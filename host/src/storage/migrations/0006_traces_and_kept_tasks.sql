-- The W3C trace context a run was started in (its trace id is the run's trace).
ALTER TABLE runs ADD COLUMN trace_parent TEXT;
-- A failed container task kept for debugging (`keep_failed`): until when (epoch ms), and the
-- temporary image a shell was last opened from, removed with it.
ALTER TABLE task_executions ADD COLUMN kept_until INTEGER;
