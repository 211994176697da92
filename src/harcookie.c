/*
 * harcookie: the cookies of captured header sections as HAR 1.2 cookie
 * objects. The fields come from any client and any origin, so every piece
 * is read within its bounds and a value that is not what it claims to be
 * (a date, a number) is left out rather than guessed at; a libFuzzer target
 * (tests/fuzz/fuzz_harcookie.c) runs both readers.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "harcookie.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "flow.h"
#include "jsontext.h"

void harcookie_iso8601(int64_t us, char *out, size_t out_len)
{
    time_t secs = (time_t)(us / 1000000);
    struct tm tm;
    size_t n = 0;

    if (gmtime_r(&secs, &tm) != NULL)
        n = strftime(out, out_len, "%Y-%m-%dT%H:%M:%S", &tm);
    if (n == 0) {
        snprintf(out, out_len, "1970-01-01T00:00:00.000Z");
        return;
    }
    snprintf(out + n, out_len - n, ".%03dZ", (int)((us % 1000000) / 1000));
}

static void trim_blanks(const char **s, size_t *len)
{
    while (*len > 0 && (**s == ' ' || **s == '\t')) {
        (*s)++;
        (*len)--;
    }
    while (*len > 0 && ((*s)[*len - 1] == ' ' || (*s)[*len - 1] == '\t'))
        (*len)--;
}

/* The next ';'-separated element of s[*pos..len), trimmed; false at the end. */
static bool next_element(const char *s, size_t len, size_t *pos, const char **elem,
                         size_t *elem_len)
{
    const char *semi;

    if (*pos >= len)
        return false;
    *elem = s + *pos;
    semi = memchr(*elem, ';', len - *pos);
    *elem_len = semi != NULL ? (size_t)(semi - *elem) : len - *pos;
    *pos += *elem_len + (semi != NULL);
    trim_blanks(elem, elem_len);
    return true;
}

/* A cookie object from "name=value": RFC 6265bis 5.6 step 4, without an
 * "=" the name is empty and the whole pair is the value. */
static json_t *cookie_new(const char *pair, size_t len)
{
    const char *eq = memchr(pair, '=', len);
    const char *name = pair, *value = pair;
    size_t name_len = 0, value_len = len;
    json_t *cookie = json_object();

    if (eq != NULL) {
        name_len = (size_t)(eq - pair);
        value = eq + 1;
        value_len = len - name_len - 1;
        trim_blanks(&name, &name_len);
        trim_blanks(&value, &value_len);
    }
    if (cookie == NULL || !jsontext_set(cookie, "name", jsontext_n(name, name_len)) ||
        !jsontext_set(cookie, "value", jsontext_n(value, value_len))) {
        json_decref(cookie);
        return NULL;
    }
    return cookie;
}

/* RFC 6265 5.1.1: the delimiters between the tokens of a cookie-date. */
static bool is_date_delimiter(unsigned char c)
{
    return c == 0x09 || (c >= 0x20 && c <= 0x2f) || (c >= 0x3b && c <= 0x40) ||
           (c >= 0x5b && c <= 0x60) || (c >= 0x7b && c <= 0x7e);
}

/*
 * An Expires attribute read the way browsers read it (RFC 6265 5.1.1: a
 * time, a day of month, a month name and a year, in any order, so that
 * "Wed, 09-Jun-21 10:18:14 GMT" works too) as ISO 8601, which HAR asks
 * for. False when it is not a date.
 */
static bool cookie_date_iso(const char *s, size_t len, char *out, size_t out_len)
{
    static const char months[] = "janfebmaraprmayjunjulaugsepoctnovdec";
    int hour = -1, minute = 0, second = 0, day = -1, month = -1, year = -1;
    size_t i = 0;

    while (i < len) {
        char token[32];
        size_t start, n, digits = 0;

        while (i < len && is_date_delimiter((unsigned char)s[i]))
            i++;
        start = i;
        while (i < len && !is_date_delimiter((unsigned char)s[i]))
            i++;
        n = i - start;
        if (n == 0 || n >= sizeof(token))
            continue;
        memcpy(token, s + start, n);
        token[n] = '\0';
        while (digits < n && token[digits] >= '0' && token[digits] <= '9')
            digits++;
        if (hour < 0 && strchr(token, ':') != NULL) {
            if (sscanf(token, "%2d:%2d:%2d", &hour, &minute, &second) != 3)
                hour = -1;
        } else if (day < 0 && (digits == 1 || digits == 2)) {
            day = atoi(token);
        } else if (month < 0 && digits == 0 && n >= 3) {
            for (int m = 0; m < 12; m++) {
                if (strncasecmp(token, months + 3 * m, 3) == 0)
                    month = m + 1;
            }
        } else if (year < 0 && digits >= 2 && digits <= 4) {
            year = atoi(token);
        }
    }
    if (year >= 70 && year <= 99)
        year += 1900;
    else if (year >= 0 && year <= 69)
        year += 2000;
    if (hour < 0 || hour > 23 || minute > 59 || second > 59 || day < 1 || day > 31 || month < 0 ||
        year < 1601)
        return false;
    snprintf(out, out_len, "%04d-%02d-%02dT%02d:%02d:%02d.000Z", year, month, day, hour, minute,
             second);
    return true;
}

