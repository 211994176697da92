/*
 * errmsg: filling the caller's error buffer. Every module reports failures
 * as a sentence in a char buffer the caller owns (STYLE.md, "Errors"); these
 * two helpers are the one place that formats into it safely.
 */
#ifndef TAPWIRE_ERRMSG_H
#define TAPWIRE_ERRMSG_H

#include <stddef.h>

/* Formats into err (NUL-terminated, truncated to err_len). err may be NULL. */
void errmsg_set(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Appends to what err already holds. */
void errmsg_append(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Puts prefix before what err already holds ("rules: " + the reason). */
void errmsg_prefix(char *err, size_t err_len, const char *prefix);

/* Text for an OpenSSL packed error code (ERR_get_error()); buf holds it when
 * OpenSSL has no reason string. Never NULL. */
const char *errmsg_ssl_reason(unsigned long e, char *buf, size_t buf_len);

#endif
