/*
 * filter: the one filter expression language of tapwire (syntax and
 * meaning in tapwire-filters(7)): mitmproxy's "~d example.com & !~c 200"
 * family, for the flow list search, intercept and the match= option of
 * rules.
 *
 * Three things are done with an expression, all from the same parse:
 *  - filter_parse(): text to a tree, bounded in size and depth (the text
 *    comes from the dashboard and is hostile), with "column N: ..." errors;
 *  - filter_match(): the tree evaluated on a struct flow, on any thread,
 *    within a time budget;
 *  - filter_to_sql(): the part of the tree SQLite can answer from columns
 *    of the flows table, as a WHERE fragment with bound parameters, and
 *    whether the rows it selects still need filter_match().
 *
 * A parsed filter is immutable: any number of threads may evaluate it at
 * once. Nothing here does I/O or knows the flow store; the SQL is text for
 * the caller to prepare.
 */
#ifndef TAPWIRE_FILTER_H
#define TAPWIRE_FILTER_H

#include "flow.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FILTER_MAX_INPUT_BYTES 4096 /* one expression */
#define FILTER_MAX_NODES 256        /* terms and operators in one tree */
#define FILTER_MAX_DEPTH 32         /* nested parentheses and '!' */
#define FILTER_ERROR_BYTES 320      /* holds every error message in full */

/* PCRE2 limits per match call (see regexsearch.h for why a search also has
 * a deadline), and the wall-clock budget of one filter_match() call. */
#define FILTER_MATCH_LIMIT 1000000
#define FILTER_DEPTH_LIMIT 100000
#define FILTER_HEAP_LIMIT_KIB (16 * 1024)
#define FILTER_MATCH_BUDGET_MS 250
/* ~b decodes a compressed body up to this many bytes; past it, or when the
 * coding cannot be undone (a truncated capture), the stored bytes are
 * searched as they are. */
#define FILTER_MAX_DECODED_BODY_BYTES (8 * 1024 * 1024)

/* What filter_needs() reports: the facts an evaluation reads, so that a
 * caller loads only those (the list query reads no header sections and no
 * bodies) and an intercept knows whether it can decide at the request. */
#define FILTER_NEEDS_RESPONSE 0x01         /* status, response headers or body, ~q, ~s */
#define FILTER_NEEDS_REQUEST_HEADERS 0x02  /* flow->request_headers */
#define FILTER_NEEDS_RESPONSE_HEADERS 0x04 /* flow->response_headers */
#define FILTER_NEEDS_REQUEST_BODY 0x08     /* flow->request_body */
#define FILTER_NEEDS_RESPONSE_BODY 0x10    /* flow->response_body */

struct filter;

/*
 * Parses text[0..len) (need not be NUL-terminated). Returns 0 with *out
 * (caller frees with filter_free()), or -1 with *out NULL and err holding
 * "column C: what is wrong" (C counts bytes from 1), or "out of memory".
 * Blank text is an error ("empty filter"): callers that mean "no filter"
 * check for it before parsing.
 */
int filter_parse(const char *text, size_t len, struct filter **out, char *err, size_t err_len);
void filter_free(struct filter *filter);

/* FILTER_NEEDS_* bits of what evaluating filter may read. */
unsigned filter_needs(const struct filter *filter);

/*
 * The expression in canonical form: every value quoted, '&' written out,
 * parentheses only where precedence needs them. Parsing it gives a filter
 * that formats the same, as long as it is within FILTER_MAX_INPUT_BYTES
 * (quotes, escapes and " & " can make it longer than the text it came
 * from: whoever must parse again keeps the text as written). Caller frees;
 * NULL when out of memory.
 */
char *filter_format(const struct filter *filter);

/*
 * Evaluates filter on flow. Returns 1 (matches), 0 (does not), or -1 with
 * why filled when it cannot tell: a regex hit a PCRE2 limit, the budget of
 * FILTER_MATCH_BUDGET_MS ran out, or memory did. Callers treat -1 as "does
 * not match" and may show why. Only the fields named by filter_needs() and
 * the always-present ones (kind, scheme, method, host, port, target,
 * client_addr, status, error, is_tls, version, listener) are read; a side that is
 * absent (NULL headers, status 0) simply does not match its terms.
 * Allocation: none for most trees; a regex term makes two small ones, a
 * target longer than 2 KiB one for the URL, and ~b on a compressed body
 * one for the decoded copy (bounded above), all freed before returning.
 */
int filter_match(const struct filter *filter, const struct flow *flow, char *why, size_t why_len);

/* One bound parameter of a filter_sql. */
enum filter_sql_type { FILTER_SQL_INT = 0, FILTER_SQL_TEXT = 1 };
struct filter_sql_param {
    enum filter_sql_type type;
    int64_t number;   /* FILTER_SQL_INT */
    const char *text; /* FILTER_SQL_TEXT: UTF-8, NUL-terminated, owned by the filter_sql */
    size_t len;
};

/*
 * The SQL form of a filter:
 *
 *   where        a boolean SQL expression over the columns of the flows
 *                table (sql/schema.sql), unqualified, parenthesised, never
 *                NULL for any row; its placeholders are plain '?', bound
 *                with params in order of appearance;
 *   needs_eval   false: the rows where selects are exactly the flows that
 *                match. true: they are a superset (every flow that matches
 *                is among them, not every row matches), and each row must
 *                go through filter_match() as well.
 *
 * How a caller combines them, e.g. the flow list:
 *
 *   "SELECT ... FROM flows WHERE id < ? AND " + where + " ORDER BY id DESC LIMIT ?"
 *   bind id first, then params[i] at index 2 + i, then the limit.
 *   needs_eval false: the rows are the page.
 *   needs_eval true: read each row into a struct flow with what
 *   filter_needs() asks for (header sections, bodies), keep those for
 *   which filter_match() returns 1, and fetch on from the last id read
 *   until the page is full or a scan bound the caller sets is reached
 *   (say so to the user: "searched the newest N flows").
 *
 * Terms SQLite answers exactly: ~d, ~u, ~m, ~src and bare words whose value
 * is plain text (no regex operators but an optional leading '^' and
 * trailing '$', ASCII, escaped punctuation allowed), ~h/~hq/~hs with such
 * values without anchors, ~t/~tq/~ts, ~c, ~q, ~s, ~e, ~websocket,
 * ~tunnel, ~tls, ~http2, ~version (plain), ~listener, ~all. An equality on the host
 * ("~d ^example\.com$") uses the index on lower(host), ~e the partial
 * index on errors, ~c 4xx (not 2xx) the partial index on the status class.
 * Other regexes become the literal runs they require (a superset), and ~b
 * is left to the evaluator entirely (SQLite cannot decode bodies).
 */
struct filter_sql {
    char *where; /* owned */
    struct filter_sql_param *params;
    size_t param_count;
    bool needs_eval;
    /* Text that every matching flow's lowercased host || target holds (a
     * bare word, or a literal run of ~u or ~d, from the AND chain at the
     * top), for the search index; NULL when none is known. Owned. */
    char *index_text;
    char **strings; /* private: the texts of params */
    size_t string_count;
};

/* Fills out (caller frees with filter_sql_free(), also after a failure).
 * Returns 0, or -1 when out of memory (err). The filter_sql does not
 * point into filter. */
int filter_to_sql(const struct filter *filter, struct filter_sql *out, char *err, size_t err_len);
void filter_sql_free(struct filter_sql *sql);

#endif
