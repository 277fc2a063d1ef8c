-- Lockdown orders, per site: the admin puts the site into lockdown or lifts it. Each order is
-- signed with the site key (`chronolock_core::lockdown::LockdownOrder`) under a sequence number
-- that rises by one per site, and the doors refuse an order older than the one they hold; the
-- newest row is the site's state, and every sync and watch hands it out as signed here. The
-- rows are also the record of who pressed the button and when.
CREATE TABLE lockdown_orders (
    id         BIGSERIAL PRIMARY KEY,
    site_id    BIGINT NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    seq        BIGINT NOT NULL,
    -- 1: lockdown on; 0: lifted.
    active     INTEGER NOT NULL,
    -- Unix seconds, as signed.
    issued_at  BIGINT NOT NULL,
    -- Who gave it (the name is kept when the admin is removed).
    admin_id   BIGINT REFERENCES admins (id) ON DELETE SET NULL,
    admin_name TEXT,
    -- The signed order, `ORDER_LEN` bytes, exactly as the doors get it.
    signed     BYTEA NOT NULL,
    -- Two server processes giving an order at once cannot both take the same number.
    UNIQUE (site_id, seq)
);

-- The door-position contact: whether one is fitted (no contact: no door alarms), and how long
-- the door may stay open after an authorised opening before it raises `door_held_open`. Doors
-- take these at their next sync.
ALTER TABLE doors ADD COLUMN contact_fitted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE doors ADD COLUMN held_open_s INTEGER NOT NULL DEFAULT 30;
