/*
 * rules: rewrite rules. Parsing the line syntax of tapwire-rules(5), matching
 * a rule's filters against an exchange, rewriting the request-target, header
 * fields and bodies. Keeping rules in SQLite for the dashboard is
 * rulestore's (rulestore.h); this module knows no SQL.
 *
 * A parsed rule set is immutable and reference-counted, so a connection
 * thread holds the set it started an exchange with for the whole exchange
 * (request and response see the same rules) while a reload publishes a new
 * one. Nothing here does network I/O; bodies arrive decoded and bounded.
 * No function keeps a pointer to the caller's buffers after it returns.
 */
#ifndef TAPWIRE_RULES_H
#define TAPWIRE_RULES_H

#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif

#include <pcre2.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RULES_MAX_LINE_BYTES 65536             /* one rule line, or one --rule / API spec */
#define RULES_MAX_FILE_BYTES (4 * 1024 * 1024) /* a whole --rules file */
#define RULES_MAX_RULES 4096                   /* rules in one set, and rows in the table */
#define RULES_MAX_TOKENS 64                    /* words on one line */
#define RULES_MAX_LABEL_BYTES 64               /* name=LABEL, incl. NUL */
#define RULES_MAX_HEADER_NAME_BYTES 128        /* header NAME, incl. NUL */
#define RULES_MAX_LIST_ITEMS 32                /* comma-separated values of one option */
#define RULES_MAX_TARGET_BYTES 8192            /* a rewritten request-target (request line) */
#define RULES_MAX_HEAD_BYTES 65536             /* all rewritten fields, "Name: value\r\n" each */
#define RULES_MAX_CONTENT_TYPE_BYTES 256
#define RULES_ERROR_BYTES 512   /* holds every parse error message in full */
#define RULES_APPLIED_BYTES 512 /* struct rules_ctx.applied */
#define RULES_NOTES_BYTES 1024  /* struct rules_ctx.notes */
/* A mock's body (inline or file=, read when the rule is): a rule set is
 * held in memory by every exchange that uses it. */
#define RULES_MAX_ANSWER_BODY_BYTES (4 * 1024 * 1024)
#define RULES_MAX_ANSWER_FIELDS 32 /* header= options of one mock */
#define RULES_DEFAULT_BLOCK_STATUS 403

/* --rewrite-limit default: bodies larger than this are streamed unmodified. */
#define RULES_DEFAULT_REWRITE_LIMIT_BYTES (16 * 1024 * 1024)
/* A rewritten body may be at most 4 times its input plus this much. */
#define RULES_BODY_GROWTH_SLACK_BYTES (1024 * 1024)

/* PCRE2 limits per match call, so that a catastrophic regex fails fast
 * instead of holding a connection thread. */
#define RULES_MATCH_LIMIT 1000000
#define RULES_DEPTH_LIMIT 100000
#define RULES_HEAP_LIMIT_KIB (16 * 1024)
/* Wall-clock budget for all rules of one rules_apply_*() call; the rules
 * left when it runs out are skipped and the flow says so. */
#define RULES_APPLY_BUDGET_MS 3000

enum rules_phase { RULES_REQUEST = 0, RULES_RESPONSE = 1 };
/* The last three are actions (request rules only): instead of rewriting
 * the request they decide where it goes, or that tapwire answers it. */
enum rules_target {
    RULES_TARGET_URL = 0,
    RULES_TARGET_HEADER = 1,
    RULES_TARGET_BODY = 2,
    RULES_TARGET_MOCK = 3,       /* answer from the proxy (also written map-local) */
    RULES_TARGET_BLOCK = 4,      /* a status page, or the connection closed */
    RULES_TARGET_MAP_REMOTE = 5, /* send the request to another origin */
};
enum rules_header_action {
    RULES_HEADER_NONE = 0, /* targets other than header */
    RULES_HEADER_SET,      /* first field of the name gets the value, others go; or add it */
    RULES_HEADER_REPLACE,  /* pattern replacement inside the values of the name */
    RULES_HEADER_REMOVE,   /* drop the fields of the name (whose value matches, if a pattern) */
};

/* One piece of a regex replacement: literal bytes of the replacement text,
 * or a capture group ($1, ${1}, $name, ${name}) resolved to its number at parse
 * time, so that a reference to a missing group is a parse error. */
