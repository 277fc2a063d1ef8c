-- Secure cards (NTAG 424 DNA, DESFire EV2/EV3): the card proves a key diversified from the
-- site's card master key, so a copy of its UID opens nothing. 0: a UID-only card (cloneable).
ALTER TABLE cards ADD COLUMN secure INTEGER NOT NULL DEFAULT 0;
