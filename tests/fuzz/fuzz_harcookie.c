/*
 * libFuzzer target for harcookie: the Cookie and Set-Cookie fields of a
 * captured header section (bytes from any client or origin) read into HAR
 * cookie objects. Checked after every call: the result is an array whose
 * every element has a name and a value, and it serialises to JSON.
 *
 * fuzz-sources: src/harcookie.c src/flow.c src/jsontext.c
 * fuzz-libs: jansson
 *
 * The input is taken as a header section; the first byte picks Cookie
 * (even) or Set-Cookie (odd) as the field name of every line, so both
 * readers see mostly their own fields.
 */
#include "harcookie.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *name;
    size_t name_len, i, o = 0;
    char *headers;
    json_t *cookies;
    char *text;

    if (size < 1 || size > 65536)
        return 0;
    name = (data[0] & 1) ? "Set-Cookie: " : "Cookie: ";
    name_len = strlen(name);
    /* Each input line becomes "Name: line\r\n"; a NUL ends the section, as
     * in a stored one. */
    headers = malloc(size * (name_len + 2) + 1);
    CHECK(headers != NULL);
    for (i = 1; i < size; i++) {
        if (i == 1 || data[i - 1] == '\n') {
            memcpy(headers + o, name, name_len);
            o += name_len;
        }
        if (data[i] == '\0')
            break;
        if (data[i] == '\n') {
            headers[o++] = '\r';
            headers[o++] = '\n';
            continue;
        }
        headers[o++] = (char)data[i];
    }
    memcpy(headers + o, "\r\n", 3);
    cookies = (data[0] & 1) ? harcookie_response(headers, 1700000000000000LL)
                            : harcookie_request(headers);
    CHECK(cookies != NULL && json_is_array(cookies));
    for (i = 0; i < json_array_size(cookies); i++) {
        json_t *c = json_array_get(cookies, i);
        CHECK(json_is_string(json_object_get(c, "name")));
        CHECK(json_is_string(json_object_get(c, "value")));
    }
    text = json_dumps(cookies, JSON_COMPACT);
    CHECK(text != NULL);
    free(text);
    json_decref(cookies);
    free(headers);
    return 0;
}
