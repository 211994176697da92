/*
 * socks5: the SOCKS version 5 handshake as bytes (RFC 1928, and RFC 1929
 * for username/password), parsed and built without any I/O, so that every
 * message a client can send is checked here and fuzzed.
 *
 * Each parser takes the bytes received so far. It returns SOCKS5_MORE with
 * *need set to the total length the message needs so far (always more than
 * it was given: the caller reads exactly the missing bytes and calls again,
 * so no byte after the message is ever read), SOCKS5_OK with the message
 * filled and *need its exact length, or SOCKS5_BAD.
 */
#ifndef TAPWIRE_SOCKS5_H
#define TAPWIRE_SOCKS5_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SOCKS5_VERSION 0x05
#define SOCKS5_USERPASS_VERSION 0x01 /* RFC 1929 2: the subnegotiation's version */

/* Methods (RFC 1928 3). */
#define SOCKS5_METHOD_NONE 0x00
#define SOCKS5_METHOD_USERPASS 0x02
#define SOCKS5_METHOD_UNACCEPTABLE 0xff

/* Commands and address types (RFC 1928 4). */
#define SOCKS5_CMD_CONNECT 0x01
#define SOCKS5_CMD_BIND 0x02
#define SOCKS5_CMD_UDP_ASSOCIATE 0x03
#define SOCKS5_ATYP_IPV4 0x01
#define SOCKS5_ATYP_DOMAIN 0x03
#define SOCKS5_ATYP_IPV6 0x04

/* Reply codes (RFC 1928 6). */
#define SOCKS5_REP_SUCCEEDED 0x00
#define SOCKS5_REP_FAILURE 0x01
#define SOCKS5_REP_NOT_ALLOWED 0x02
#define SOCKS5_REP_HOST_UNREACHABLE 0x04
#define SOCKS5_REP_COMMAND_NOT_SUPPORTED 0x07
#define SOCKS5_REP_ADDRESS_NOT_SUPPORTED 0x08

/* The longest message a client sends: RFC 1929's, with a 255-byte name
 * and a 255-byte password. */
#define SOCKS5_MAX_MESSAGE_BYTES (1 + 1 + 255 + 1 + 255)
/* The replies tapwire sends: a request reply with an IPv4 address. */
#define SOCKS5_REPLY_BYTES 10

enum socks5_parse { SOCKS5_BAD = -1, SOCKS5_MORE = 0, SOCKS5_OK = 1 };

/* The version identifier/method selection message. */
struct socks5_greeting {
    bool offers_none;
    bool offers_userpass;
};

/* RFC 1929's username/password request; pointers into the parsed bytes. */
struct socks5_userpass {
    const unsigned char *user;
    size_t user_len;
    const unsigned char *pass;
    size_t pass_len;
};

/* A request. host is text: a dotted IPv4 address, an IPv6 address without
 * brackets, or the domain name as sent (checked to be a host name). */
struct socks5_request {
    uint8_t command;
    uint8_t atyp;
    char host[256];
    uint16_t port;
    /* SOCKS5_BAD: the reply to send before closing (a command or an
     * address type tapwire does not take, or a name that is not one). */
    uint8_t refusal;
};

enum socks5_parse socks5_parse_greeting(const unsigned char *b, size_t n, struct socks5_greeting *g,
                                        size_t *need);

/* The method to choose: user/password when credentials are required, else
 * no authentication; SOCKS5_METHOD_UNACCEPTABLE when the client offers
 * neither that one. */
uint8_t socks5_choose_method(const struct socks5_greeting *g, bool needs_credentials);

enum socks5_parse socks5_parse_userpass(const unsigned char *b, size_t n,
                                        struct socks5_userpass *up, size_t *need);

/*
 * A request. SOCKS5_BAD with r->refusal set to the reply code for a request
 * that is well formed but refused (BIND, UDP ASSOCIATE, an unknown command or
 * address type, a name that is not a host name); with r->refusal
 * SOCKS5_REP_FAILURE for bytes that are not a request at all.
 */
enum socks5_parse socks5_parse_request(const unsigned char *b, size_t n, struct socks5_request *r,
                                       size_t *need);

/* The reply to a request: rep, and a bound address of 0.0.0.0:0 (tapwire
 * connects later, when it knows what the client speaks). Writes
 * SOCKS5_REPLY_BYTES bytes to out. */
void socks5_build_reply(uint8_t rep, unsigned char out[SOCKS5_REPLY_BYTES]);

#endif
