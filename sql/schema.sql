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

-- version: 2
-- Captured exchanges (flowstore). Newest first is id order, so a page of the
-- dashboard is a walk down the rowid b-tree from a cursor, whatever the row
-- count. AUTOINCREMENT: ids are never reused, even after the newest flows
-- were deleted or the table cleared, so an id the dashboard holds (a cursor,
-- a row on screen, the live stream's position) never names another flow.
-- Times are microseconds since the Unix epoch, NULL when the step did not
-- happen. Header sections are stored as received: "Name: value\r\n" per
-- field, original order and case. Bodies live in flow_bodies so that
-- listing never reads them.
CREATE TABLE flows (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind INTEGER NOT NULL,          -- enum flow_kind: 0 http, 1 tunnel, 2 websocket
    time_start_us INTEGER NOT NULL,
    client TEXT NOT NULL,
    scheme TEXT NOT NULL,
    method TEXT NOT NULL,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    target TEXT NOT NULL,
    req_version TEXT NOT NULL,      -- "HTTP/1.1"
    resp_version TEXT,              -- NULL without a response
    req_headers TEXT,
    resp_headers TEXT,
    status INTEGER NOT NULL,        -- 0 without a response
    reason TEXT,
    req_body_size INTEGER NOT NULL, -- bytes the whole body had
    resp_body_size INTEGER NOT NULL,
    req_body_captured INTEGER NOT NULL, -- bytes of it kept in flow_bodies
    resp_body_captured INTEGER NOT NULL,
    req_truncated INTEGER NOT NULL,
    resp_truncated INTEGER NOT NULL,
    req_content_type TEXT,
    resp_content_type TEXT,
    req_content_encoding TEXT,
    resp_content_encoding TEXT,
    connected_us INTEGER,
    tls_done_us INTEGER,
    request_sent_us INTEGER,
    first_byte_us INTEGER,
    done_us INTEGER,
    is_tls INTEGER NOT NULL,
    tls_client_sni TEXT,
    tls_client_alpn TEXT,
    tls_client_version TEXT,
    tls_client_cipher TEXT,
    tls_upstream_version TEXT,
    tls_upstream_cipher TEXT,
    tls_cert_subject TEXT,
    tls_cert_issuer TEXT,
    tls_cert_sans TEXT,
    tls_cert_not_after INTEGER,     -- unix seconds
    tls_verification TEXT,
    error TEXT,
    rules TEXT,
    bytes_up INTEGER NOT NULL,
    bytes_down INTEGER NOT NULL
);
-- Every index entry ends with the rowid, so an equality on the indexed
-- expression plus "id < ? ORDER BY id DESC LIMIT ?" reads exactly one page.
-- The dashboard's queries use these exact expressions.
CREATE INDEX flows_host ON flows (lower(host));
CREATE INDEX flows_status_class ON flows (status / 100);
CREATE INDEX flows_error ON flows (id) WHERE error IS NOT NULL;
CREATE INDEX flows_time ON flows (time_start_us);
-- Captured body bytes, one row per direction (0 request, 1 response) and only
-- for non-empty captures; a row per direction rather than two columns so that
-- reading the response never walks the request's overflow pages.
CREATE TABLE flow_bodies (
    flow_id INTEGER NOT NULL REFERENCES flows (id) ON DELETE CASCADE,
    direction INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (flow_id, direction)
);


-- version: 3
-- Rewrite rules made in the dashboard (rules.c; syntax in tapwire-rules(5)).
-- spec is one rule in the line syntax, in the canonical form rules_format()
-- writes, and is parsed again at every load, so the parser stays the only
-- place that knows what a rule means. The enabled column, not the spec,
-- says whether it applies. Rules apply in ascending position (ties by id);
-- positions are not UNIQUE because a reorder rewrites them row by row
-- inside one transaction. AUTOINCREMENT: an id the dashboard or a flow
-- record ("#12") holds never names another rule.
CREATE TABLE rules (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    position INTEGER NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    spec TEXT NOT NULL,
    created_at INTEGER NOT NULL     -- unix seconds
);
CREATE INDEX rules_position ON rules (position, id);

-- version: 4
-- What rewrite rules changed (rules.c, applied by exchange.c). The columns of
-- version 2 hold what was sent on; these hold what arrived, and only for the
-- parts a rule changed: NULL when that part went through untouched, so "was
-- it rewritten" is "IS NOT NULL" and flows without rules cost nothing.
-- Original bodies are flow_bodies rows with direction 2 (request) and 3
-- (response). They are stored decoded (rules work on the decoded body), so
-- their bytes need no Content-Encoding to read. Their sizes and truncation
-- flags mirror those of version 2; req_body_original_size is NULL when the
-- request body was not rewritten. rules_notes says why a matching rule did
-- not apply (body over --rewrite-limit, a decode failure, a regex limit).
ALTER TABLE flows ADD COLUMN target_original TEXT;
ALTER TABLE flows ADD COLUMN req_headers_original TEXT;
ALTER TABLE flows ADD COLUMN resp_headers_original TEXT;
ALTER TABLE flows ADD COLUMN req_body_original_size INTEGER;
ALTER TABLE flows ADD COLUMN resp_body_original_size INTEGER;
ALTER TABLE flows ADD COLUMN req_body_original_captured INTEGER;
ALTER TABLE flows ADD COLUMN resp_body_original_captured INTEGER;
ALTER TABLE flows ADD COLUMN req_original_truncated INTEGER;
ALTER TABLE flows ADD COLUMN resp_original_truncated INTEGER;
ALTER TABLE flows ADD COLUMN rules_notes TEXT;

-- version: 5
-- Less work per captured flow for the flow writer (flowstore.c), which
-- shares the cores with the proxy's threads.
--
-- No query filters or sorts on time_start_us (a page of the dashboard is a
-- walk down id), so flows_time was an index entry written and pruned with
-- every flow for nothing.
DROP INDEX flows_time;
-- flow_bodies is rebuilt as one b-tree. body_key = flows.id * 4 + direction
-- (enum flowstore_direction: 0 request, 1 response, 2 request original,
-- 3 response original). As the INTEGER PRIMARY KEY it is the rowid, so
-- storing a body is one b-tree insert: version 2's composite primary key
-- kept a second b-tree (the autoindex) and its foreign key made every
-- insert look up the parent flow. The bodies of one flow are adjacent, in
-- flow order: a flow's bodies are the key range id * 4 .. id * 4 + 3, the
-- bodies as sent id * 4 .. id * 4 + 1, and the bodies of every flow up to
-- id N are the keys up to N * 4 + 3, so deleting, searching and pruning are
-- range scans. With no foreign key nothing cascades: whatever deletes flows
-- deletes their bodies in the same transaction (flowstore.c). Flow ids are
-- never reused (AUTOINCREMENT), so a key always means the same flow.
CREATE TABLE flow_bodies_v5 (
    body_key INTEGER PRIMARY KEY,   -- flows.id * 4 + direction
    data BLOB NOT NULL
);
-- A direction outside 0..3 was never written and could never be read; it
-- would take the key of another flow's body.
INSERT INTO flow_bodies_v5 (body_key, data)
    SELECT flow_id * 4 + direction, data FROM flow_bodies WHERE direction BETWEEN 0 AND 3;
DROP TABLE flow_bodies;
ALTER TABLE flow_bodies_v5 RENAME TO flow_bodies;

-- version: 6
-- flows_status_class leaves out the 2xx flows: they are most of what a
-- browser makes, and each was an index entry the flow writer wrote (and
-- pruning removed) so that a "2xx" filter could find a page. That filter
-- needs no index: walking down id finds a hundred 2xx flows among the first
-- few hundred rows. The rarer classes (and 0, no response) keep their index;
-- their queries repeat the index's condition so SQLite may use it
-- (flowstore.c build_list_query).
DROP INDEX flows_status_class;
CREATE INDEX flows_status_class ON flows (status / 100) WHERE status / 100 <> 2;

-- version: 7
-- flows without AUTOINCREMENT. AUTOINCREMENT kept ids from ever being
-- reused by reading and rewriting the flows row of sqlite_sequence in every
-- INSERT statement: a b-tree update per captured flow, about 7,000
-- instructions (callgrind), a seventh of the writer's work. The flow writer
-- now assigns ids itself, from next_id here: it is read once at start
-- (together with max(id), whichever is higher), and written back once per
-- batch, in the batch's transaction. So ids still never repeat, after
-- deleting the newest flows, after clearing, across restarts: an id the
-- dashboard holds never names another flow.
CREATE TABLE flow_ids (
    next_id INTEGER NOT NULL
);
INSERT INTO flow_ids (next_id)
    SELECT max(coalesce((SELECT max(id) FROM flows), 0),
               coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'flows'), 0)) + 1;
