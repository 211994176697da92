/*
 * regexsearch: PCRE2 searches bounded by windows of start positions and a
 * deadline (see regexsearch.h). Moved out of rules.c so that filter
 * expressions search bodies under the same guarantees.
 */
#include "regexsearch.h"

#include "clock.h"
#include "errmsg.h"

#include <stdio.h>
#include <string.h>

static unsigned char fold(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c + ('a' - 'A')) : c;
}

/* pcre2_match() that falls back from JIT to the interpreter when the JIT
 * stack (32 KiB by default) is too small for the pattern; the interpreter
 * keeps its frames on the heap, bounded by the context's heap limit. */
static int run_match(const pcre2_code *re, pcre2_match_context *mc, const unsigned char *s,
                     size_t len, size_t offset, uint32_t options, pcre2_match_data *md)
{
    int rc = pcre2_match(re, s, len, offset, options, md, mc);

    if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
        rc = pcre2_match(re, s, len, offset, options | PCRE2_NO_JIT, md, mc);
    return rc;
}

/*
 * A regex search that looks at the clock. PCRE2's match limit counts
 * backtracking per start position and starts again at the next one, so a
 * regex whose cost grows with the text (for example "(a.*z|q)" on a body
 * without a z, in the interpreter) passes the limit at every position and
 * still takes hours over 16 MiB. regexsearch_next() therefore lets one pcre2_match()
 * call try at most REGEXSEARCH_WINDOW_POSITIONS start positions (the offset
 * limit) and checks the budget between calls.
 *
 * Each call's own start-of-match scan (memchr for the first byte, the
 * start bitmap, the next line start) may run far past its window; to keep
 * the total linear, the next window starts at the next position where a
 * match could start, found with the same facts PCRE2 uses (a superset of
 * them, never skipping a real start).
 *
 * The price: a backtracking verb that ends the whole search, such as
 * (*COMMIT), ends it only for the current window.
 */
int regexsearch_init(struct regexsearch *se, const pcre2_code *re, const pcre2_match_context *mc,
                     int64_t deadline_ms)
{
    uint32_t all = 0;

    memset(se, 0, sizeof(*se));
    se->re = re;
    se->deadline_ms = deadline_ms;
    se->mc = pcre2_match_context_copy((pcre2_match_context *)(uintptr_t)mc);
    se->md = pcre2_match_data_create_from_pattern(re, NULL);
    if (se->mc == NULL || se->md == NULL)
        return -1;
    pcre2_pattern_info(re, PCRE2_INFO_ALLOPTIONS, &all);
    pcre2_pattern_info(re, PCRE2_INFO_FIRSTCODETYPE, &se->first_type);
    pcre2_pattern_info(re, PCRE2_INFO_FIRSTCODEUNIT, &se->first_cu);
    pcre2_pattern_info(re, PCRE2_INFO_FIRSTBITMAP, &se->bitmap);
    se->is_utf = (all & PCRE2_UTF) != 0;
    return 0;
}

void regexsearch_free(struct regexsearch *se)
{
    pcre2_match_context_free(se->mc);
    pcre2_match_data_free(se->md);
    se->mc = NULL;
    se->md = NULL;
}

size_t regexsearch_char_boundary(const struct regexsearch *se, const unsigned char *s, size_t len,
                                 size_t at)
{
    while (se->is_utf && at < len && (s[at] & 0xc0) == 0x80)
        at++;
    return at;
}

/* The first position >= from where a match could start (len when none
 * before the end; an empty match at len is PCRE2's to judge). */
static size_t next_candidate(const struct regexsearch *se, const unsigned char *s, size_t len,
                             size_t from)
{
    if (se->bitmap != NULL) {
        while (from < len && (se->bitmap[s[from] / 8] & (1u << (s[from] % 8))) == 0)
            from++;
    } else if (se->first_type == 1 && !se->is_utf) {
        /* Either ASCII case: the pattern may be caseless. */
        unsigned char c = fold((unsigned char)se->first_cu);

        while (from < len && fold(s[from]) != c)
            from++;
    } else if (se->first_type == 2) {
        /* After any byte that ends a line in some newline convention the
         * pattern may choose: LF, CR, VT, FF, NEL and the last byte of
         * U+2028/U+2029. */
        while (from > 0 && from < len && strchr("\n\r\v\f\x85\xa8\xa9", s[from - 1]) == NULL)
            from++;
    }
    return regexsearch_char_boundary(se, s, len, from);
}

/* pcre2_match() from offset with the clock checked between windows of
 * start positions. Returns what pcre2_match() does, or REGEXSEARCH_OVER_BUDGET. */
int regexsearch_next(struct regexsearch *se, const unsigned char *s, size_t len, size_t offset,
                     uint32_t options)
{
    for (;;) {
        size_t limit = PCRE2_UNSET;
        int rc;

        if (!(options & PCRE2_ANCHORED)) {
            offset = next_candidate(se, s, len, offset);
            if (clock_mono_coarse_ms() > se->deadline_ms)
                return REGEXSEARCH_OVER_BUDGET;
            limit = len - offset > REGEXSEARCH_WINDOW_POSITIONS
                        ? offset + REGEXSEARCH_WINDOW_POSITIONS
                        : len;
        }
        pcre2_set_offset_limit(se->mc, limit);
        rc = run_match(se->re, se->mc, s, len, offset,
                       options | (se->is_utf_checked ? PCRE2_NO_UTF_CHECK : 0), se->md);
        /* Any result but a UTF error means the whole subject was valid. */
        if (se->is_utf && (rc >= 0 || rc == PCRE2_ERROR_NOMATCH))
            se->is_utf_checked = true;
        if (rc != PCRE2_ERROR_NOMATCH || limit >= len)
            return rc;
        offset = regexsearch_char_boundary(se, s, len, limit + 1);
    }
}

void regexsearch_reason(int code, const char *budget_what, char *why, size_t why_len)
{
    PCRE2_UCHAR msg[200];

    switch (code) {
    case PCRE2_ERROR_MATCHLIMIT:
        errmsg_set(why, why_len, "regex match limit reached (the regex backtracks too much)");
        break;
    case PCRE2_ERROR_DEPTHLIMIT:
        errmsg_set(why, why_len, "regex depth limit reached");
        break;
    case PCRE2_ERROR_HEAPLIMIT:
        errmsg_set(why, why_len, "regex heap limit reached");
        break;
    case REGEXSEARCH_OVER_BUDGET:
        errmsg_set(why, why_len, "%s", budget_what);
        break;
    default:
        if (pcre2_get_error_message(code, msg, sizeof(msg)) < 0)
            errmsg_set(why, why_len, "regex error %d", code);
        else
            errmsg_set(why, why_len, "regex error: %s", (const char *)msg);
    }
}