struct rule_repl_part {
    int group; /* -1: literal bytes replacement[offset..offset+len) */
    size_t offset;
    size_t len;
};

struct rules_status_range {
    int lo, hi; /* "404" is 404..404, "4xx" is 400..499 */
};

struct filter;
struct flow;

/* Where a map-remote rule sends a request: the parts of its URL. */
struct rules_remote {
    bool is_tls;
    char host[256]; /* without brackets */
    uint16_t port;
    char *authority; /* host[:port] as written: the Host the origin gets */
    char *prefix;    /* path prefix, "" for none; never ends in '/' unless it is "/" */
};

/*
 * A parsed rule. Immutable after parsing and owned by the rule sets that
 * hold it (the reference count is private); read it only through a set you
 * hold a reference to. Lists are NULL with count 0 when the filter is absent
 * (= any). Strings are NUL-terminated; pattern and replacement may also
 * contain NUL bytes (body rules), so use their lengths.
 */
struct rule {
    atomic_long refs;                  /* private */
    int64_t id;                        /* database row id; 0 for rules from a file or --rule */
    int line;                          /* line in its file (1-based); 0 otherwise */
    char label[RULES_MAX_LABEL_BYTES]; /* name=, else "FILE:LINE", "rule N", "#ID" */
    bool has_name;                     /* label came from name= */
    bool is_enabled;
    enum rules_phase phase;
    enum rules_target target;
    char header_name[RULES_MAX_HEADER_NAME_BYTES]; /* target header only */
    enum rules_header_action action;
    bool is_regex;
    bool is_icase;

    char **hosts; /* globs: '*' any run of characters, '?' one; ASCII case-insensitive */
    size_t host_count;
    char *path_prefix; /* request-target starts with it */
    char *path_regex;  /* source of path~REGEX */
    pcre2_code *path_re;
    char **methods; /* case-insensitive */
    size_t method_count;
    struct rules_status_range *statuses; /* response rules only */
    size_t status_count;
    char **types; /* case-insensitive substrings of the Content-Type */
    size_t type_count;

    bool has_pattern; /* false for header set, and for remove without a pattern */
    char *pattern;
    size_t pattern_len;
    char *replacement; /* also the value of header set */
    size_t replacement_len;
    struct filter *match; /* match=EXPR, NULL: any; decided on heads only */
    char *match_text;     /* the expression as written */

    /* Actions. mock: answer_status, answer_fields ("Name: value" each,
     * checked), the body (inline, or read from file_path when the rule was
     * parsed). block: answer_status, or is_close. map-remote: remote. */
    int answer_status;
    bool is_close;
    bool is_map_local; /* written "map-local" */
    char **answer_fields;
    size_t answer_field_count;
    char *answer_body; /* may hold NUL bytes: use answer_body_len */
    size_t answer_body_len;
    char *file_path; /* file= as written */
    char *remote_url;
    struct rules_remote remote;

    pcre2_code *re;                    /* is_regex: compiled pattern (JIT when available) */
    pcre2_match_context *match_ctx;    /* limits above; shared read-only by all threads */
    struct rule_repl_part *repl_parts; /* is_regex: the parsed replacement */
    size_t repl_part_count;
};

/* An immutable ordered list of rules. */
struct rule_set;

/* Takes one more reference. Returns set. */
struct rule_set *rules_set_ref(struct rule_set *set);
/* Drops a reference; the last one frees the set and its rules. NULL is fine. */
void rules_set_unref(struct rule_set *set);
/* An empty set (one reference), or NULL when out of memory. */
struct rule_set *rules_set_new_empty(void);
size_t rules_set_count(const struct rule_set *set);
/* The i-th rule (i < count), valid while the set is held. */
const struct rule *rules_set_get(const struct rule_set *set, size_t i);
/*
 * A new set with the rules of parts[0], then parts[1], ... in order, sharing
 * the parsed rules (nothing is recompiled). NULL parts are skipped. Used to
 * combine --rules FILE, --rule and the database into the set that is
 * published. Returns NULL when out of memory or past RULES_MAX_RULES (err).
 */
struct rule_set *rules_set_concat(struct rule_set *const *parts, size_t count, char *err,
                                  size_t err_len);