CREATE TABLE flows_v7 (
    id INTEGER PRIMARY KEY,           -- assigned by the flow writer, never reused
    kind INTEGER NOT NULL,          -- enum flow_kind: 0 http, 1 tunnel, 2 websocket
    time_start_us INTEGER NOT NULL,
    client TEXT NOT NULL,
    scheme TEXT NOT NULL,
    method TEXT NOT NULL,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    target TEXT NOT NULL,
    req_version TEXT NOT NULL,      -- "HTTP/1.1"
    resp_version TEXT,              -- NULL without a response
    req_headers TEXT,
    resp_headers TEXT,
    status INTEGER NOT NULL,        -- 0 without a response
    reason TEXT,
    req_body_size INTEGER NOT NULL, -- bytes the whole body had
    resp_body_size INTEGER NOT NULL,
    req_body_captured INTEGER NOT NULL, -- bytes of it kept in flow_bodies
    resp_body_captured INTEGER NOT NULL,
    req_truncated INTEGER NOT NULL,
    resp_truncated INTEGER NOT NULL,
    req_content_type TEXT,
    resp_content_type TEXT,
    req_content_encoding TEXT,
    resp_content_encoding TEXT,
    connected_us INTEGER,
    tls_done_us INTEGER,
    request_sent_us INTEGER,
    first_byte_us INTEGER,
    done_us INTEGER,
    is_tls INTEGER NOT NULL,
    tls_client_sni TEXT,
    tls_client_alpn TEXT,
    tls_client_version TEXT,
    tls_client_cipher TEXT,
    tls_upstream_version TEXT,
    tls_upstream_cipher TEXT,
    tls_cert_subject TEXT,
    tls_cert_issuer TEXT,
    tls_cert_sans TEXT,
    tls_cert_not_after INTEGER,     -- unix seconds
    tls_verification TEXT,
    error TEXT,
    rules TEXT,
    bytes_up INTEGER NOT NULL,
    bytes_down INTEGER NOT NULL,
    target_original TEXT,
    req_headers_original TEXT,
    resp_headers_original TEXT,
    req_body_original_size INTEGER,
    resp_body_original_size INTEGER,
    req_body_original_captured INTEGER,
    resp_body_original_captured INTEGER,
    req_original_truncated INTEGER,
    resp_original_truncated INTEGER,
    rules_notes TEXT
);
INSERT INTO flows_v7 SELECT * FROM flows;
DROP TABLE flows;
ALTER TABLE flows_v7 RENAME TO flows;
CREATE INDEX flows_host ON flows (lower(host));
CREATE INDEX flows_status_class ON flows (status / 100) WHERE status / 100 <> 2;
CREATE INDEX flows_error ON flows (id) WHERE error IS NOT NULL;

