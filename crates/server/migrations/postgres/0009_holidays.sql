-- The site calendar: holidays on which the schedules linked to them are closed. Days are the
-- site's local dates as `YYYY-MM-DD` (ISO 8601, so they sort as text), first and last both
-- included. A yearly holiday repeats on the same month and day every year from its first day's
-- year on; its last day may fall in the next year (24 December to 2 January).
CREATE TABLE holidays (
    id        BIGSERIAL PRIMARY KEY,
    site_id   BIGINT NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    name      TEXT NOT NULL,
    first_day TEXT NOT NULL,
    last_day  TEXT NOT NULL,
    -- 1: every year; 0: once.
    yearly    INTEGER NOT NULL DEFAULT 0
);

-- Which schedules a holiday closes; deleting either side removes the link.
CREATE TABLE holiday_schedules (
    holiday_id  BIGINT NOT NULL REFERENCES holidays (id) ON DELETE CASCADE,
    schedule_id BIGINT NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    PRIMARY KEY (holiday_id, schedule_id)
);
CREATE INDEX holiday_schedules_schedule ON holiday_schedules (schedule_id);
