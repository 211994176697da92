/*
 * dashinteract: see dashinteract.h. JSON in, the intercept and replay
 * modules' C types out, and back.
 */
#include "dashinteract.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filter.h"
#include "flow.h"
#include "jsontext.h"
#include "log.h"

#define HTTP_OK 200
#define HTTP_BAD_REQUEST 400
#define HTTP_NOT_FOUND 404
#define HTTP_CONFLICT 409
#define HTTP_SERVER_ERROR 500

static unsigned error_reply(unsigned status, const char *message, json_t **reply)
{
    *reply = json_object();
    if (*reply != NULL && !jsontext_set(*reply, "error", jsontext_str(message))) {
        json_decref(*reply);
        *reply = NULL;
    }
    return status;
}

unsigned dashinteract_filter(struct intercept *ic, json_t **reply)
{
    char *text = intercept_filter_text(ic);

    *reply = json_object();
    if (text == NULL || *reply == NULL || !jsontext_set(*reply, "filter", jsontext_str(text))) {
        json_decref(*reply);
        *reply = NULL;
    }
    free(text);
    return HTTP_OK;
}

unsigned dashinteract_set_filter(struct intercept *ic, json_t *body, json_t **reply)
{
    json_t *filter = json_object_get(body, "filter");
    char err[FILTER_ERROR_BYTES];

    if (!json_is_string(filter))
        return error_reply(HTTP_BAD_REQUEST, "\"filter\" must be a string (\"\" turns it off)",
                           reply);
    if (intercept_set_filter(ic, json_string_value(filter), json_string_length(filter), err,
                             sizeof(err)) < 0)
        return error_reply(HTTP_BAD_REQUEST, err, reply);
    log_info("dashboard: intercept filter %s%s", json_string_length(filter) ? "set to " : "off",
             json_string_value(filter));
    return dashinteract_filter(ic, reply);
}

/* Header lines as [[name, value], ...]. */
static json_t *fields_json(const char *text)
{
    json_t *array = json_array();
    const char *name, *value;
    size_t name_len, value_len, pos = 0;

    while (array != NULL && flow_headers_next(text, &pos, &name, &name_len, &value, &value_len)) {
        json_t *pair = json_array();
        if (!jsontext_append(array, pair) || !jsontext_append(pair, jsontext_n(name, name_len)) ||
            !jsontext_append(pair, jsontext_n(value, value_len))) {
            json_decref(array);
            array = NULL;
        }
    }
    return array;
}

static json_t *waiting_json(const struct intercept_waiting *w)
{
    const struct intercept_message *m = &w->msg;
    json_t *o = json_object();
    bool is_text = m->has_body && flow_is_text(m->body, m->body_len);
    bool ok =
        o != NULL && jsontext_set(o, "id", json_integer((json_int_t)w->id)) &&
        jsontext_set(o, "side", json_string(m->is_response ? "response" : "request")) &&
        jsontext_set(o, "method", jsontext_str(m->method)) &&
        jsontext_set(o, "url", jsontext_str(m->url)) &&
        jsontext_set(o, "status", m->is_response ? json_integer(m->status) : json_null()) &&
        jsontext_set(o, "headers", fields_json(m->headers)) &&
        jsontext_set(o, "body_held", json_boolean(m->has_body)) &&
        /* A body that is not text is shown replaced (U+FFFD) and is not
         * editable as text: the page says so. */
        jsontext_set(o, "body_is_text", json_boolean(is_text || !m->has_body)) &&
        jsontext_set(o, "body",
                     m->has_body ? jsontext_n((const char *)m->body, m->body_len) : json_null()) &&
        jsontext_set(o, "since", json_real((double)w->since_us / 1000.0)) &&
        jsontext_set(o, "deadline", json_real((double)w->deadline_us / 1000.0));

    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

unsigned dashinteract_list(struct intercept *ic, json_t **reply)
{
    struct intercept_waiting *list = NULL;
    size_t count = 0;
    json_t *flows;
    char *filter = NULL;

    if (intercept_list(ic, &list, &count) < 0)
        return error_reply(HTTP_SERVER_ERROR, "out of memory", reply);
    flows = json_array();
    filter = intercept_filter_text(ic);
    for (size_t i = 0; flows != NULL && i < count; i++)
        if (!jsontext_append(flows, waiting_json(&list[i]))) {
            json_decref(flows);
            flows = NULL;
        }
    *reply = json_object();
    if (*reply != NULL && (!jsontext_set(*reply, "flows", flows) ||
                           !jsontext_set(*reply, "filter", jsontext_str(filter)))) {
        json_decref(*reply);
        *reply = NULL;
    } else if (*reply == NULL) {
        json_decref(flows);
    }
    free(filter);
    intercept_waiting_free(list, count);
    return HTTP_OK;
}

unsigned dashinteract_resume_all(struct intercept *ic, json_t **reply)
{
    size_t n = intercept_resume_all(ic);

    *reply = json_pack("{s:I}", "resumed", (json_int_t)n);
    return HTTP_OK;
}

/* A string member copied, or NULL when absent; false when it is there and
 * not a string (or memory ran out). */
static bool take_string(json_t *body, const char *key, char **out, char *err, size_t err_len)
{
    json_t *v = json_object_get(body, key);

    *out = NULL;
    if (v == NULL || json_is_null(v))
        return true;
    if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v)) {
        snprintf(err, err_len, "\"%s\" must be a string without NUL", key);
        return false;
    }
    *out = strdup(json_string_value(v));
    if (*out == NULL)
        snprintf(err, err_len, "out of memory");
    return *out != NULL;
}

