/*
 * textcode: the digit values of hexadecimal and base64 text (RFC 4648), one
 * definition for every decoder of untrusted text: chunk sizes (http1),
 * percent-escapes (rules, upstream proxy URLs, grpc-message) and Basic
 * credentials and HAR bodies (proxyauth, harimport). Header only: the
 * parsers call it per byte.
 */
#ifndef TAPWIRE_TEXTCODE_H
#define TAPWIRE_TEXTCODE_H

/* 0..15 for a hex digit of either case, -1 for anything else. */
static inline int textcode_hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* 0..63 for a character of the base64 alphabet ('=' is not), -1 else. */
static inline int textcode_base64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

#endif
