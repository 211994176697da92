/* errmsg: formatting into caller-owned error buffers. */
#include "errmsg.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

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
