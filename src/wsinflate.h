/*
 * wsinflate: permessage-deflate (RFC 7692) decoded for display, one
 * direction of a WebSocket connection. The relay forwards the compressed
 * bytes unchanged; this only shows what they say. The sliding window runs
 * across messages unless the side's no_context_takeover was negotiated.
 * Output is bounded by a limit, so a decompression bomb costs at most that
 * much memory and the work of producing it. A message held only in part
 * (past the capture limit), or decoded only in part, leaves the shared
 * window behind the sender's: from then on the direction's messages are
 * not decoded (the recorder keeps them compressed).
 */
#ifndef TAPWIRE_WSINFLATE_H
#define TAPWIRE_WSINFLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <zlib.h>

#include "message.h"

struct wsinflate {
    z_stream z;
    bool is_open;
    bool is_out_of_step; /* the window is lost: no more decoding */
    bool no_context_takeover;
    size_t limit;
    unsigned char *out; /* owned; up to limit bytes, reused */
    size_t out_cap;
};

/* What the 101 response's Sec-WebSocket-Extensions agreed on. */
struct wsinflate_params {
    bool is_deflate;
    bool client_no_context_takeover;
    bool server_no_context_takeover;
};

/* Reads the extensions a 101 response accepted (RFC 7692 7.1). */
void wsinflate_params_parse(const struct message *resp, struct wsinflate_params *out);

/* Prepares w; nothing is allocated before the first message. */
void wsinflate_init(struct wsinflate *w, bool no_context_takeover, size_t limit);
void wsinflate_free(struct wsinflate *w);

/*
 * Decodes one compressed message: in[len] its payload as held, is_whole
 * when that is all of it. Returns 0 with *out (valid until the next call)
 * and *out_len, *is_truncated when the output stopped at the limit or the
 * input was not whole; -1 when it cannot be decoded (bad deflate data, out
 * of memory, or the window was lost before).
 */
int wsinflate_message(struct wsinflate *w, const unsigned char *in, size_t len, bool is_whole,
                      const unsigned char **out, size_t *out_len, bool *is_truncated);

#endif
