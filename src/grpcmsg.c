/*
 * grpcmsg: see grpcmsg.h.
 */
#include "grpcmsg.h"
#include "textcode.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

size_t grpcmsg_split(const uint8_t *body, size_t len, struct grpcmsg *out, size_t max, size_t *rest)
{
    size_t at = 0, count = 0;

    *rest = 0;
    while (count < max && at < len) {
        if (len - at < 5) {
            *rest = len - at;
            break;
        }
        uint32_t length = (uint32_t)body[at + 1] << 24 | (uint32_t)body[at + 2] << 16 |
                          (uint32_t)body[at + 3] << 8 | (uint32_t)body[at + 4];
        size_t present = len - at - 5;
        out[count] = (struct grpcmsg){
            .is_compressed = (body[at] & 1) != 0,
            .length = length,
            .data = body + at + 5,
            .captured = present < length ? present : length,
        };
        count++;
        if (present < length)
            break;
        at += 5 + (size_t)length;
    }
    return count;
}

bool grpcmsg_is_grpc(const char *content_type, size_t len)
{
    static const char prefix[] = "application/grpc";
    size_t n = sizeof(prefix) - 1;

    if (content_type == NULL || len < n || strncasecmp(content_type, prefix, n) != 0)
        return false;
    return len == n || content_type[n] == '+' || content_type[n] == ';';
}

/* The canonical names of the status codes (grpc/doc/statuscodes.md). */
static const char *status_name(int status)
{
    static const char *const names[] = {
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    };
    return status >= 0 && status < (int)(sizeof(names) / sizeof(names[0])) ? names[status]
                                                                           : "unknown code";
}

/* grpc-message is percent-encoded UTF-8; control bytes become '?' so the
 * text is safe in a log line. */
static void decode_message(const char *in, size_t len, char *out, size_t out_len)
{
    size_t o = 0;

    for (size_t i = 0; i < len && o + 1 < out_len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '%' && i + 2 < len && textcode_hex_value((unsigned char)in[i + 1]) >= 0 &&
            textcode_hex_value((unsigned char)in[i + 2]) >= 0) {
            c = (unsigned char)(textcode_hex_value((unsigned char)in[i + 1]) * 16 +
                                textcode_hex_value((unsigned char)in[i + 2]));
            i += 2;
        }
        out[o++] = c < 0x20 || c == 0x7f ? '?' : (char)c;
    }
    out[o] = '\0';
}

bool grpcmsg_failed(const struct message_fields *fields, int *status, char *why, size_t why_len)
{
    const struct message_field *st = message_fields_find(fields, "grpc-status");
    const struct message_field *msg = message_fields_find(fields, "grpc-message");
    char text[GRPCMSG_MAX_STATUS_TEXT_BYTES] = "";
    int code = 0;

    if (st == NULL || st->value_len == 0 || st->value_len > 9)
        return false;
    for (size_t i = 0; i < st->value_len; i++) {
        if (st->value[i] < '0' || st->value[i] > '9')
            return false;
        code = code * 10 + (st->value[i] - '0');
    }
    if (code == 0)
        return false;
    if (msg != NULL)
        decode_message(msg->value, msg->value_len, text, sizeof(text));
    *status = code;
    snprintf(why, why_len, "grpc-status %d (%s)%s%s", code, status_name(code), text[0] ? ": " : "",
             text);
    return true;
}
