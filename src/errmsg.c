/* errmsg: formatting into caller-owned error buffers. */
#include "errmsg.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <openssl/err.h>

void errmsg_set(char *err, size_t err_len, const char *fmt, ...)
{
    va_list ap;
    if (err == NULL || err_len == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

void errmsg_append(char *err, size_t err_len, const char *fmt, ...)
{
    va_list ap;
    if (err == NULL || err_len == 0)
        return;
    size_t used = strnlen(err, err_len);
    if (used + 1 >= err_len)
        return;
    va_start(ap, fmt);
    vsnprintf(err + used, err_len - used, fmt, ap);
    va_end(ap);
}

const char *errmsg_ssl_reason(unsigned long e, char *buf, size_t buf_len)
{
    if (e == 0)
        return "unknown error";
    const char *reason = ERR_reason_error_string(e);
    if (reason != NULL)
        return reason;
    ERR_error_string_n(e, buf, buf_len);
    return buf;
}

void errmsg_prefix(char *err, size_t err_len, const char *prefix)
{
    size_t prefix_len, len;

    if (err == NULL || err_len == 0)
        return;
    prefix_len = strlen(prefix);
    len = strnlen(err, err_len - 1);
    if (prefix_len >= err_len)
        prefix_len = err_len - 1;
    if (len + prefix_len >= err_len)
        len = err_len - 1 - prefix_len;
    memmove(err + prefix_len, err, len);
    memcpy(err, prefix, prefix_len);
    err[prefix_len + len] = '\0';
}
