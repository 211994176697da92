-- tapwire database schema, compiled into the binary (build-aux/embed.sh) and
-- applied by src/db.c.
--
-- The file is a list of migrations. Each starts with a line of exactly the
-- form "-- version: N", N counting up from 1 without gaps, and runs to the
-- next such line. db_open() applies, in order, every migration whose N is
-- greater than the database's PRAGMA user_version, each in its own
-- transaction that also sets user_version to N, so a failed migration leaves
-- the database at the previous version.
--
-- Never edit a migration that has been released: databases in the wild have
-- already run it. Change the schema by appending "-- version: N+1".
-- Statements are separated by ';'; text above the first version line is
-- only this comment and is never run.

-- version: 1
-- Minted leaf certificates (certstore), keyed by the canonical name set
-- (ca_names_key()). ca_fingerprint says which CA signed the leaf, so a new
-- CA never serves leaves of the old one; not_after (unix seconds) lets the
-- cache renew a leaf before it expires without parsing it.
CREATE TABLE certs (
    names_key TEXT PRIMARY KEY,
    ca_fingerprint TEXT NOT NULL,
    not_after INTEGER NOT NULL,
    cert_pem TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
