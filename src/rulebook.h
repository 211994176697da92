/*
 * rulebook: where the live rule set comes from. The sources, applied in
 * this order: the built-in --anticache rules (when asked for), the --rules
 * file, the --rule options, and the rules made in the dashboard (SQLite).
 * The rulebook keeps each part's parsed set and publishes their
 * concatenation to the proxy threads through a struct rules_current; a
 * reload that fails keeps everything as it was.
 * Thread safety: every function may be called from any thread; a mutex
 * serialises reloads and the database connection.
 */
#ifndef TAPWIRE_RULEBOOK_H
#define TAPWIRE_RULEBOOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rules.h"
#include "rulestore.h"

struct rulebook;

/*
 * Loads rules_file (may be NULL), the specs (count may be 0) and the rules
 * table of the database at db_path, and publishes them. Any bad rule is an
 * error naming it (startup refuses to run with half a rule set).
 * Returns 0 and *out, or -1 with err.
 */
int rulebook_open(const char *rules_file, const char *const *specs, size_t spec_count,
                  const char *db_path, struct rulebook **out, char *err, size_t err_len);
void rulebook_close(struct rulebook *book);

/* Adds the built-in --anticache rules (strip conditional request fields and
 * caching response fields, see tapwire-rules(5)) ahead of all others and
 * publishes. Returns 0, or -1 with err. */
int rulebook_add_anticache(struct rulebook *book, char *err, size_t err_len);

/* The holder proxy threads acquire from (rules_acquire()). */
struct rules_current *rulebook_current(struct rulebook *book);

/* Re-reads the --rules file (SIGHUP). On failure the previous set stays
 * live and err says why. Returns 0, or -1. No file: 0, nothing done. */
int rulebook_reload_file(struct rulebook *book, char *err, size_t err_len);

/* Dashboard edits: each is one rulestore_* call on the rulebook's database
 * connection, then the dashboard part is reloaded and published. Return
 * values are those of rulestore_* (RULESTORE_INVALID for a bad spec, with the
 * parser's message in err). */
int rulebook_db_list(struct rulebook *book, struct rulestore_row **rows, size_t *count, char *err,
                     size_t err_len);
int rulebook_db_add(struct rulebook *book, const char *spec, bool is_enabled, int64_t *id,
                    char *err, size_t err_len);
int rulebook_db_update(struct rulebook *book, int64_t id, const char *spec, bool is_enabled,
                       char *err, size_t err_len);
int rulebook_db_delete(struct rulebook *book, int64_t id, char *err, size_t err_len);
int rulebook_db_reorder(struct rulebook *book, const int64_t *ids, size_t count, char *err,
                        size_t err_len);

/* The rules from --anticache, the file and --rule, formatted one per line
 * (read-only in the dashboard). Caller frees. */
char *rulebook_static_rules_text(struct rulebook *book);

#endif
