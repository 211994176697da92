/*
 * grpcmsg: the messages of a gRPC body and the status of a gRPC call.
 *
 * A gRPC body (application/grpc, over HTTP/2) is a sequence of
 * length-prefixed messages: one flag byte (bit 0: compressed with the
 * call's grpc-encoding), a 4-byte big-endian length, then the message. The
 * call's outcome is in the trailers: grpc-status (0 is OK) and
 * grpc-message (percent-encoded text). This module reads both from what a
 * flow captured, which may be truncated at the capture limit: it never
 * reads past the bytes it is given, and says when the last message was cut.
 */
#ifndef TAPWIRE_GRPCMSG_H
#define TAPWIRE_GRPCMSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "message.h"

/* gRPC's own bound on a message (4 MiB by default in its libraries) is far
 * below what the prefix can say; a larger prefix is still split, not read. */
#define GRPCMSG_MAX_STATUS_TEXT_BYTES 256

struct grpcmsg {
    bool is_compressed;
    uint32_t length;     /* as the prefix says */
    const uint8_t *data; /* inside the body */
    size_t captured;     /* bytes of it present (< length when cut) */
};

/*
 * Splits body[0..len) into at most max messages. Returns how many were
 * found; *rest gets the count of trailing bytes too short for a prefix
 * (a body cut inside one). A message whose bytes run past the end is
 * returned with captured < length, and is the last one.
 */
size_t grpcmsg_split(const uint8_t *body, size_t len, struct grpcmsg *out, size_t max,
                     size_t *rest);

/* True when content_type (a Content-Type value, may be NULL) is gRPC's
 * ("application/grpc", "application/grpc+proto", ...). */
bool grpcmsg_is_grpc(const char *content_type, size_t len);

/*
 * The call failed when fields (trailers, or the headers of a
 * trailers-only response) hold a grpc-status other than 0: *status gets it
 * and why[why_len] "grpc-status N (NAME): message" with grpc-message
 * percent-decoded and control bytes replaced. Returns true when failed,
 * false when OK or when there is no grpc-status.
 */
bool grpcmsg_failed(const struct message_fields *fields, int *status, char *why, size_t why_len);

#endif
