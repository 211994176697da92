/*
 * rulebook: the sources of rules and the one live set made of them.
 * Reloads build a whole new set first and publish it only when every part
 * parsed, so a bad file or a bad dashboard edit never half-applies.
 */
#include "rulebook.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "errmsg.h"
#include "log.h"

enum { PART_BUILTIN, PART_FILE, PART_SPECS, PART_DB, PART_COUNT };

struct rulebook {
    pthread_mutex_t lock; /* guards parts, db and reloads */
    char *rules_file;     /* owned, may be NULL */
    struct rule_set *parts[PART_COUNT];
    sqlite3 *db;
    struct rules_current current;
};

/* Concatenates the parts and makes the result live. Called with the lock. */
static int publish(struct rulebook *book, char *err, size_t err_len)
{
    struct rule_set *all = rules_set_concat(book->parts, PART_COUNT, err, err_len);
    if (!all)
        return -1;
    rules_publish(&book->current, all);
    rules_set_unref(all);
    return 0;
}

static int load_file(const char *path, struct rule_set **out, char *err, size_t err_len)
{
    if (!path) {
        *out = rules_set_new_empty();
        return *out ? 0 : -1;
    }
    return rules_load_file(path, out, err, err_len);
}

int rulebook_open(const char *rules_file, const char *const *specs, size_t spec_count,
                  const char *db_path, struct rulebook **out, char *err, size_t err_len)
{
    struct rulebook *book = calloc(1, sizeof(*book));
    int rc = -1;
    if (!book) {
        errmsg_set(err, err_len, "out of memory");
        goto out;
    }
    pthread_mutex_init(&book->lock, NULL);
    if (rules_current_init(&book->current) < 0) {
        errmsg_set(err, err_len, "out of memory");
        goto out;
    }
    if (rules_file && !(book->rules_file = strdup(rules_file))) {
        errmsg_set(err, err_len, "out of memory");
        goto out;
    }
    if (load_file(rules_file, &book->parts[PART_FILE], err, err_len) < 0)
        goto out;
    if (spec_count > 0
            ? rules_parse_specs(specs, spec_count, &book->parts[PART_SPECS], err, err_len) < 0
            : !(book->parts[PART_SPECS] = rules_set_new_empty()))
        goto out;
    if (db_open(db_path, &book->db, err, err_len) < 0)
        goto out;
    if (rulestore_load(book->db, &book->parts[PART_DB], err, err_len) < 0)
        goto out;
    if (publish(book, err, err_len) < 0)
        goto out;
    *out = book;
    book = NULL;
    rc = 0;
out:
    rulebook_close(book);
    return rc;
}

void rulebook_close(struct rulebook *book)
{
    if (!book)
        return;
    for (int i = 0; i < PART_COUNT; i++)
        rules_set_unref(book->parts[i]);
    rules_current_destroy(&book->current);
    if (book->db)
        sqlite3_close(book->db);
    free(book->rules_file);
    pthread_mutex_destroy(&book->lock);
    free(book);
}

struct rules_current *rulebook_current(struct rulebook *book)
{
    return &book->current;
}

/* Replaces part i with fresh, publishing the result; on failure the old part
 * stays. Takes ownership of fresh. Called with the lock. */
static int swap_part(struct rulebook *book, int i, struct rule_set *fresh, char *err,
                     size_t err_len)
{
    struct rule_set *old = book->parts[i];
    book->parts[i] = fresh;
    if (publish(book, err, err_len) < 0) {
        book->parts[i] = old;
        rules_set_unref(fresh);
        return -1;
    }
    rules_set_unref(old);
    return 0;
}

int rulebook_reload_file(struct rulebook *book, char *err, size_t err_len)
{
    struct rule_set *fresh = NULL;
    int rc = 0;
    pthread_mutex_lock(&book->lock);
    if (!book->rules_file)
        goto out;
    rc = -1;
    if (rules_load_file(book->rules_file, &fresh, err, err_len) < 0)
        goto out;
    rc = swap_part(book, PART_FILE, fresh, err, err_len);
out:
    pthread_mutex_unlock(&book->lock);
    return rc;
}

/* After a successful rulestore_* change: the table is the truth, reload it. */
static int reload_db(struct rulebook *book, char *err, size_t err_len)
{
    struct rule_set *fresh = NULL;
    if (rulestore_load(book->db, &fresh, err, err_len) < 0)
        return RULESTORE_ERROR;
    return swap_part(book, PART_DB, fresh, err, err_len) < 0 ? RULESTORE_ERROR : 0;
}