/* The edits in body (an object) into *e. Returns 0, or -1 with err. */
static int parse_edit(json_t *body, struct intercept_edit *e, char *err, size_t err_len)
{
    json_t *status, *headers, *text;

    memset(e, 0, sizeof(*e));
    if (!take_string(body, "method", &e->method, err, err_len) ||
        !take_string(body, "url", &e->url, err, err_len))
        return -1;
    status = json_object_get(body, "status");
    if (status != NULL && !json_is_null(status)) {
        if (!json_is_integer(status) || json_integer_value(status) < 100 ||
            json_integer_value(status) > 999) {
            snprintf(err, err_len, "\"status\" must be a number from 100 to 999");
            return -1;
        }
        e->status = (int)json_integer_value(status);
    }
    headers = json_object_get(body, "headers");
    if (headers != NULL && !json_is_null(headers)) {
        size_t n = json_array_size(headers);
        if (!json_is_array(headers) || n > INTERCEPT_MAX_EDIT_FIELDS) {
            snprintf(err, err_len, "\"headers\" must be an array of at most %d [name, value]",
                     INTERCEPT_MAX_EDIT_FIELDS);
            return -1;
        }
        e->has_fields = true;
        e->fields = calloc(n > 0 ? n : 1, sizeof(*e->fields));
        if (e->fields == NULL) {
            snprintf(err, err_len, "out of memory");
            return -1;
        }
        for (size_t i = 0; i < n; i++) {
            json_t *pair = json_array_get(headers, i);
            json_t *name = json_array_get(pair, 0), *value = json_array_get(pair, 1);
            if (!json_is_array(pair) || json_array_size(pair) != 2 || !json_is_string(name) ||
                !json_is_string(value) ||
                strlen(json_string_value(name)) != json_string_length(name) ||
                strlen(json_string_value(value)) != json_string_length(value)) {
                snprintf(err, err_len, "header %zu must be [name, value], two strings", i + 1);
                return -1;
            }
            e->fields[i].name = strdup(json_string_value(name));
            e->fields[i].value = strdup(json_string_value(value));
            e->field_count = i + 1;
            if (e->fields[i].name == NULL || e->fields[i].value == NULL) {
                snprintf(err, err_len, "out of memory");
                return -1;
            }
        }
    }
    text = json_object_get(body, "body");
    if (text != NULL && !json_is_null(text)) {
        size_t len = json_string_length(text);
        if (!json_is_string(text)) {
            snprintf(err, err_len, "\"body\" must be a string (the body as text)");
            return -1;
        }
        if (len > INTERCEPT_MAX_BODY_BYTES) {
            snprintf(err, err_len, "\"body\" is larger than %d bytes", INTERCEPT_MAX_BODY_BYTES);
            return -1;
        }
        e->has_body = true;
        e->body_len = len;
        e->body = malloc(len > 0 ? len : 1);
        if (e->body == NULL) {
            snprintf(err, err_len, "out of memory");
            return -1;
        }
        memcpy(e->body, json_string_value(text), len);
    }
    return 0;
}

unsigned dashinteract_resume(struct intercept *ic, int64_t id, json_t *body, json_t **reply)
{
    struct intercept_edit e = {0};
    char err[INTERCEPT_ERROR_BYTES];
    int rc;

    if (body != NULL && parse_edit(body, &e, err, sizeof(err)) < 0) {
        intercept_edit_free(&e);
        return error_reply(HTTP_BAD_REQUEST, err, reply);
    }
    rc = intercept_resume(ic, (uint64_t)id, body != NULL ? &e : NULL, err, sizeof(err));
    if (rc == INTERCEPT_NOT_FOUND)
        return error_reply(HTTP_NOT_FOUND, err, reply);
    if (rc == INTERCEPT_CONFLICT)
        return error_reply(HTTP_CONFLICT, err, reply);
    if (rc < 0)
        return error_reply(HTTP_BAD_REQUEST, err, reply);
    *reply = json_pack("{s:I}", "resumed", (json_int_t)id);
    return HTTP_OK;
}

unsigned dashinteract_drop(struct intercept *ic, int64_t id, json_t **reply)
{
    if (intercept_drop(ic, (uint64_t)id) == INTERCEPT_NOT_FOUND)
        return error_reply(HTTP_NOT_FOUND, "no flow waits with that id (any more)", reply);
    *reply = json_pack("{s:I}", "dropped", (json_int_t)id);
    return HTTP_OK;
}

unsigned dashinteract_replay(struct replay *rp, int64_t id, json_t *body, json_t **reply)
{
    struct intercept_edit e = {0};
    char err[REPLAY_ERROR_BYTES];
    int64_t new_id = 0;
    unsigned status = HTTP_OK;
    int rc;

    if (body != NULL && parse_edit(body, &e, err, sizeof(err)) < 0) {
        status = error_reply(HTTP_BAD_REQUEST, err, reply);
        goto out;
    }
    if (id == 0 && body == NULL) {
        status = error_reply(HTTP_BAD_REQUEST, "a new request needs a JSON body with a url", reply);
        goto out;
    }
    rc = replay_run(rp, id, body != NULL ? &e : NULL, &new_id, err, sizeof(err));
    if (rc != 0) {
        status = error_reply(rc == REPLAY_NOT_FOUND   ? HTTP_NOT_FOUND
                             : rc == REPLAY_INVALID   ? HTTP_BAD_REQUEST
                             : rc == REPLAY_TRUNCATED ? HTTP_CONFLICT
                                                      : HTTP_SERVER_ERROR,
                             err, reply);
        goto out;
    }
    *reply = json_pack("{s:I}", "id", (json_int_t)new_id);
    if (*reply != NULL && id > 0)
        json_object_set_new(*reply, "replay_of", json_integer((json_int_t)id));
out:
    intercept_edit_free(&e);
    return status;
}
