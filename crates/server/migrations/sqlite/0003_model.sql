-- The site model. Schedules and date ranges are kept as the admin entered them (local time in
-- the site's zone); each door's allow-list is compiled from them into UTC and stored with its
-- generation, which rises whenever the compiled content changes.
CREATE TABLE sites (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL,
    timezone   TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE doors (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    site_id      BIGINT NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    generation   BIGINT NOT NULL DEFAULT 0,
    list_digest  TEXT,
    list_bytes   BLOB,
    created_at   BIGINT NOT NULL,
    UNIQUE (site_id, name)
);

CREATE TABLE people (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    site_id    BIGINT NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE groups (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    site_id BIGINT NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    name    TEXT NOT NULL,
    UNIQUE (site_id, name)
);

CREATE TABLE group_members (
    group_id  BIGINT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    person_id BIGINT NOT NULL REFERENCES people (id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, person_id)
);

-- Card UIDs in upper-case hex, 4, 7 or 10 bytes.
CREATE TABLE cards (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    person_id BIGINT NOT NULL REFERENCES people (id) ON DELETE CASCADE,
    uid       TEXT NOT NULL UNIQUE
);

-- Keypad user codes with their secrets (base32).
CREATE TABLE keypad_users (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    person_id    BIGINT NOT NULL REFERENCES people (id) ON DELETE CASCADE,
    code         TEXT NOT NULL UNIQUE,
    totp_secret  TEXT,
    hotp_secret  TEXT,
    hotp_counter BIGINT NOT NULL DEFAULT 0,
    digits       INTEGER NOT NULL DEFAULT 6,
    period_s     INTEGER NOT NULL DEFAULT 30
);

CREATE TABLE schedules (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    site_id BIGINT NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    name    TEXT NOT NULL,
    UNIQUE (site_id, name)
);

-- Weekly slots in the site's local time: days bit 0 Monday … bit 6 Sunday, minutes of the day.
CREATE TABLE schedule_slots (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    schedule_id BIGINT NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    days        INTEGER NOT NULL,
    start_min   INTEGER NOT NULL,
    end_min     INTEGER NOT NULL
);

-- Who may open which door how: a person or a group, an access type, an optional date range
-- (Unix seconds, 0 for unbounded) and, for SCHEDULED, a schedule.
CREATE TABLE rules (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    door_id     BIGINT NOT NULL REFERENCES doors (id) ON DELETE CASCADE,
    person_id   BIGINT REFERENCES people (id) ON DELETE CASCADE,
    group_id    BIGINT REFERENCES groups (id) ON DELETE CASCADE,
    access      TEXT NOT NULL,
    valid_from  BIGINT NOT NULL DEFAULT 0,
    valid_until BIGINT NOT NULL DEFAULT 0,
    schedule_id BIGINT REFERENCES schedules (id) ON DELETE SET NULL,
    CHECK ((person_id IS NULL) <> (group_id IS NULL))
);

CREATE INDEX rules_door ON rules (door_id);
