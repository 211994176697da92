/*
 * dashinteract: the dashboard's JSON API for working with traffic, over the
 * intercept room (intercept.h) and replay (replay.h):
 *
 *   GET  /api/intercept              {"filter": "..."}        ("" when off)
 *   PUT  /api/intercept              {"filter": "..."}        400 with the column
 *   GET  /api/intercepted            {"flows": [waiting...]}  oldest first
 *   POST /api/intercepted/resume-all                          {"resumed": N}
 *   POST /api/flows/ID/resume        optional edits           (ID from /api/intercepted)
 *   POST /api/flows/ID/drop
 *   POST /api/flows/ID/replay        optional edits           {"id": new flow}
 *   POST /api/replay                 a new request            {"id": new flow}
 *
 * Edits are {"method", "url", "status", "headers": [[name, value], ...],
 * "body"}, each optional; the body is text (UTF-8) and goes out with a
 * Content-Length of its bytes. Each function answers with an HTTP status
 * and a JSON object in *reply ({"error": "..."} for a refusal); the
 * dashboard has checked the token, Host and Origin. Nothing here holds
 * state of its own.
 */
#ifndef TAPWIRE_DASHINTERACT_H
#define TAPWIRE_DASHINTERACT_H

#include <stdint.h>

#include <jansson.h>

#include "intercept.h"
#include "replay.h"

/* A request body of these endpoints may hold a whole edited body (JSON
 * escapes can double its size). */
#define DASHINTERACT_MAX_JSON_BODY_BYTES (4 * INTERCEPT_MAX_BODY_BYTES)

unsigned dashinteract_filter(struct intercept *ic, json_t **reply);
unsigned dashinteract_set_filter(struct intercept *ic, json_t *body, json_t **reply);
unsigned dashinteract_list(struct intercept *ic, json_t **reply);
unsigned dashinteract_resume_all(struct intercept *ic, json_t **reply);
/* body may be NULL: resumed unchanged. */
unsigned dashinteract_resume(struct intercept *ic, int64_t id, json_t *body, json_t **reply);
unsigned dashinteract_drop(struct intercept *ic, int64_t id, json_t **reply);
/* id 0: a new request, body then needed. body may be NULL: sent as stored. */
unsigned dashinteract_replay(struct replay *rp, int64_t id, json_t *body, json_t **reply);

#endif