/* The request's cookies: every pair of every Cookie field (RFC 6265 5.4). */
json_t *harcookie_request(const char *headers)
{
    json_t *array = json_array();
    const char *name, *value, *pair;
    size_t name_len, value_len, pair_len;
    size_t pos = 0;

    while (array != NULL &&
           flow_headers_next(headers, &pos, &name, &name_len, &value, &value_len)) {
        size_t at = 0;

        if (name_len != 6 || strncasecmp(name, "Cookie", 6) != 0)
            continue;
        while (array != NULL && next_element(value, value_len, &at, &pair, &pair_len)) {
            if (pair_len > 0 && !jsontext_append(array, cookie_new(pair, pair_len))) {
                json_decref(array);
                array = NULL;
            }
        }
    }
    return array;
}

/* The attributes of one Set-Cookie (RFC 6265 5.2) into cookie. Max-Age wins
 * over Expires (5.3 step 3) and counts from received_us. */
static bool cookie_attributes(json_t *cookie, const char *s, size_t len, size_t pos,
                              int64_t received_us)
{
    const char *attr;
    size_t attr_len;
    bool has_max_age = false;
    bool is_ok = true;

    while (is_ok && next_element(s, len, &pos, &attr, &attr_len)) {
        const char *eq = memchr(attr, '=', attr_len);
        const char *key = attr, *value = "";
        size_t key_len = eq != NULL ? (size_t)(eq - attr) : attr_len, value_len = 0;
        char date[80]; /* room for any int the compiler cannot bound */

        if (eq != NULL) {
            value = eq + 1;
            value_len = attr_len - key_len - 1;
            trim_blanks(&value, &value_len);
        }
        trim_blanks(&key, &key_len);
        if (key_len == 4 && strncasecmp(key, "Path", 4) == 0) {
            is_ok = jsontext_set(cookie, "path", jsontext_n(value, value_len));
        } else if (key_len == 6 && strncasecmp(key, "Domain", 6) == 0) {
            is_ok = jsontext_set(cookie, "domain", jsontext_n(value, value_len));
        } else if (key_len == 7 && strncasecmp(key, "Expires", 7) == 0) {
            if (!has_max_age && cookie_date_iso(value, value_len, date, sizeof(date)))
                is_ok = jsontext_set(cookie, "expires", json_string(date));
        } else if (key_len == 7 && strncasecmp(key, "Max-Age", 7) == 0) {
            bool is_negative = value_len > 0 && value[0] == '-';
            int64_t secs = 0;
            size_t i = is_negative;

            /* RFC 6265bis 5.6.2: a Max-Age is capped at 400 days. */
            for (; i < value_len && value[i] >= '0' && value[i] <= '9'; i++)
                secs = secs < HARCOOKIE_MAX_AGE_SECS ? secs * 10 + (value[i] - '0') : secs;
            if (i == (size_t)is_negative || i != value_len)
                continue; /* not a number: ignored (5.2.2) */
            if (secs > HARCOOKIE_MAX_AGE_SECS)
                secs = HARCOOKIE_MAX_AGE_SECS;
            harcookie_iso8601(is_negative || secs == 0 ? 0 : received_us + secs * 1000000, date,
                              sizeof(date));
            has_max_age = true;
            is_ok = jsontext_set(cookie, "expires", json_string(date));
        } else if (key_len == 8 && strncasecmp(key, "HttpOnly", 8) == 0) {
            is_ok = jsontext_set(cookie, "httpOnly", json_true());
        } else if (key_len == 6 && strncasecmp(key, "Secure", 6) == 0) {
            is_ok = jsontext_set(cookie, "secure", json_true());
        }
    }
    return is_ok;
}

/* The response's cookies: one per Set-Cookie field, with its attributes. */
json_t *harcookie_response(const char *headers, int64_t received_us)
{
    json_t *array = json_array();
    const char *name, *value, *pair;
    size_t name_len, value_len, pair_len;
    size_t pos = 0;

    while (array != NULL &&
           flow_headers_next(headers, &pos, &name, &name_len, &value, &value_len)) {
        size_t at = 0;
        json_t *cookie;

        if (name_len != 10 || strncasecmp(name, "Set-Cookie", 10) != 0 ||
            !next_element(value, value_len, &at, &pair, &pair_len) || pair_len == 0)
            continue;
        cookie = cookie_new(pair, pair_len);
        if (!jsontext_append(array, cookie) ||
            !cookie_attributes(cookie, value, value_len, at, received_us)) {
            json_decref(array);
            array = NULL;
        }
    }
    return array;
}