/*
 * The set in effect. Readers call rules_acquire() once per exchange and
 * rules_set_unref() when it ends; the reload paths call rules_publish().
 * See rules.c for why a mutex held for one pointer copy and one atomic
 * increment does not serialise connections.
 */
struct rules_current {
    pthread_mutex_t lock; /* guards set: only the pointer copy and the increment */
    struct rule_set *set;
};

/* Starts with an empty set. Returns 0, or -1 when out of memory. */
int rules_current_init(struct rules_current *cur);
void rules_current_destroy(struct rules_current *cur);
/* Makes set current from the next rules_acquire() on. Takes its own
 * reference: the caller still owns (and unrefs) the one it passed. */
void rules_publish(struct rules_current *cur, struct rule_set *set);
/* The current set with a new reference (never NULL after init): caller
 * drops it with rules_set_unref(). */
struct rule_set *rules_acquire(struct rules_current *cur);

/*
 * Parsing (syntax: tapwire-rules(5)). All or nothing: on error nothing is
 * returned and err names the place, e.g. "line 3, column 17: unterminated
 * quote" (rules_parse_text) or "column 17: unterminated quote" (one spec).
 * Sets are returned with one reference (caller: rules_set_unref()).
 */

/* A whole file's text. origin (e.g. the file name) makes the default labels
 * "ORIGIN:LINE" of rules without name=. A relative file= is read from the
 * working directory (rules_load_file(): from the rules file's). */
int rules_parse_text(const char *text, size_t len, const char *origin, struct rule_set **out,
                     char *err, size_t err_len);

/* One line, e.g. from --rule or the API; must hold exactly one rule (a
 * blank line or comment is an error). default_label: label without name=. */
int rules_parse_spec(const char *spec, size_t len, const char *default_label, struct rule_set **out,
                     char *err, size_t err_len);

/* One row of the rules table (rulestore.h) as a set of one rule: the
 * default label is "#ID", the rule's id is id, and it is disabled when its
 * spec says so or is_enabled is false. Returns 0 with *out; -1 when spec
 * does not parse (err "column C: ..."), -2 when out of memory. file= is
 * refused: the dashboard must not read files of the proxy's machine (the
 * CA key among them) through a mock. */
int rules_parse_stored(const char *spec, int64_t id, bool is_enabled, struct rule_set **out,
                       char *err, size_t err_len);

/* Each of specs[0..count) as one rule, in order (the --rule options), with
 * default labels "rule N" (1-based) and errors "rule N: column C: ...". */
int rules_parse_specs(const char *const *specs, size_t count, struct rule_set **out, char *err,
                      size_t err_len);

/* Reads and parses path (at most RULES_MAX_FILE_BYTES); errors are prefixed
 * with the path. The SIGHUP handler in main publishes *out only on success,
 * so a reload that fails keeps the previous rules. */
int rules_load_file(const char *path, struct rule_set **out, char *err, size_t err_len);

/*
 * The rule as one line of the syntax, in canonical form (fixed option order,
 * patterns quoted), such that parsing it gives the same rule. "disabled" is
 * written when the rule is disabled; name= only when it had one.
 * Returns a malloc'd string (caller frees), or NULL when out of memory.
 */
char *rules_format(const struct rule *rule);
/* The canonical line without "disabled", as the rules table stores it (its
 * enabled flag has a column of its own). Caller frees; NULL when out of
 * memory. */
char *rules_format_as_stored(const struct rule *rule);

/*
 * What the rules know about one exchange. The caller fills it per phase;
 * the apply functions update target and content_type as rules change them
 * (a later rule filters on what an earlier one made) and collect what was
 * applied and what was skipped, for the flow record.
 */
struct rules_ctx {
    enum rules_phase phase;
    char method[32];
    char host[256]; /* without port */
    char *target;   /* owned: origin-form request-target, path and query */
    int status;     /* response phase */
    /* The exchange as a flow for match= (borrowed; the caller keeps it
     * current: the request as it arrived, then the response too). NULL: a
     * rule with match= does not apply. */
    const struct flow *flow;
    char content_type[RULES_MAX_CONTENT_TYPE_BYTES]; /* of the message of the phase */
    char applied[RULES_APPLIED_BYTES]; /* labels of rules that changed something, ", " */
    char notes[RULES_NOTES_BYTES];     /* why a matching rule was skipped, "; " */
};

