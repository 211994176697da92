/*
 * dashtoken: the dashboard's access token kept across restarts.
 *
 * A token that changed at every start logged out every open dashboard tab
 * and every bookmark. The token lives in DATA/dashboard-token (mode 0600:
 * it lets anyone on the machine read every captured password) and is made
 * once, from RAND_bytes(); rotating it is an explicit act
 * (--new-dashboard-token). --dashboard-token overrides the file and leaves
 * it alone.
 */
#ifndef TAPWIRE_DASHTOKEN_H
#define TAPWIRE_DASHTOKEN_H

#include <stdbool.h>
#include <stddef.h>

#define DASHTOKEN_FILE "dashboard-token" /* in the data directory */
#define DASHTOKEN_RANDOM_BYTES 16        /* written as 32 hex characters */
#define DASHTOKEN_MAX_CHARS 128

/*
 * Reads the token from data_dir's token file into out (at least
 * DASHTOKEN_MAX_CHARS + 1 bytes), making the file with a new random token
 * when it is missing, or replacing it when rotate is true (*rotated then
 * true). A file that others may read or write, that is not a regular file,
 * or whose content is not a token is refused: tapwire never serves a token
 * someone else could know or have chosen. Returns 0, or -1 with err.
 */
int dashtoken_load_or_create(const char *data_dir, bool rotate, char *out, size_t out_len,
                             bool *rotated, char *err, size_t err_len);

#endif
