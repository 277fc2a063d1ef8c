-- The highest request counter accepted from each door's device: a request that is not newer
-- is a replay (device protocol v2). Pairing starts it again from 0.
ALTER TABLE doors ADD COLUMN link_counter BIGINT NOT NULL DEFAULT 0;