/* Request phase, no status, no content type. Returns 0 or -1 (no memory). */
int rules_ctx_init(struct rules_ctx *ctx, const char *method, const char *host, const char *target);
/* Switches to the response phase of the same exchange. */
void rules_ctx_set_response(struct rules_ctx *ctx, int status, const char *content_type);
/* Content-Type of the message of the current phase; NULL for none. */
void rules_ctx_set_content_type(struct rules_ctx *ctx, const char *content_type);
void rules_ctx_free(struct rules_ctx *ctx);
/* "label, label" plus "; notes" when there are any, for flow->rules; NULL
 * when nothing was applied or noted. Caller frees. */
char *rules_ctx_summary(const struct rules_ctx *ctx);

/*
 * Request-target: applies the request-phase url rules in order to
 * ctx->target. Returns 0 with *out a malloc'd new target (caller frees;
 * ctx->target is the same text) or NULL when unchanged; -1 when out of
 * memory (*out NULL, forward unchanged). A result that is not a valid
 * request-target (space, control or non-ASCII byte, longer than
 * RULES_MAX_TARGET_BYTES, no longer starting with '/') skips that rule.
 */
int rules_apply_url(const struct rule_set *set, struct rules_ctx *ctx, char **out);

/* Whether some rule of set has match= (the caller then fills ctx->flow). */
bool rules_set_has_match(const struct rule_set *set);

/*
 * The action for the request: the first enabled mock, block or map-remote
 * rule whose options (and match=) select the exchange, noted as applied;
 * NULL when none. Call after the url and header rules.
 */
const struct rule *rules_find_action(const struct rule_set *set, struct rules_ctx *ctx);

/*
 * The request-target a map-remote rule sends for target (origin-form):
 * its prefix in place of path= when the rule has one, else in front.
 * Returns a malloc'd target (caller frees), or NULL when out of memory or
 * past RULES_MAX_TARGET_BYTES.
 */
char *rules_remote_target(const struct rule *rule, const char *target);

/* A header field. Same layout as struct message_field: not NUL-terminated. */
struct rules_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

/* A rewritten field list; the strings live in storage. */
struct rules_headers {
    struct rules_header *fields;
    size_t count;
    char *storage; /* private */
};
void rules_headers_free(struct rules_headers *list);

/*
 * Header fields of the message of ctx->phase: applies the header rules in
 * order to in[0..in_count). Returns 0 with *out filled when something
 * changed (free with rules_headers_free()) or zeroed when unchanged; -1 when
 * out of memory. A result value with CR, LF, NUL or another control
 * character, or a head past RULES_MAX_HEAD_BYTES, skips the rule, so a
 * rule can never add a header line. A Content-Type a rule set also becomes
 * ctx->content_type for the body rules.
 */
int rules_apply_headers(const struct rule_set *set, struct rules_ctx *ctx,
                        const struct rules_header *in, size_t in_count, struct rules_headers *out);

/*
 * True when some enabled body rule of ctx->phase matches the exchange, i.e.
 * the caller should buffer and decode the body (up to the rewrite limit)
 * and call rules_apply_body(). Call after rules_apply_headers() for the
 * phase. Never true for a 206 response: a range of a body is not the body,
 * and rewriting it would corrupt the client's reassembly (noted in ctx).
 */
bool rules_wants_body(const struct rule_set *set, struct rules_ctx *ctx);

/*
 * Body of the message of ctx->phase (decoded). Returns 0 with *out a
 * malloc'd new body of *out_len bytes (caller frees) or *out NULL when
 * unchanged; -1 when out of memory. A rule whose output would pass
 * min(4 * in_len + RULES_BODY_GROWTH_SLACK_BYTES, max_out) (max_out 0: no
 * second bound), or that hits a PCRE2 limit, is skipped as a whole and the
 * reason goes to ctx->notes; the other rules still apply.
 */
int rules_apply_body(const struct rule_set *set, struct rules_ctx *ctx, const unsigned char *in,
                     size_t in_len, size_t max_out, unsigned char **out, size_t *out_len);

#endif
