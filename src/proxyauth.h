/*
 * proxyauth: who may use the proxy. Holds the accepted USER:PASS pairs
 * (--proxy-auth, --proxy-auth-file) only as SHA-256 digests, and checks a
 * Basic Proxy-Authorization field (RFC 9110 11.7.1, RFC 7617) or a SOCKS5
 * username/password (RFC 1929) against every pair in time that does not
 * depend on where they differ. Read-only after loading: any thread may
 * check at once.
 *
 * Credentials never go further than here: proxyauth_strip() takes the
 * Proxy-Authorization fields out of a parsed head before it is captured or
 * forwarded, and nothing here logs what a client sent.
 */
#ifndef TAPWIRE_PROXYAUTH_H
#define TAPWIRE_PROXYAUTH_H

#include <stdbool.h>
#include <stddef.h>

#include "http1.h"

#define PROXYAUTH_MAX_USERS 64
#define PROXYAUTH_MAX_FIELD_BYTES 1024 /* a Basic credential longer than this is refused */
/* The challenge a 407 carries (RFC 9110 11.7.1). */
#define PROXYAUTH_CHALLENGE "Proxy-Authenticate: Basic realm=\"tapwire\", charset=\"UTF-8\"\r\n"

struct proxyauth;

/* One pair "USER:PASS" (USER without ':', both non-empty). Returns 0 with
 * *out (caller frees with proxyauth_free()) or -1 with err. */
int proxyauth_new(const char *user_pass, struct proxyauth **out, char *err, size_t err_len);

/*
 * The pairs in a file, one "USER:PASS" per line (blank lines and lines
 * starting with '#' skipped, CR LF accepted). The file is a secret: owned by
 * this user, closed to group and others (keyfile). Returns 0 with *out or -1
 * with err naming the file and the line.
 */
int proxyauth_load_file(const char *path, struct proxyauth **out, char *err, size_t err_len);

void proxyauth_free(struct proxyauth *auth);

/* Whether value (a Proxy-Authorization field value, len bytes) is "Basic"
 * with the base64 of an accepted USER:PASS. */
bool proxyauth_check_basic(const struct proxyauth *auth, const char *value, size_t len);

/* Whether user and pass (RFC 1929: up to 255 bytes each) are accepted. */
bool proxyauth_check_pair(const struct proxyauth *auth, const unsigned char *user, size_t user_len,
                          const unsigned char *pass, size_t pass_len);

/* Whether one of head's Proxy-Authorization fields is accepted. */
bool proxyauth_check_head(const struct proxyauth *auth, const struct http1_head *head);

/* Takes every Proxy-Authorization field out of head (the fields after it
 * move up, in order). Returns how many were taken. */
size_t proxyauth_strip(struct http1_head *head);

/*
 * Strict base64 (RFC 4648 4, padding required, no blanks) of in[in_len] into
 * out[out_size]. Returns the decoded length, or -1 when in is not base64 or
 * does not fit.
 */
long proxyauth_base64_decode(const char *in, size_t in_len, unsigned char *out, size_t out_size);

#endif
