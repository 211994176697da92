/*
 * dashtoken: see dashtoken.h. A new token goes to a temporary file that is
 * renamed into place, so a crash never leaves a half-written token, and a
 * second tapwire cannot be writing beside us (instancelock holds the data
 * directory).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "dashtoken.h"
#include "errmsg.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rand.h>

/* Characters that need no escaping in a cookie, a header or a URL. */
static bool is_token_text(const char *s, size_t len)
{
    size_t i;

    if (len == 0 || len > DASHTOKEN_MAX_CHARS)
        return false;
    for (i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '~' || c == '-'))
            return false;
    }
    return true;
}

/* 0 with the token in out, 1 when the file does not exist, -1 with err. */
static int read_token(const char *path, char *out, size_t out_len, char *err, size_t err_len)
{
    char text[DASHTOKEN_MAX_CHARS + 2];
    struct stat st;
    ssize_t n;
    size_t len;
    int fd;
    int ret = -1;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
    if (fd < 0 && errno == ENOENT)
        return 1;
    if (fd < 0) {
        errmsg_set(err, err_len, "cannot read the dashboard token %s: %s", path, strerror(errno));
        goto out;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        errmsg_set(err, err_len, "dashboard token %s is not a regular file; remove it", path);
        goto out;
    }
    if ((st.st_mode & 077) != 0 || st.st_uid != geteuid()) {
        errmsg_set(err, err_len,
                   "dashboard token %s may be known to other users (mode %03o, owner %u); "
                   "remove it and tapwire makes a new one, or chmod 600 it",
                   path, (unsigned)(st.st_mode & 0777), (unsigned)st.st_uid);
        goto out;
    }
    n = read(fd, text, sizeof(text) - 1);
    if (n < 0) {
        errmsg_set(err, err_len, "cannot read the dashboard token %s: %s", path, strerror(errno));
        goto out;
    }
    len = (size_t)n;
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r'))
        len--;
    if (!is_token_text(text, len) || len >= out_len) {
        errmsg_set(err, err_len,
                   "dashboard token %s does not hold a token (1 to %d of A-Z a-z 0-9 . _ ~ -); "
                   "remove it and tapwire makes a new one",
                   path, DASHTOKEN_MAX_CHARS);
        goto out;
    }
    memcpy(out, text, len);
    out[len] = '\0';
    ret = 0;
out:
    OPENSSL_cleanse(text, sizeof(text));
    if (fd >= 0)
        close(fd);
    return ret;
}

static int write_new_token(const char *path, char *out, size_t out_len, char *err, size_t err_len)
{
    unsigned char random[DASHTOKEN_RANDOM_BYTES];
    char text[2 * DASHTOKEN_RANDOM_BYTES + 2];
    char tmp[4096];
    size_t i, len;
    bool is_tmp_made = false;
    int fd = -1;
    int rc;
    int ret = -1;

    if (out_len < 2 * DASHTOKEN_RANDOM_BYTES + 1 ||
        (size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp)) {
        errmsg_set(err, err_len, "dashboard token path too long: %s", path);
        goto out;
    }
    if (RAND_bytes(random, sizeof(random)) != 1) {
        ERR_clear_error();
        errmsg_set(err, err_len, "cannot make a random dashboard token");
        goto out;
    }
    for (i = 0; i < sizeof(random); i++)
        snprintf(text + 2 * i, 3, "%02x", random[i]);
    len = 2 * sizeof(random);
    text[len] = '\n';
    unlink(tmp); /* a leftover of a crash; ours alone, under the instance lock */
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        errmsg_set(err, err_len, "cannot write the dashboard token %s: %s", tmp, strerror(errno));
        goto out;
    }
    is_tmp_made = true;
    /* fchmod: the umask may have narrowed 0600, never widened it, but say
     * exactly what the file is. */
    if (fchmod(fd, 0600) != 0 || write(fd, text, len + 1) != (ssize_t)(len + 1) || fsync(fd) != 0) {
        errmsg_set(err, err_len, "cannot write the dashboard token %s: %s", tmp, strerror(errno));
        goto out;
    }
    rc = close(fd);
    fd = -1;
    if (rc != 0 || rename(tmp, path) != 0) {
        errmsg_set(err, err_len, "cannot put the dashboard token in place at %s: %s", path,
                   strerror(errno));
        goto out;
    }
    is_tmp_made = false;
    memcpy(out, text, len);
    out[len] = '\0';
    ret = 0;
out:
    if (fd >= 0)
        close(fd);
    if (is_tmp_made)
        unlink(tmp);
    OPENSSL_cleanse(random, sizeof(random));
    OPENSSL_cleanse(text, sizeof(text));
    return ret;
}

int dashtoken_load_or_create(const char *data_dir, bool rotate, char *out, size_t out_len,
                             bool *rotated, char *err, size_t err_len)
{
    char path[4096];
    int rc;

    *rotated = false;
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", data_dir, DASHTOKEN_FILE) >= sizeof(path)) {
        errmsg_set(err, err_len, "data directory path too long: %s", data_dir);
        return -1;
    }
    if (!rotate) {
        rc = read_token(path, out, out_len, err, err_len);
        if (rc <= 0)
            return rc;
    }
    if (write_new_token(path, out, out_len, err, err_len) != 0)
        return -1;
    *rotated = rotate;
    return 0;
}