int rulebook_db_list(struct rulebook *book, struct rulestore_row **rows, size_t *count, char *err,
                     size_t err_len)
{
    pthread_mutex_lock(&book->lock);
    int rc = rulestore_list(book->db, rows, count, err, err_len);
    pthread_mutex_unlock(&book->lock);
    return rc;
}

int rulebook_db_add(struct rulebook *book, const char *spec, bool is_enabled, int64_t *id,
                    char *err, size_t err_len)
{
    pthread_mutex_lock(&book->lock);
    int rc = rulestore_add(book->db, spec, is_enabled, id, err, err_len);
    if (rc == 0)
        rc = reload_db(book, err, err_len);
    pthread_mutex_unlock(&book->lock);
    return rc;
}

int rulebook_db_update(struct rulebook *book, int64_t id, const char *spec, bool is_enabled,
                       char *err, size_t err_len)
{
    pthread_mutex_lock(&book->lock);
    int rc = rulestore_update(book->db, id, spec, is_enabled, err, err_len);
    if (rc == 0)
        rc = reload_db(book, err, err_len);
    pthread_mutex_unlock(&book->lock);
    return rc;
}

int rulebook_db_delete(struct rulebook *book, int64_t id, char *err, size_t err_len)
{
    pthread_mutex_lock(&book->lock);
    int rc = rulestore_delete(book->db, id, err, err_len);
    if (rc == 0)
        rc = reload_db(book, err, err_len);
    pthread_mutex_unlock(&book->lock);
    return rc;
}

int rulebook_db_reorder(struct rulebook *book, const int64_t *ids, size_t count, char *err,
                        size_t err_len)
{
    pthread_mutex_lock(&book->lock);
    int rc = rulestore_reorder(book->db, ids, count, err, err_len);
    if (rc == 0)
        rc = reload_db(book, err, err_len);
    pthread_mutex_unlock(&book->lock);
    return rc;
}

/*
 * --anticache: rules that take the browser's cache out of the way, so that a
 * response rule enabled again shows on the next page load (mitmproxy's
 * "anticache"). Requests lose their conditional fields (RFC 9110 13.1), so
 * the origin answers in full instead of 304 Not Modified; responses lose
 * their validators and expiry and say no-store (RFC 9111 5.2.2.5), so the
 * browser keeps nothing to reuse or revalidate. They come first: a user's
 * own rule about the same fields has the last word. tapwire-rules(5) spells
 * out the same rules.
 */
static const char *const anticache_specs[] = {
    "request header If-None-Match remove name=anticache",
    "request header If-Modified-Since remove name=anticache",
    "request header If-Match remove name=anticache",
    "request header If-Unmodified-Since remove name=anticache",
    "request header If-Range remove name=anticache",
    "response header ETag remove name=anticache",
    "response header Last-Modified remove name=anticache",
    "response header Expires remove name=anticache",
    "response header Cache-Control set no-store name=anticache",
};

int rulebook_add_anticache(struct rulebook *book, char *err, size_t err_len)
{
    struct rule_set *fresh = NULL;
    int rc;

    pthread_mutex_lock(&book->lock);
    rc = rules_parse_specs(anticache_specs, sizeof(anticache_specs) / sizeof(anticache_specs[0]),
                           &fresh, err, err_len);
    if (rc == 0)
        rc = swap_part(book, PART_BUILTIN, fresh, err, err_len);
    pthread_mutex_unlock(&book->lock);
    return rc;
}

char *rulebook_static_rules_text(struct rulebook *book)
{
    size_t len = 0, cap = 256;
    char *text = malloc(cap);
    if (!text)
        return NULL;
    text[0] = '\0';
    pthread_mutex_lock(&book->lock);
    for (int p = PART_BUILTIN; p <= PART_SPECS; p++) {
        for (size_t i = 0; i < rules_set_count(book->parts[p]); i++) {
            char *line = rules_format(rules_set_get(book->parts[p], i));
            if (!line)
                continue;
            size_t n = strlen(line);
            if (len + n + 2 > cap) {
                while (len + n + 2 > cap)
                    cap *= 2;
                char *grown = realloc(text, cap);
                if (!grown) {
                    free(line);
                    break;
                }
                text = grown;
            }
            memcpy(text + len, line, n);
            len += n;
            text[len++] = '\n';
            text[len] = '\0';
            free(line);
        }
    }
    pthread_mutex_unlock(&book->lock);
    return text;
}
