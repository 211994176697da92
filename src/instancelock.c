/*
 * instancelock: see instancelock.h. flock(2) rather than fcntl(2) locks: an
 * flock belongs to the open file description, so no other descriptor of the
 * same file that some library opens and closes can drop it, and SQLite's own
 * fcntl locks on the database are a separate file anyway.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "instancelock.h"
#include "errmsg.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

struct instancelock {
    int fd;
};

/* The PID written by the holder, or 0 when the file holds none yet (the
 * holder takes the lock before it writes). */
static long read_holder_pid(int fd)
{
    char text[32];
    ssize_t n = pread(fd, text, sizeof(text) - 1, 0);
    long pid;
    char *end;

    if (n <= 0)
        return 0;
    text[n] = '\0';
    pid = strtol(text, &end, 10);
    return end != text && pid > 0 ? pid : 0;
}

int instancelock_acquire(const char *path, struct instancelock **out, char *err, size_t err_len)
{
    struct instancelock *lock = NULL;
    char text[32];
    int fd;
    int len;
    int ret = -1;

    *out = NULL;
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW, 0600);
    if (fd < 0) {
        errmsg_set(err, err_len, "cannot open the lock file %s: %s", path, strerror(errno));
        goto out;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        long holder = errno == EWOULDBLOCK ? read_holder_pid(fd) : 0;

        if (errno != EWOULDBLOCK)
            errmsg_set(err, err_len, "cannot lock %s: %s", path, strerror(errno));
        else if (holder > 0)
            errmsg_set(err, err_len,
                       "another tapwire (PID %ld) is using this data directory (lock file %s); "
                       "stop it first, or give this one another --data-dir",
                       holder, path);
        else
            errmsg_set(err, err_len,
                       "another tapwire is using this data directory (lock file %s); stop it "
                       "first, or give this one another --data-dir",
                       path);
        goto out;
    }
    len = snprintf(text, sizeof(text), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, text, (size_t)len, 0) != len) {
        errmsg_set(err, err_len, "cannot write the lock file %s: %s", path, strerror(errno));
        goto out;
    }
    lock = malloc(sizeof(*lock));
    if (lock == NULL) {
        errmsg_set(err, err_len, "out of memory");
        goto out;
    }
    lock->fd = fd;
    fd = -1;
    *out = lock;
    ret = 0;
out:
    if (fd >= 0)
        close(fd);
    return ret;
}

void instancelock_release(struct instancelock *lock)
{
    if (lock == NULL)
        return;
    close(lock->fd); /* drops the flock */
    free(lock);
}
