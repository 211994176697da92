/*
 * har: captured flows as a HAR 1.2 document (the dashboard's export).
 *
 * The document is produced piece by piece so that an export of thousands of
 * flows never sits in memory whole: one flow is read through the flow
 * store's query API (flowstore_list/get/get_body) and encoded per piece.
 * This module never writes to the store and never sees SQL.
 * Thread safety: one export belongs to one thread; several exports may run
 * at once.
 */
#ifndef TAPWIRE_HAR_H
#define TAPWIRE_HAR_H

#include <stddef.h>
#include <stdint.h>

#include "flowstore.h"

#define HAR_MAX_FLOWS 10000                      /* newest flows in an export of "all" */
#define HAR_MAX_DECODED_BYTES (16 * 1024 * 1024) /* else the raw bytes are exported */

/*
 * Decodes a Content-Encoding chain; codec_decode_content() of codec.h has
 * this signature. Returns 0 and *out (malloc'd) or -1 with err.
 */
typedef int (*har_decode_fn)(const char *content_encoding, const unsigned char *in, size_t in_len,
                             size_t max_out, unsigned char **out, size_t *out_len, char *err,
                             size_t err_len);

struct har;

/*
 * Starts an export of the newest HAR_MAX_FLOWS flows that filter lists
 * (flowstore_list(); its cursor, order and limit are not used), newest
 * first. filter's texts are copied. Otherwise as har_open().
 */
int har_open_filtered(struct flowstore *store, const struct flowstore_filter *filter,
                      har_decode_fn decode, struct har **out, char *err, size_t err_len);

/*
 * Starts an export of the flows ids[0..count) in that order (ids no longer
 * stored are skipped), or, when ids is NULL, of the newest HAR_MAX_FLOWS
 * flows, newest first. decode may be NULL: response bodies are then
 * exported as stored (base64 when compressed). store must outlive the
 * export. Returns 0 and *out (close with har_close()) or -1 with err.
 */
int har_open(struct flowstore *store, const int64_t *ids, size_t count, har_decode_fn decode,
             struct har **out, char *err, size_t err_len);
/* The next piece of the document: 1 with *data and *len (valid until the
 * next call), 0 when the document is complete, -1 with err. */
int har_read(struct har *har, const char **data, size_t *len, char *err, size_t err_len);
/* NULL is fine. */
void har_close(struct har *har);

#endif
