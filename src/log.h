/*
 * log: levelled logging to stderr or a file, one line per exchange.
 * Thread safety: each call writes one whole line with a single write(2)
 * after formatting, so lines from different threads never interleave.
 */
#ifndef TAPWIRE_LOG_H
#define TAPWIRE_LOG_H

#include <stdint.h>

enum log_level { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

/* fd to write to (stderr by default); level: messages above it are dropped. */
void log_init(int fd, enum log_level level);
enum log_level log_get_level(void);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
