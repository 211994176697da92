/*
 * wsstore: see wsstore.h.
 */
#include "wsstore.h"

#include <stdio.h>
#include <string.h>

int wsstore_insert(sqlite3 *db, sqlite3_stmt **stmt, int64_t flow_id, uint64_t seq_base,
                   const struct flow_ws *ws, char *msg, size_t msg_len)
{
    int rc = SQLITE_DONE;

    if (ws->count == 0)
        return SQLITE_DONE;
    if (*stmt == NULL) {
        rc =
            sqlite3_prepare_v3(db,
                               "INSERT INTO ws_messages (flow_id, seq, direction, time_us, "
                               "opcode, flags, size, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                               -1, SQLITE_PREPARE_PERSISTENT, stmt, NULL);
        if (rc != SQLITE_OK) {
            snprintf(msg, msg_len, "storing WebSocket messages: %s", sqlite3_errmsg(db));
            return rc;
        }
    }
    for (size_t i = 0; i < ws->count; i++) {
        const struct flow_ws_message *m = &ws->items[i];

        rc = sqlite3_bind_int64(*stmt, 1, flow_id);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int64(*stmt, 2, (int64_t)(seq_base + i));
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int(*stmt, 3, m->is_from_client ? 0 : 1);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int64(*stmt, 4, m->time_us);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int(*stmt, 5, m->opcode);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int(*stmt, 6, m->flags);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int64(*stmt, 7, (int64_t)m->size);
        if (rc == SQLITE_OK)
            rc = m->len > 0 ? sqlite3_bind_blob64(*stmt, 8, m->data, m->len, SQLITE_STATIC)
                            : sqlite3_bind_null(*stmt, 8);
        if (rc == SQLITE_OK)
            rc = sqlite3_step(*stmt);
        sqlite3_reset(*stmt);
        sqlite3_clear_bindings(*stmt);
        if (rc != SQLITE_DONE) {
            snprintf(msg, msg_len, "storing WebSocket messages: %s", sqlite3_errstr(rc));
            return rc;
        }
    }
    return SQLITE_DONE;
}

int wsstore_read(sqlite3 *db, int64_t flow_id, int64_t from_seq, struct flow_ws *out, char *err,
                 size_t err_len)
{
    sqlite3_stmt *stmt = NULL;
    int rc;
    int ret = -1;

    memset(out, 0, sizeof(*out));
    rc = sqlite3_prepare_v2(db,
                            "SELECT direction, time_us, opcode, flags, size, data FROM ws_messages "
                            "WHERE flow_id = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3",
                            -1, &stmt, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 1, flow_id);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 2, from_seq);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int(stmt, 3, WSSTORE_READ_MAX_MESSAGES);
    if (rc != SQLITE_OK)
        goto out;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        struct flow_ws_message m = {
            .is_from_client = sqlite3_column_int(stmt, 0) == 0,
            .time_us = sqlite3_column_int64(stmt, 1),
            .opcode = sqlite3_column_int(stmt, 2),
            .flags = sqlite3_column_int(stmt, 3),
            .size = (uint64_t)sqlite3_column_int64(stmt, 4),
            .data = (unsigned char *)sqlite3_column_blob(stmt, 5),
            .len = (size_t)sqlite3_column_bytes(stmt, 5),
        };
        /* Stored under the same bounds: a copy fits them. */
        if (flow_ws_append(out, &m) < 0) {
            snprintf(err, err_len, "reading WebSocket messages: out of memory");
            rc = SQLITE_NOMEM;
            break;
        }
    }
    if (rc == SQLITE_DONE)
        ret = 0;
out:
    if (ret != 0 && rc != SQLITE_NOMEM)
        snprintf(err, err_len, "reading WebSocket messages of flow %lld: %s", (long long)flow_id,
                 sqlite3_errmsg(db));
    if (ret != 0)
        flow_ws_clear(out);
    sqlite3_finalize(stmt);
    return ret;
}