-- version: 8
-- Small bodies live in the flow's own row. A body row in flow_bodies was a
-- statement and a b-tree insert of its own for every flow with a body, a
-- fifth of the flow writer's work (callgrind), while most bodies a browser
-- fetches are a few KiB or less. The flow writer now keeps a captured body
-- here when it is at most an eighth of a page (flowstore.c inline_body_max:
-- 2 KiB with the 16 KiB pages of a new file), so the row still fits its
-- page and never spills into overflow pages; larger bodies, and originals
-- that rules replaced, stay in flow_bodies. Exactly one of the two places
-- holds a body: NULL here means "look in flow_bodies". These are the last
-- columns of the row, and no listing reads them, so a scan of the list
-- skips their bytes.
ALTER TABLE flows ADD COLUMN req_body BLOB;
ALTER TABLE flows ADD COLUMN resp_body BLOB;

-- version: 9
-- certstore keeps at most CERTSTORE_MAX_STORED_LEAVES rows and drops the
-- least recently used beyond it: without a bound, every name a client sent
-- added a row. last_used_us is microseconds since the Unix epoch; rows from
-- before this version count as never used and go first.
ALTER TABLE certs ADD COLUMN last_used_us INTEGER NOT NULL DEFAULT 0;
CREATE INDEX certs_last_used ON certs (last_used_us);

