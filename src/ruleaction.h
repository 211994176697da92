/*
 * ruleaction: what an action rule (rules.h: mock, map-local, block,
 * map-remote) makes of one request, apart from any wire or flow: the answer
 * tapwire gives for a mock or a block (status, header lines with the
 * framing tapwire declares, body), and where a map-remote sends the
 * request (origin, target, the request as sent, the note for the flow).
 *
 * The session (HTTP/1.1 clients) and replay both take their actions from
 * here, so a rule does the same whichever way its request came; each sends
 * or records the result its own way. Nothing here does I/O.
 */
#ifndef TAPWIRE_RULEACTION_H
#define TAPWIRE_RULEACTION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "message.h"
#include "rules.h"

/* "connection closed by rule LABEL" and the like, with the NUL. */
#define RULEACTION_WHY_BYTES (RULES_MAX_LABEL_BYTES + 64)
/* A block's text/plain page: the status line and the rule's label. */
#define RULEACTION_PAGE_BYTES 256

/*
 * The answer of a mock or block. body points into the rule (held by the
 * caller's rule set) or into page, so the struct is not copied.
 */
struct ruleaction_answer {
    int status;
    const char *reason_phrase;
    bool is_close;                    /* block close: no answer, the connection ends */
    bool is_block;                    /* why is then the flow's error */
    char why[RULEACTION_WHY_BYTES];   /* "answered by rule L", "blocked by rule L", ... */
    char *fields;                     /* owned: "Name: value\r\n" lines; NULL when is_close */
    const char *body;                 /* "" when none */
    size_t body_len;                  /* the body's length, also for a HEAD request */
    char page[RULEACTION_PAGE_BYTES]; /* private: a block's page */
};

/*
 * The answer act (a mock or block rule) gives. Fields: a block's page type
 * first, then the rule's header= fields, then Content-Length (RFC 9110
 * 8.6: framing is declared by tapwire, never by the rule; none for 204 and
 * 304, which have no body), then "Connection: close" when is_closing.
 * Returns 0; -1 when out of memory. Free with ruleaction_answer_free().
 */
int ruleaction_answer(const struct rule *act, bool is_closing, struct ruleaction_answer *a);
void ruleaction_answer_free(struct ruleaction_answer *a);

/* Where a map-remote rule sends a request. */
struct ruleaction_remote {
    bool is_tls;
    const char *host; /* borrowed from the rule: without brackets */
    uint16_t port;
    const char *authority; /* borrowed from the rule: host[:port], the Host field */
    char *target;          /* owned: the origin-form target sent */
    char *note;            /* owned: "map-remote: asked for URL, sent to URL" */
    struct message req;    /* owned: the request as sent */
};

/*
 * map-remote: req (the request after the URL and header rules, whose
 * origin-form target is target; asked is the URL as asked for) sent to
 * act's origin instead: its scheme and authority, the rule's prefix in the
 * target, and the Host field naming the new origin (the codec writes it
 * from the authority; recorded so, not as the client wrote it). Returns 0;
 * -1 when out of memory or the target would be too long. Free with
 * ruleaction_remote_free().
 */
int ruleaction_map_remote(const struct rule *act, const char *asked, const struct message *req,
                          const char *target, struct ruleaction_remote *out);
void ruleaction_remote_free(struct ruleaction_remote *r);

#endif
