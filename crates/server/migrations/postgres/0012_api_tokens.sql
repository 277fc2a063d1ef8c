-- API tokens for scripts and member systems. A token is shown once when made; only the SHA-256
-- of it is kept (it is 256 random bits, so the digest cannot be reversed or guessed). A token
-- acts for the admin who made it and ends with them; `scope` is `read` or `write`.
CREATE TABLE api_tokens (
    id           BIGSERIAL PRIMARY KEY,
    admin_id     BIGINT NOT NULL REFERENCES admins (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    scope        TEXT NOT NULL CHECK (scope IN ('read', 'write')),
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT
);
