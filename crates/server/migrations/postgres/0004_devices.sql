-- Devices, their events, and what the dashboard shows about them.
--
-- A door is one device. An admin asks for a one-time pairing code (only its SHA-256 is kept);
-- the device that presents it gets its own 32-byte key, shared with the server and used to
-- authenticate every sync and to seal the keypad secrets in its allow-list.
ALTER TABLE doors ADD COLUMN device_key BYTEA;
ALTER TABLE doors ADD COLUMN pairing_hash TEXT;
ALTER TABLE doors ADD COLUMN pairing_expires BIGINT;
ALTER TABLE doors ADD COLUMN paired_at BIGINT;
-- Last authenticated sync (server Unix seconds) and what the device said in it.
ALTER TABLE doors ADD COLUMN last_sync BIGINT;
ALTER TABLE doors ADD COLUMN device_generation BIGINT;
ALTER TABLE doors ADD COLUMN clock_valid BIGINT;
ALTER TABLE doors ADD COLUMN clock_source TEXT;
-- Device wall clock minus server time at the sync, and the device's own error bound.
ALTER TABLE doors ADD COLUMN clock_offset_us BIGINT;
ALTER TABLE doors ADD COLUMN clock_error_us BIGINT;
ALTER TABLE doors ADD COLUMN battery_mv INTEGER;
ALTER TABLE doors ADD COLUMN sync_interval_s INTEGER NOT NULL DEFAULT 300;
-- 1 when the model changed in a way that may affect the door's list; the compiler clears it.
ALTER TABLE doors ADD COLUMN list_dirty BIGINT NOT NULL DEFAULT 1;
-- The Monday (Unix seconds) the stored list's schedules were compiled from.
ALTER TABLE doors ADD COLUMN list_anchor BIGINT;

-- Events sent by devices. (door_id, device_event_id) is unique so a resent event is stored once.
-- kind: decision | notify | report | clock | rtc_write | time_rejected.
-- device_us: the device's UTC in microseconds when it happened (NULL while its clock was invalid);
-- received_us: the server's time when it arrived.
CREATE TABLE events (
    id              BIGSERIAL PRIMARY KEY,
    door_id         BIGINT NOT NULL REFERENCES doors (id) ON DELETE CASCADE,
    device_event_id BIGINT NOT NULL,
    kind            TEXT NOT NULL,
    device_us       BIGINT,
    received_us     BIGINT NOT NULL,
    credential      TEXT,
    decision        TEXT,
    mv              INTEGER,
    detail          TEXT,
    UNIQUE (door_id, device_event_id)
);
CREATE INDEX events_door ON events (door_id, id);
CREATE INDEX events_kind ON events (kind, id);

-- One row per sync with a valid device clock: the clock-offset chart.
CREATE TABLE clock_samples (
    id        BIGSERIAL PRIMARY KEY,
    door_id   BIGINT NOT NULL REFERENCES doors (id) ON DELETE CASCADE,
    at        BIGINT NOT NULL,
    offset_us BIGINT NOT NULL,
    error_us  BIGINT NOT NULL,
    source    TEXT NOT NULL
);
CREATE INDEX clock_samples_door ON clock_samples (door_id, at);

-- Webhooks: a JSON POST signed with HMAC-SHA256 under `secret`, for the listed event kinds
-- (comma-separated, e.g. "notify").
CREATE TABLE webhooks (
    id         BIGSERIAL PRIMARY KEY,
    url        TEXT NOT NULL,
    secret     TEXT NOT NULL,
    kinds      TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Deliveries waiting or done; retried with backoff until `attempts` runs out.
CREATE TABLE webhook_deliveries (
    id           BIGSERIAL PRIMARY KEY,
    webhook_id   BIGINT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id     BIGINT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    payload      TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt BIGINT NOT NULL,
    delivered_at BIGINT,
    last_error   TEXT,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (delivered_at, next_attempt);
