/*
 * message: one HTTP request or response as the proxy's core sees it,
 * whatever protocol carried it: method, scheme, authority and target, or
 * status and reason, an ordered field list, trailers, and how the body is
 * delimited. The bytes of a body never live here: they move through a
 * body source and sink (body.h), so a message stays small whatever it
 * carries.
 *
 * The wire formats are codecs around this type (http1codec today): they
 * fill a message from what arrived and write one out. The exchange, the
 * rules and the capture work on messages only, which is what lets a second
 * protocol plug in without touching them.
 *
 * A message holds pointers; who owns the bytes depends on how it was made.
 * A view (a codec's parse) points into the codec's buffer and lives as long
 * as that; message_copy() makes a message that owns one allocation with
 * all of it, freed by message_free().
 */
#ifndef TAPWIRE_MESSAGE_H
#define TAPWIRE_MESSAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct message_field {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

/* An ordered field list; order is kept because it can matter (RFC 9110
 * 5.3: fields of one name combine in order). */
struct message_fields {
    const struct message_field *items;
    size_t count;
};

/* How the end of the body is known, whatever the wire says. */
enum message_body {
    MESSAGE_BODY_NONE,        /* no body at all (GET without one, HEAD, 204, 304) */
    MESSAGE_BODY_LENGTH,      /* exactly content_length bytes */
    MESSAGE_BODY_STREAM,      /* the sender marks the end (chunked, END_STREAM) */
    MESSAGE_BODY_UNTIL_CLOSE, /* responses only: the connection's end ends it */
};

struct message {
    /* A request: method, scheme ("http", "https"), authority (NULL when the
     * Host field says it), target (origin-form or "*"). */
    const char *method;
    size_t method_len;
    const char *scheme;
    const char *authority;
    size_t authority_len;
    const char *target;
    size_t target_len;
    /* A response: status and reason phrase (may be empty). */
    int status;
    const char *reason;
    size_t reason_len;

    int version; /* of the hop it came over: 10, 11 */
    struct message_fields fields;
    struct message_fields trailers;
    /* Fields for the next hop only (an upstream proxy's credentials): the
     * codec writes them, nothing records them, message_copy() drops them. */
    struct message_fields next_hop;
    /* A request whose next hop is a forward proxy (--upstream-proxy): a 407
     * is that proxy asking tapwire for credentials (RFC 9110 15.5.8), never
     * an answer for the client. message_copy() drops it, as next_hop. */
    bool is_to_proxy;
    enum message_body body;
    uint64_t content_length; /* MESSAGE_BODY_LENGTH */

    /* What the codec read off the connection semantics. */
    bool keep_alive;      /* the sender's connection may carry another message */
    bool expect_continue; /* request: the client waits for 100 Continue */
    bool is_upgrade;      /* asks for (request) or agrees to (101) a protocol switch */

    void *storage; /* owned when copied: what every pointer above points into */
};

/* The first field named name (case-insensitive), or NULL. */
const struct message_field *message_find(const struct message *m, const char *name);
const struct message_field *message_fields_find(const struct message_fields *fields,
                                                const char *name);

/* True when f is named name, compared case-insensitively. */
bool message_field_is(const struct message_field *f, const char *name);

/*
 * True when f belongs to one connection and never goes on (RFC 9110 7.6.1):
 * Connection, Keep-Alive, Proxy-Connection, Proxy-Authorization,
 * Proxy-Authenticate, TE, Trailer, Transfer-Encoding, Upgrade, and every
 * field that a Connection field in all names (all may be NULL).
 */
bool message_is_hop_by_hop(const struct message_fields *all, const struct message_field *f);

/*
 * Makes dst a copy of src that owns all it points to (one allocation;
 * fields and trailers may be replaced by the given lists first when not
 * NULL). Returns 0, or -1 when out of memory (dst is then empty). Free
 * with message_free().
 */
int message_copy(struct message *dst, const struct message *src,
                 const struct message_fields *fields);
void message_free(struct message *m);

#endif
