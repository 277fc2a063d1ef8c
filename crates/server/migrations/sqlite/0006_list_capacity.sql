-- The largest list each door's device can install, as it reports at every sync (0: not
-- reported yet), and why the door's newest list was not compiled for it (a list too large
-- for the device), shown to the admin on the door's page and the dashboard.
ALTER TABLE doors ADD COLUMN list_capacity BIGINT NOT NULL DEFAULT 0;
ALTER TABLE doors ADD COLUMN list_error TEXT;
