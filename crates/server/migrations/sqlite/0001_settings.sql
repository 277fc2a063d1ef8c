-- Server-wide settings, among them the site signing key (made on first start, never sent out).
CREATE TABLE settings (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
