/*
 * wsstore: the WebSocket messages of flows in SQLite (table ws_messages,
 * sql/schema.sql version 10). The flow store calls it: on its writer
 * connection inside the batch's transaction, and on its read connection
 * under its read lock. Deleting flows deletes their messages in the flow
 * store (one flow, clear, a dropped segment: schema version 12), so
 * nothing here deletes.
 */
#ifndef TAPWIRE_WSSTORE_H
#define TAPWIRE_WSSTORE_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#include "flow.h"

/* At most this many messages are read back in one call. */
#define WSSTORE_READ_MAX_MESSAGES FLOW_WS_MAX_MESSAGES

/*
 * Inserts ws's messages for flow_id, numbered from seq_base. *stmt caches the prepared statement
 * on db (NULL at first; the caller finalizes it). Returns SQLITE_DONE, or
 * another SQLite code with msg filled.
 */
int wsstore_insert(sqlite3 *db, sqlite3_stmt **stmt, int64_t flow_id, uint64_t seq_base,
                   const struct flow_ws *ws, char *msg, size_t msg_len);

/*
 * Reads the messages of flow_id with seq >= from_seq, in order, into *out
 * (cleared first; caller frees with flow_ws_clear()). Returns 0, or -1
 * with err.
 */
int wsstore_read(sqlite3 *db, int64_t flow_id, int64_t from_seq, struct flow_ws *out, char *err,
                 size_t err_len);

#endif
