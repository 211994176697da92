/*
 * instancelock: one tapwire per data directory (and per database file).
 *
 * Two processes writing one database give each other's flow ids away and one
 * of them loses every flow, and both would mint into one certificate table.
 * The first process takes an exclusive flock(2) on a lock file and holds it
 * for its whole life; the kernel drops it when the process ends, however it
 * ends, so a crash never leaves a stale lock behind. The file holds the
 * holder's PID only so that the refusal can name it.
 */
#ifndef TAPWIRE_INSTANCELOCK_H
#define TAPWIRE_INSTANCELOCK_H

#include <stddef.h>

/* In the data directory. Named after the database file it sits beside, so
 * that in the usual case one file locks both the directory and its
 * database, and a tapwire whose --db points at another's default database
 * (that database's path + ".lock") meets the same lock. */
#define INSTANCELOCK_FILE "tapwire.db.lock"

struct instancelock;

/*
 * Takes the lock file at path (created with mode 0600) and writes this
 * process's PID into it. Returns 0 and *out (release with
 * instancelock_release()), or -1 with err filled in, naming the PID that
 * holds the lock when another process does.
 */
int instancelock_acquire(const char *path, struct instancelock **out, char *err, size_t err_len);

/* Releases the lock and frees lock; NULL is allowed. The lock file stays. */
void instancelock_release(struct instancelock *lock);

#endif
