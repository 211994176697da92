/*
 * wsrelay: the relay of a connection upgraded to WebSocket (a 101 whose
 * Upgrade is websocket). The bytes go on unchanged as they arrive, never
 * re-framed; a copy of each direction runs through a frame parser
 * (wsframe) and each complete message is reported, decoded for display
 * when permessage-deflate compressed it (wsinflate), held up to a limit.
 * A frame that breaks RFC 6455 stops the relay: the frames before it go
 * through, the sender gets a Close with the code the RFC names (1002,
 * 1007, 1009), the other side a Close 1001 (going away), each only where
 * tapwire's frame cannot land inside one of the peer's; the caller then
 * closes both connections. It knows nothing of flows: messages go to a
 * callback.
 */
#ifndef TAPWIRE_WSRELAY_H
#define TAPWIRE_WSRELAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "message.h"
#include "stream.h"
#include "wsinflate.h"

/* A longer message fails the connection with 1009: tapwire forwards it
 * without holding it, but a 2^62-byte length is an attack, not a message. */
#define WSRELAY_MAX_MESSAGE_BYTES ((uint64_t)1 << 32)
#define WSRELAY_QUIET_MS 200

/* One message as the relay reports it; valid only during the call. */
struct wsrelay_message {
    bool is_from_client;
    int opcode;         /* enum wsframe_opcode */
    bool is_compressed; /* sent with permessage-deflate */
    bool is_decoded;    /* data is the decompressed payload (else as sent) */
    bool is_truncated;  /* data is not all of it (the limit) */
    int64_t time_us;    /* wall clock when its last byte arrived */
    const void *data;   /* payload, up to the limit */
    size_t len;
    uint64_t total_len; /* payload bytes on the wire */
    int close_code;     /* a Close: its code, 1005 when none */
};

struct wsrelay_config {
    int idle_timeout_ms;
    size_t limit; /* payload bytes reported per message (decoded ones too) */
    void (*message)(void *arg, const struct wsrelay_message *m); /* may be NULL */
    /* May be NULL: nothing moved for WSRELAY_QUIET_MS (a recorder writes
     * what it holds back). */
    void (*quiet)(void *arg);
    void *arg;
};

struct wsrelay_result {
    uint64_t bytes_up, bytes_down; /* relayed client -> server, server -> client */
    uint64_t messages_up, messages_down;
    int close_code; /* 0, or the code a broken rule called for */
    bool is_client_at_fault;
    char error[192]; /* why it ended, when not by a close of either side */
};

/* True when resp (a 101) switched to WebSocket; *params gets the
 * permessage-deflate terms it accepted. */
bool wsrelay_is_websocket(const struct message *resp, struct wsinflate_params *params);

/* Relays until either side closes, an error, the idle timeout, or a
 * violation. Returns 0 when it ended by a close or timeout, -1 otherwise
 * (res->error says why). */
int wsrelay_run(struct stream *client, struct stream *server, const struct wsinflate_params *params,
                const struct wsrelay_config *cfg, struct wsrelay_result *res);

#endif