-- version: 10
-- WebSocket messages (wsstore), one row per message of a websocket flow
-- (flows.kind 2), in the order they crossed the proxy: seq counts from 0
-- per flow. direction: 0 from the client, 1 from the server. opcode as in
-- RFC 6455 (1 text, 2 binary, 8 close, 9 ping, 10 pong). flags: 1 sent
-- compressed (permessage-deflate), 2 data is the decompressed payload, 4
-- data is not the whole payload (the capture limit). size: payload bytes
-- on the wire. data: the payload as held, NULL when empty. A flow's
-- messages go with it: the trigger covers the dashboard's delete, clear
-- and the pruning of old flows alike.
CREATE TABLE ws_messages (
    flow_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    direction INTEGER NOT NULL,
    time_us INTEGER NOT NULL,
    opcode INTEGER NOT NULL,
    flags INTEGER NOT NULL,
    size INTEGER NOT NULL,
    data BLOB,
    PRIMARY KEY (flow_id, seq)
) WITHOUT ROWID;
CREATE TRIGGER ws_messages_follow_flows AFTER DELETE ON flows
BEGIN
    DELETE FROM ws_messages WHERE flow_id = old.id;
END;

-- version: 11
-- A replay (POST /api/flows/ID/replay) records the flow whose request it
-- sent again; NULL for every other flow, and for a composed request. A
-- replayed flow may be deleted: the link then names a flow no longer there.
ALTER TABLE flows ADD COLUMN replay_of INTEGER;

-- version: 12
-- Flows in segments, and a full-text index (flowstore.c, flowseg.c).
--
-- Pruning deleted the oldest flows row by row after every batch: each
-- delete unlinked a row, its index entries and its body pages, about as
-- much work as storing the flow. Flows now live in time-ordered segments:
-- segment N is the tables flows_N (the columns of flows until version 11,
-- plus imported), flow_bodies_N (as flow_bodies), flows_fts_N and
-- flows_hdr_N (its search indexes) and flows_unindexed_N (the flows whose
-- bodies the index does not hold whole). The flow writer fills the newest
-- segment and starts another when it holds an eighth of --max-flows (or of
-- --max-db-size, or of --retain); retention drops the oldest segment
-- whole, with DROP TABLE, which frees its pages without visiting its rows
-- one by one.
--
-- flow_segments lists the segments, oldest first. A segment holds the ids
-- from its first_id up to the next segment's first_id - 1. flows counts its
-- stored rows and written the rows ever written into it; last_us is the
-- start time of its newest flow (microseconds since the Unix epoch).
--
-- flows and flow_bodies are now views over every segment (UNION ALL,
-- rewritten by the flow writer whenever a segment is added or dropped), so
-- that queries of the earlier tables keep working, read-only.
--
-- flows_fts_N is an FTS5 table with the trigram tokenizer, contentless
-- (content='': it keeps the index only) and detail=none (only which flows
-- hold a trigram, not where: a third of the writer's work of a full index),
-- rowid = flow id. Its one column, text, holds the flow's URL (host ||
-- target) and its request and response bodies as text, decoded, at most
-- 64 KiB of each (searchtext.h). A search looks up
-- the trigrams of what it looks for and checks each flow found against
-- the flow itself, so the index only has to hold a superset. A flow whose
-- bodies are not all in the index (binary, not UTF-8, longer than the
-- bound, or stored before this version) has a row in flows_unindexed_N: a
-- body search reads those flows' bodies itself.
-- flows_hdr_N indexes the header values of both sections by word
-- (unicode61 tokenizer, detail=none, contentless, rowid = flow id): a token,
-- a cookie value or a host name in a header is found by its words. Words,
-- not trigrams: a flow's headers are ten times its URL, and trigrams of
-- them cost the writer three times what the rest of a flow does.
-- Entries of deleted flows stay in the indexes until their segment is
-- dropped; every query joins an index with flows_N, so they match nothing.
--
-- ws_messages (version 10) stays one table for every segment. Its trigger
-- on flows would follow the rename to flows_1 alone and go with that
-- segment's DROP TABLE (which fires no delete trigger): the flow writer
-- deletes a flow's messages itself when it deletes the flow, and a dropped
-- segment's with it (DELETE ... WHERE flow_id < the next segment's
-- first_id).
--
-- The existing tables become segment 1.
DROP TRIGGER ws_messages_follow_flows;
DROP INDEX flows_host;
DROP INDEX flows_status_class;
DROP INDEX flows_error;
ALTER TABLE flows RENAME TO flows_1;
ALTER TABLE flow_bodies RENAME TO flow_bodies_1;
-- NULL for captured flows, 1 for flows imported from a HAR file.
ALTER TABLE flows_1 ADD COLUMN imported INTEGER;
CREATE INDEX flows_1_host ON flows_1 (lower(host));
CREATE INDEX flows_1_status_class ON flows_1 (status / 100) WHERE status / 100 <> 2;
CREATE INDEX flows_1_error ON flows_1 (id) WHERE error IS NOT NULL;
CREATE VIRTUAL TABLE flows_fts_1 USING fts5 (text, content = '', columnsize = 0,
    detail = none, tokenize = 'trigram');
