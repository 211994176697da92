/*
 * regexsearch: a PCRE2 search over text of any length that cannot hold a
 * thread, shared by the rewrite rules (rules.c) and filter expressions
 * (filter.c). PCRE2's match limit bounds the work per start position, not
 * per search, so a long subject needs the windows and the clock below.
 *
 * No global state, no I/O; the only allocations are a copy of the match
 * context and the match data, made by regexsearch_init().
 */
#ifndef TAPWIRE_REGEXSEARCH_H
#define TAPWIRE_REGEXSEARCH_H

#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif

#include <pcre2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Start positions one pcre2_match() call may try: at most this many times
 * the match limit's worth of work between two looks at the clock. */
#define REGEXSEARCH_WINDOW_POSITIONS 64
/* What regexsearch_next() returns when the deadline passed (not a PCRE2
 * error code). */
#define REGEXSEARCH_OVER_BUDGET (-100000)

/* The state of one search; fields are private. */
struct regexsearch {
    const pcre2_code *re;
    pcre2_match_context *mc; /* a copy of the caller's: the offset limit changes per call */
    pcre2_match_data *md;    /* the ovector of the last match */
    int64_t deadline_ms;     /* clock_mono_coarse_ms() value past which the search stops */
    uint32_t first_type;     /* PCRE2_INFO_FIRSTCODETYPE: 0 none, 1 a code unit, 2 line start */
    uint32_t first_cu;
    const uint8_t *bitmap; /* PCRE2_INFO_FIRSTBITMAP, or NULL */
    bool is_utf;           /* (*UTF): offsets must stay on character boundaries */
    /* The subject's UTF-8 was validated by the first call: PCRE2 checks
     * from the offset to the end each time, quadratic over windows. */
    bool is_utf_checked;
};

/* Prepares a search of re with the limits of mc (not kept) until
 * deadline_ms. Returns 0, or -1 when out of memory; regexsearch_free() in
 * both cases (a zeroed struct may be freed too). */
int regexsearch_init(struct regexsearch *se, const pcre2_code *re, const pcre2_match_context *mc,
                     int64_t deadline_ms);
void regexsearch_free(struct regexsearch *se);

/* The next match in s[0..len) at or after offset, with pcre2_match()
 * options. Returns what pcre2_match() does (the ovector is
 * pcre2_get_ovector_pointer(se->md)), or REGEXSEARCH_OVER_BUDGET. */
int regexsearch_next(struct regexsearch *se, const unsigned char *s, size_t len, size_t offset,
                     uint32_t options);

/* at, moved forward to a character boundary when the pattern is UTF. */
size_t regexsearch_char_boundary(const struct regexsearch *se, const unsigned char *s, size_t len,
                                 size_t at);

/* A person's reason for a negative result of regexsearch_next() other than
 * PCRE2_ERROR_NOMATCH; budget_what names the budget that ran out
 * ("the rules took longer than 3000 ms"). */
void regexsearch_reason(int code, const char *budget_what, char *why, size_t why_len);

#endif
