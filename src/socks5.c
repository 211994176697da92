/*
 * socks5: see socks5.h. Strict where the RFC is: a wrong version byte, a
 * reserved byte that is not zero or a zero-length field ends the handshake.
 */
#include "socks5.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

/* Whether name[len] is a host name a resolver may be asked for: letters,
 * digits, '-', '_' and '.', no empty label. The name ends up in SNI, in a
 * certificate and on pages, so nothing else gets through. */
static bool is_host_name(const unsigned char *name, size_t len)
{
    size_t label = 0;

    if (len == 0 || name[0] == '.')
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = name[i];

        if (c == '.') {
            if (label == 0)
                return false;
            label = 0;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return false;
        if (++label > 63)
            return false;
    }
    return true;
}

enum socks5_parse socks5_parse_greeting(const unsigned char *b, size_t n, struct socks5_greeting *g,
                                        size_t *need)
{
    /* VER NMETHODS METHODS[NMETHODS] */
    memset(g, 0, sizeof(*g));
    *need = 2;
    if (n < 2)
        return SOCKS5_MORE;
    if (b[0] != SOCKS5_VERSION || b[1] == 0)
        return SOCKS5_BAD;
    *need = 2 + (size_t)b[1];
    if (n < *need)
        return SOCKS5_MORE;
    for (size_t i = 2; i < *need; i++) {
        g->offers_none |= b[i] == SOCKS5_METHOD_NONE;
        g->offers_userpass |= b[i] == SOCKS5_METHOD_USERPASS;
    }
    return SOCKS5_OK;
}

uint8_t socks5_choose_method(const struct socks5_greeting *g, bool needs_credentials)
{
    if (needs_credentials)
        return g->offers_userpass ? SOCKS5_METHOD_USERPASS : SOCKS5_METHOD_UNACCEPTABLE;
    return g->offers_none ? SOCKS5_METHOD_NONE : SOCKS5_METHOD_UNACCEPTABLE;
}

enum socks5_parse socks5_parse_userpass(const unsigned char *b, size_t n,
                                        struct socks5_userpass *up, size_t *need)
{
    /* VER ULEN UNAME[ULEN] PLEN PASSWD[PLEN] */
    size_t ulen, plen;

    memset(up, 0, sizeof(*up));
    *need = 2;
    if (n < 2)
        return SOCKS5_MORE;
    if (b[0] != SOCKS5_USERPASS_VERSION || b[1] == 0)
        return SOCKS5_BAD;
    ulen = b[1];
    *need = 2 + ulen + 1;
    if (n < *need)
        return SOCKS5_MORE;
    plen = b[2 + ulen];
    if (plen == 0)
        return SOCKS5_BAD;
    *need = 3 + ulen + plen;
    if (n < *need)
        return SOCKS5_MORE;
    up->user = b + 2;
    up->user_len = ulen;
    up->pass = b + 3 + ulen;
    up->pass_len = plen;
    return SOCKS5_OK;
}

/* Bytes of DST.ADDR for atyp (the domain's length byte included), or 0
 * when the type is unknown. */
static size_t address_bytes(uint8_t atyp, const unsigned char *len_byte)
{
    switch (atyp) {
    case SOCKS5_ATYP_IPV4:
        return 4;
    case SOCKS5_ATYP_IPV6:
        return 16;
    case SOCKS5_ATYP_DOMAIN:
        return 1 + (size_t)*len_byte;
    default:
        return 0;
    }
}

enum socks5_parse socks5_parse_request(const unsigned char *b, size_t n, struct socks5_request *r,
                                       size_t *need)
{
    /* VER CMD RSV ATYP DST.ADDR DST.PORT; the first address byte is read
     * with the fixed part, since for a name it is the length. */
    const unsigned char *addr = b + 4;
    size_t alen;

    memset(r, 0, sizeof(*r));
    r->refusal = SOCKS5_REP_FAILURE;
    *need = 5;
    if (n < 5)
        return SOCKS5_MORE;
    if (b[0] != SOCKS5_VERSION || b[2] != 0)
        return SOCKS5_BAD;
    r->command = b[1];
    r->atyp = b[3];
    alen = address_bytes(r->atyp, addr);
    if (alen == 0) {
        r->refusal = SOCKS5_REP_ADDRESS_NOT_SUPPORTED;
        return SOCKS5_BAD;
    }
    if (r->atyp == SOCKS5_ATYP_DOMAIN && alen == 1)
        return SOCKS5_BAD;
    *need = 4 + alen + 2;
    if (n < *need)
        return SOCKS5_MORE;
    r->port = (uint16_t)(b[4 + alen] << 8 | b[4 + alen + 1]);
    if (r->command != SOCKS5_CMD_CONNECT) {
        /* BIND and UDP ASSOCIATE are not offered: RFC 1928 6's answer. */
        r->refusal = SOCKS5_REP_COMMAND_NOT_SUPPORTED;
        return SOCKS5_BAD;
    }
    if (r->atyp == SOCKS5_ATYP_IPV4) {
        inet_ntop(AF_INET, addr, r->host, sizeof(r->host));
    } else if (r->atyp == SOCKS5_ATYP_IPV6) {
        inet_ntop(AF_INET6, addr, r->host, sizeof(r->host));
    } else {
        if (!is_host_name(addr + 1, alen - 1)) {
            r->refusal = SOCKS5_REP_HOST_UNREACHABLE;
            return SOCKS5_BAD;
        }
        memcpy(r->host, addr + 1, alen - 1);
        r->host[alen - 1] = '\0';
    }
    if (r->port == 0) {
        r->refusal = SOCKS5_REP_HOST_UNREACHABLE;
        return SOCKS5_BAD;
    }
    r->refusal = SOCKS5_REP_SUCCEEDED;
    return SOCKS5_OK;
}

void socks5_build_reply(uint8_t rep, unsigned char out[SOCKS5_REPLY_BYTES])
{
    /* VER REP RSV ATYP BND.ADDR BND.PORT */
    memset(out, 0, SOCKS5_REPLY_BYTES);
    out[0] = SOCKS5_VERSION;
    out[1] = rep;
    out[3] = SOCKS5_ATYP_IPV4;
}
