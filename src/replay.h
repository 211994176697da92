/*
 * replay: sends a stored flow's request again (POST /api/flows/ID/replay),
 * or a request composed in the dashboard (POST /api/replay), as a new flow.
 *
 * No client is involved: the origin is opened by origin.c like any other
 * (the destination guard, the honest TLS client, --upstream-proxy), the
 * request goes through the live rewrite rules and exchange_forward() with
 * capture (h1toh2_forward() when an https origin, offered "http/1.1, h2"
 * as a --reverse listener's is, chose h2: an origin that speaks only
 * HTTP/2, a gRPC server), and the "client" is one end of a socketpair
 * whose input buffer holds the request body and whose other end a thread
 * of ours reads and discards (the response is recorded by the capture
 * hooks, not kept here).
 *
 * What is sent is the request as it was sent on the first time (after the
 * rules and any intercept edit: the stored target, header section and
 * body), with the edits given on top. Framing is declared anew from the
 * body; hop-by-hop fields and the stored Content-Length and
 * Transfer-Encoding do not go. A body that the capture cut at
 * --capture-limit is never sent shortened: such a replay is refused unless
 * the edit gives a whole body. A request that asks for an upgrade (a
 * WebSocket handshake) goes as one; the "client" then ends its side at
 * once, and the upgraded connection lasts until the origin closes it or
 * is quiet for a moment.
 *
 * Replays run one at a time (a mutex), on the dashboard's connection
 * thread, within the proxy's timeouts. The new flow's client says what it
 * was ("replay of #ID", "composed"), and its replay_of column names the
 * source.
 */
#ifndef TAPWIRE_REPLAY_H
#define TAPWIRE_REPLAY_H

#include <stdint.h>
#include <openssl/ssl.h>

#include "config.h"
#include "destguard.h"
#include "flowstore.h"
#include "intercept.h"
#include "rules.h"
#include "upstreamproxy.h"

#define REPLAY_ERROR_BYTES 512
/* How long a replay waits for its flow to be written, to return its id. */
#define REPLAY_SYNC_MS 5000

/* What a replay needs of the proxy; pointers not owned, outliving it. */
struct replay_env {
    const struct config *cfg;
    struct flowstore *flows;
    struct rules_current *rules; /* NULL: none */
    const struct destguard *guard;
    const struct upstreamproxy *proxy; /* NULL: origins directly */
    SSL_CTX *upstream_ctx;
    int cancel_fd;
};

/* Results besides 0. */
#define REPLAY_NOT_FOUND (-1) /* no such flow: 404 */
#define REPLAY_INVALID (-2)   /* the flow or the edit cannot be sent: 400 */
#define REPLAY_TRUNCATED (-3) /* the stored body was cut at the capture limit: 409 */
#define REPLAY_FAILED (-4)    /* out of memory, the database: 500 */

struct replay;

/* NULL when out of memory. */
struct replay *replay_new(const struct replay_env *env);
void replay_free(struct replay *rp);

/*
 * Sends flow source_id's request again with edit on top (may be NULL), or,
 * with source_id 0, the request edit describes (method, default GET, and
 * url are then needed). *new_id gets the new flow's id (0 when capture is
 * off or it was not written in time); the exchange may have failed (the
 * flow says why). Returns 0, or a REPLAY_* value with err.
 */
int replay_run(struct replay *rp, int64_t source_id, const struct intercept_edit *edit,
               int64_t *new_id, char *err, size_t err_len);

#endif
