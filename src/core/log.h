/* Structured event log: one JSON object per line (or a readable text line),
 * to stdout or a file. Every module reports what happened through here;
 * message bodies and secrets are never passed in. */
#ifndef SLUICE_CORE_LOG_H
#define SLUICE_CORE_LOG_H

#include <stdbool.h>

#include <stdarg.h>
#include <stdio.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Configures output; path NULL or "" means stdout. Returns 0 or -1. */
int log_open(const char *format, const char *path, const char *level);
void log_close(void);

/* Emits an event. `fields` is a list of key/format pairs ended by NULL:
 *   log_event(LOG_INFO, "smtp.accepted", "id", "%s", id, "size", "%zu", n, NULL);
 * Each value format holds exactly one conversion (%s %d %u %ld %lu %zu %lld
 * %llu %x %f). A value format starting with '#' is written as a raw JSON number/bool
 * (e.g. "#%d"); everything else is a JSON string, escaped. */
void log_event(enum log_level level, const char *event, ...);

/* Whether an event of this level is written: lets a caller skip the work
 * of preparing a debug event nobody reads. */
bool log_wants(enum log_level level);

#endif
