-- Signed firmware images the admin uploaded (`chronolock firmware sign`'s output: a 128-byte
-- header, then the application image), and which doors are to run them. The server holds no
-- firmware key: each door checks the signature with the key built into its own firmware. The
-- header's fields are kept beside the file for the admin UI; a version is uploaded once per
-- flash size.
CREATE TABLE firmware_images (
    id          BIGSERIAL PRIMARY KEY,
    -- major << 16 | minor << 8 | patch, as the header says.
    version     BIGINT NOT NULL,
    -- The flash size (MB) the image's partition table is for.
    flash_mb    INTEGER NOT NULL,
    -- Length of the signed file (header and image): what the doors download.
    size        BIGINT NOT NULL,
    -- SHA-256 of the application image (the header's, checked at upload), lower-case hex.
    sha256      TEXT NOT NULL,
    -- First four bytes of the firmware public key that signed it, lower-case hex.
    key_id      TEXT NOT NULL,
    -- The signed file as uploaded.
    signed_file BYTEA NOT NULL,
    uploaded_at BIGINT NOT NULL,
    -- The admin's name (kept when the admin is removed).
    uploaded_by TEXT,
    UNIQUE (version, flash_mb)
);

-- The image the admin picked for the door (NULL: no update); an assigned image cannot be
-- deleted.
ALTER TABLE doors ADD COLUMN firmware_id BIGINT REFERENCES firmware_images (id);
-- What the door reported at its last sync: the version it runs (0: it takes no update over
-- the air; NULL: not reported yet), and the update it holds the start of (its version and how
-- many bytes of the signed file; NULL: none).
ALTER TABLE doors ADD COLUMN firmware_version BIGINT;
ALTER TABLE doors ADD COLUMN firmware_partial_version BIGINT;
ALTER TABLE doors ADD COLUMN firmware_partial_offset BIGINT;
