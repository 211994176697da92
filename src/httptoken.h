/*
 * httptoken: the token characters of HTTP (RFC 9110 5.6.2 tchar), which
 * methods, field names, transfer codings and content codings are made of.
 * One definition for the parser (http1), the content codings (codec) and
 * the rule syntax (rules). Header only: the parser calls it per byte.
 */
#ifndef TAPWIRE_HTTPTOKEN_H
#define TAPWIRE_HTTPTOKEN_H

#include <stdbool.h>
#include <string.h>

static inline bool httptoken_is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

#endif
