/*
 * harcookie: Cookie and Set-Cookie fields of a captured header section as
 * HAR 1.2 cookie objects (name, value, and for Set-Cookie path, domain,
 * expires, httpOnly, secure), and the ISO 8601 time HAR writes.
 */
#ifndef TAPWIRE_HARCOOKIE_H
#define TAPWIRE_HARCOOKIE_H

#include <stdint.h>

#include <jansson.h>

#define HARCOOKIE_MAX_AGE_SECS (400 * 24 * 3600) /* RFC 6265bis 5.6.2: longer is capped */

/* Every pair of every Cookie field of headers ("Name: value\r\n" lines), as
 * a new array (caller owns), or NULL when out of memory. */
json_t *harcookie_request(const char *headers);

/* One object per Set-Cookie field of headers, with its attributes; Max-Age
 * counts from received_us (wall-clock microseconds). New array, or NULL. */
json_t *harcookie_response(const char *headers, int64_t received_us);

/* us (microseconds since the epoch) as "2026-12-06T21:37:30.123Z". */
void harcookie_iso8601(int64_t us, char *out, size_t out_len);

#endif
