/*
 * rewrite: the rule engine (rules.h) as the exchange's rewrite hooks. One
 * struct rewrite serves one exchange: it holds the rule set acquired for it
 * (a snapshot: rules edited meanwhile apply from the next exchange on) and
 * the context that collects what applied, for the flow record. The exchange
 * sees only struct exchange_rewrite; the session begins and ends this.
 */
#ifndef TAPWIRE_REWRITE_H
#define TAPWIRE_REWRITE_H

#include <stdbool.h>
#include <stddef.h>

#include "exchange.h"
#include "message.h"
#include "rules.h"

struct flow;

struct rewrite {
    struct rule_set *set; /* owned reference, NULL: no rules */
    struct flow *flow;    /* owned: the exchange's heads for match=, NULL when no rule has it */
    struct rules_ctx ctx;
    struct rules_headers last_fields; /* what the fields hook returned last */
    struct exchange_rewrite hooks;
};

/*
 * Acquires the current rules for a request of method to site (host without
 * port) at path (origin-form) and starts the request phase. Leaves the
 * rewrite inactive (rewrite_hooks() NULL) when there are no rules. Returns
 * 0, or -1 when out of memory. Always end with rewrite_end().
 */
int rewrite_begin(struct rewrite *rw, struct rules_current *rules, const struct message *req,
                  const char *site, const char *path, size_t limit, size_t memory_limit);

/* The URL rules: *new_path gets a new origin-form target (caller frees) or
 * NULL when unchanged. Returns 0, or -1 when out of memory. */
int rewrite_url(struct rewrite *rw, char **new_path);

/* The action rule (mock, block, map-remote) for the request, after the
 * URL and header rules; NULL when none applies. Valid until rewrite_end(). */
const struct rule *rewrite_action(struct rewrite *rw);

/* The hooks for the exchange, or NULL when no rules are active. */
const struct exchange_rewrite *rewrite_hooks(struct rewrite *rw);

/* What applied and why some did not, for the flow ("" when nothing). */
const char *rewrite_applied(const struct rewrite *rw);
const char *rewrite_notes(const struct rewrite *rw);

void rewrite_end(struct rewrite *rw);

#endif
