/*
 * jsontext: JSON strings from captured text, and the reference-taking set
 * and append the JSON builders chain.
 */
#include "jsontext.h"

#include <stdlib.h>
#include <string.h>

#include "flow.h"

json_t *jsontext_n(const char *text, size_t len)
{
    json_t *value;
    char *clean;
    size_t clean_len;

    if (text == NULL)
        return json_null();
    value = json_stringn(text, len);
    if (value != NULL)
        return value;
    /* Not UTF-8 (obs-text in a header): jansson refuses it as it is. */
    clean = flow_text_utf8(text, len, &clean_len);
    if (clean == NULL)
        return NULL;
    value = json_stringn(clean, clean_len);
    free(clean);
    return value;
}

json_t *jsontext_str(const char *text)
{
    return jsontext_n(text, text != NULL ? strlen(text) : 0);
}

bool jsontext_set(json_t *obj, const char *key, json_t *value)
{
    return value != NULL && json_object_set_new(obj, key, value) == 0;
}

bool jsontext_append(json_t *array, json_t *value)
{
    return value != NULL && json_array_append_new(array, value) == 0;
}
