-- Canary and A/B deployments, and re-runs. A deployment has a kind (`switch`: v0's instant
-- deploy; `canary`; `ab`) and, while it routes runs, its rollout (weights, steps, rules, sticky
-- variable) as JSON. Each run records the deployment that routed it and the arm it went to, so a
-- rollout's tallies are counted from the runs themselves and survive a restart. A re-run records
-- the run it repeats and the tasks it took over from it as done.
ALTER TABLE deployments ADD COLUMN kind TEXT NOT NULL DEFAULT 'switch';
ALTER TABLE deployments ADD COLUMN rollout TEXT;
CREATE INDEX deployments_in_progress ON deployments (namespace_id, pipeline_id)
    WHERE state = 'Running';

ALTER TABLE runs ADD COLUMN deployment_id INTEGER;
ALTER TABLE runs ADD COLUMN arm TEXT;
ALTER TABLE runs ADD COLUMN routing_reason TEXT;
ALTER TABLE runs ADD COLUMN rerun_of INTEGER;
ALTER TABLE runs ADD COLUMN reused_tasks TEXT;
CREATE INDEX runs_by_deployment ON runs (namespace_id, pipeline_id, deployment_id)
    WHERE deployment_id IS NOT NULL;
