-- Administrators and their sessions. Passwords are argon2 PHC strings; a session is found by
-- the SHA-256 of its cookie token, so the stored value cannot be replayed as a cookie.
CREATE TABLE admins (
    id            BIGSERIAL PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);

CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY NOT NULL,
    admin_id   BIGINT NOT NULL REFERENCES admins (id) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE INDEX sessions_expires_at ON sessions (expires_at);
