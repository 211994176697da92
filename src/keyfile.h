/*
 * keyfile: reading the small files that hold keys, certificates and
 * credentials (the CA, --client-cert, --proxy-auth-file), with one rule for
 * every secret one: it must belong to the user tapwire runs as and be
 * closed to group and others, or it is refused with the chmod that fixes it.
 */
#ifndef TAPWIRE_KEYFILE_H
#define TAPWIRE_KEYFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <openssl/bio.h>

#define KEYFILE_MAX_BYTES (1024 * 1024) /* a PEM key or certificate is a few KB */

/*
 * Reads the whole file at path (what names it in errors: "CA key") into a
 * memory BIO. With is_secret, the file must be owned by this user and not be
 * accessible by group or others (checked on the open descriptor, so the
 * check and the read see the same file), and the BIO is in secure memory.
 * Returns the BIO (caller frees with BIO_free()) or NULL with err.
 */
BIO *keyfile_read(const char *path, const char *what, bool is_secret, char *err, size_t err_len);

#endif
