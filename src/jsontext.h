/*
 * jsontext: building JSON (jansson) from captured text, for the dashboard's
 * API and the HAR export.
 *
 * Captured text need not be UTF-8 (obs-text in a header, a binary body),
 * and jansson refuses a string that is not: these helpers clean it rather
 * than lose the value. The set and append helpers take the value's
 * reference even when they fail, so a builder can chain them with && and
 * check once.
 */
#ifndef TAPWIRE_JSONTEXT_H
#define TAPWIRE_JSONTEXT_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

/* A JSON string of len bytes of text, each byte that is not part of valid
 * UTF-8 replaced by U+FFFD; JSON null when text is NULL. NULL when out of
 * memory. */
json_t *jsontext_n(const char *text, size_t len);
/* The same for a NUL-terminated text (NULL: JSON null). */
json_t *jsontext_str(const char *text);
/* Sets obj[key] to value, taking it; false when value is NULL (out of
 * memory) or the set failed. */
bool jsontext_set(json_t *obj, const char *key, json_t *value);
/* Appends value to array, taking it; false as above. */
bool jsontext_append(json_t *array, json_t *value);

#endif
