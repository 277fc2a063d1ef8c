-- A door's compiled list moves to a table of its own. In `doors` the blob sat before columns
-- that every device sync reads (`device_key`, `sync_interval_s`, ...), so each sync walked the
-- list's overflow pages: the cost of an unchanged sync grew with the list. Now a door's row is
-- small, and the list is read only when a door downloads it.
CREATE TABLE door_lists (
    door_id    BIGINT PRIMARY KEY REFERENCES doors (id) ON DELETE CASCADE,
    generation BIGINT NOT NULL,
    bytes      BYTEA NOT NULL
);
INSERT INTO door_lists (door_id, generation, bytes)
    SELECT id, generation, list_bytes FROM doors WHERE list_bytes IS NOT NULL;
ALTER TABLE doors DROP COLUMN list_bytes;
