/*
 * keyfile: see keyfile.h.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "keyfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "errmsg.h"

/*
 * Reads a whole small file into a memory BIO. With is_secret, the file must
 * not be accessible by group or others (checked on the open descriptor, so
 * the check and the read see the same file) and the BIO is in secure memory.
 */
BIO *keyfile_read(const char *path, const char *what, bool is_secret, char *err, size_t err_len)
{
    BIO *bio = NULL;
    BIO *ret = NULL;
    char buf[4096];
    struct stat st;
    size_t total = 0;
    int fd;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        errmsg_set(err, err_len, "%s %s is unreadable: %s", what, path, strerror(errno));
        goto out;
    }
    if (fstat(fd, &st) != 0) {
        errmsg_set(err, err_len, "%s %s is unreadable: %s", what, path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        errmsg_set(err, err_len, "%s %s is not a regular file", what, path);
        goto out;
    }
    /* Owned by someone else: that user can rewrite our key whatever its
     * mode says, so it is no more private than a world-readable one. */
    if (is_secret && st.st_uid != geteuid()) {
        errmsg_set(err, err_len,
                   "%s %s is owned by another user (uid %u, tapwire runs as uid %u); "
                   "run chown %u %s, or move it away to create a new one",
                   what, path, (unsigned)st.st_uid, (unsigned)geteuid(), (unsigned)geteuid(), path);
        goto out;
    }
    if (is_secret && (st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
        errmsg_set(err, err_len,
                   "%s %s is accessible by group or others (mode %04o); "
                   "run chmod 600 %s",
                   what, path, (unsigned)(st.st_mode & 07777), path);
        goto out;
    }
    bio = BIO_new(is_secret ? BIO_s_secmem() : BIO_s_mem());
    if (bio == NULL) {
        errmsg_set(err, err_len, "%s %s: out of memory", what, path);
        goto out;
    }
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            errmsg_set(err, err_len, "%s %s is unreadable: %s", what, path, strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        total += (size_t)n;
        if (total > KEYFILE_MAX_BYTES) {
            errmsg_set(err, err_len, "%s %s is larger than %d bytes", what, path,
                       KEYFILE_MAX_BYTES);
            goto out;
        }
        if (BIO_write(bio, buf, (int)n) != (int)n) {
            errmsg_set(err, err_len, "%s %s: out of memory", what, path);
            goto out;
        }
    }
    ret = bio;
    bio = NULL;
out:
    OPENSSL_cleanse(buf, sizeof(buf));
    BIO_free(bio);
    if (fd >= 0)
        close(fd);
    return ret;
}
