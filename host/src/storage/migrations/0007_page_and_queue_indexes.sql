-- An index of event positions alone: a page far into the event log is found by walking this
-- small index instead of the events themselves (measured: 1,000,000 events, the last page in
-- 14 ms instead of 80 ms).
CREATE INDEX events_by_seq ON events (seq);
-- The run queue by pipeline: dispatching reads each pipeline's oldest queued runs, as many as it
-- has free slots, instead of every queued run each time a run ends.
CREATE INDEX runs_queued_by_pipeline ON runs (namespace_id, pipeline_id, queued_at)
    WHERE queued_at IS NOT NULL;
-- What expires when a run ends: the runs whose objects are still kept and the task executions
-- whose logs are, found without reading every run of the pipeline (the sets stay small).
CREATE INDEX runs_objects_kept ON runs (namespace_id, pipeline_id, run_id)
    WHERE store_objects_expired = 0;
CREATE INDEX task_executions_logs_kept ON task_executions (namespace_id, pipeline_id, run_id)
    WHERE logs_expired = 0;
