-- How many runs each pipeline has and how many events are stored, kept by triggers, so that a
-- page far from the start is read from the nearer end: the last page of 100,000 runs walks a
-- few index entries instead of 100,000.
CREATE TABLE pipeline_run_counts (
    namespace_id TEXT    NOT NULL,
    pipeline_id  TEXT    NOT NULL,
    runs         INTEGER NOT NULL,
    PRIMARY KEY (namespace_id, pipeline_id)
) STRICT, WITHOUT ROWID;
INSERT INTO pipeline_run_counts
    SELECT namespace_id, pipeline_id, COUNT(*) FROM runs GROUP BY namespace_id, pipeline_id;
CREATE TRIGGER runs_counted_in AFTER INSERT ON runs BEGIN
    INSERT INTO pipeline_run_counts VALUES (NEW.namespace_id, NEW.pipeline_id, 1)
        ON CONFLICT DO UPDATE SET runs = runs + 1;
END;
CREATE TRIGGER runs_counted_out AFTER DELETE ON runs BEGIN
    UPDATE pipeline_run_counts SET runs = runs - 1
        WHERE namespace_id = OLD.namespace_id AND pipeline_id = OLD.pipeline_id;
    DELETE FROM pipeline_run_counts
        WHERE namespace_id = OLD.namespace_id AND pipeline_id = OLD.pipeline_id AND runs <= 0;
END;

CREATE TABLE event_count (
    only   INTEGER NOT NULL PRIMARY KEY CHECK (only = 0),
    events INTEGER NOT NULL
) STRICT;
INSERT INTO event_count VALUES (0, (SELECT COUNT(*) FROM events));
CREATE TRIGGER events_counted_in AFTER INSERT ON events BEGIN
    UPDATE event_count SET events = events + 1;
END;
CREATE TRIGGER events_counted_out AFTER DELETE ON events BEGIN
    UPDATE event_count SET events = events - 1;
END;