INSERT INTO flows_fts_1 (rowid, text) SELECT id, host || target FROM flows_1;
CREATE VIRTUAL TABLE flows_hdr_1 USING fts5 (text, content = '', columnsize = 0,
    detail = none, tokenize = 'unicode61');
-- Whole header sections here (names too): a superset of the values.
INSERT INTO flows_hdr_1 (rowid, text)
    SELECT id, coalesce(req_headers, '') || coalesce(resp_headers, '') FROM flows_1;
CREATE TABLE flows_unindexed_1 (id INTEGER PRIMARY KEY);
INSERT INTO flows_unindexed_1 (id)
    SELECT id FROM flows_1 WHERE req_body_captured > 0 OR resp_body_captured > 0;
CREATE TABLE flow_segments (
    seg INTEGER PRIMARY KEY,
    first_id INTEGER NOT NULL,
    created_us INTEGER NOT NULL,
    last_us INTEGER NOT NULL,
    flows INTEGER NOT NULL,
    written INTEGER NOT NULL
);
INSERT INTO flow_segments (seg, first_id, created_us, last_us, flows, written)
    SELECT 1, 1, coalesce(min(time_start_us), 0), coalesce(max(time_start_us), 0), count(*),
           count(*)
    FROM flows_1;
CREATE VIEW flows AS SELECT * FROM flows_1;
CREATE VIEW flow_bodies AS SELECT * FROM flow_bodies_1;

-- version: 13
-- Which listener a flow came through, and flows whose bodies were given up.
--
-- listener (TEXT): "proxy" (the explicit proxy, --listen, its CONNECT
-- tunnels included), "socks5", "transparent", "reverse", or "replay" (sent
-- again from the dashboard, no client); NULL for flows stored before this
-- version, and for flows imported from a HAR file unless the entry carries
-- tapwire's own "_listener" field (har.c writes it).
-- bodies_dropped (INTEGER): 1 when the flow's record was kept but its body
-- bytes were not, because the writer's queue held its byte bound or the
-- disk had room for the records only (flowstore.c); NULL otherwise. Such a flow's *_body_size columns still
-- say how large the bodies were; *_body_captured are 0 and *_truncated 1.
--
-- The columns go to the end of every segment's flows_N (flowseg.c creates
-- new ones with them), so the views' UNION ALL of SELECT * stays aligned.
-- The statements after the "each segment" line run once per row of
-- flow_segments, with $SEG replaced by its seg (src/db.c).
-- each segment:
ALTER TABLE flows_$SEG ADD COLUMN listener TEXT;
ALTER TABLE flows_$SEG ADD COLUMN bodies_dropped INTEGER;

-- version: 14
-- A filter of the bytes of the bodies the search index does not hold
-- (flowstore.c, searchtext.h): flows_unindexed_N gains pairs (BLOB, 128
-- bytes: a bit per pair of adjacent bytes, both cases of a letter sharing
-- it; NULL when a body has no filter). A body search reads only the bodies
-- whose filter may hold its text. The rows already there keep NULL and are
-- read by every body search, as before.
-- each segment:
ALTER TABLE flows_unindexed_$SEG ADD COLUMN pairs BLOB;

-- version: 15
-- The flow writer's spool (flowspool.c) outlives a crash: spooled_to is
-- the sequence number of the last spooled flow stored, in the transaction
-- that stored it, so that the next start writes the flows the spool file
-- still holds past it and none twice. Internal, as flow_ids is.
ALTER TABLE flow_ids ADD COLUMN spooled_to INTEGER NOT NULL DEFAULT 0;
