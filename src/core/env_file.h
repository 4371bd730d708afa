/* SLUICE_<SECTION>_<KEY>_FILE: a setting whose value is the content of a
 * file, as container platforms mount secrets (a Kubernetes Secret, a podman
 * secret). The file obeys the rule of every other secret file: readable by
 * its owner only (core/secrets.h). */
#ifndef SLUICE_CORE_ENV_FILE_H
#define SLUICE_CORE_ENV_FILE_H

#include <stddef.h>

/* Largest value file accepted; settings are short, certificates are not
 * passed this way. */
#define ENV_FILE_MAX 65536

/* The value held by a file's bytes (buf, len; no NUL needed): the content
 * with one trailing LF or CRLF removed. Pure. Returns the length of the
 * value, or -1 with err set when the content holds a NUL byte or a line
 * break other than the final one. */
long env_file_value(const char *buf, size_t len, char *err, size_t errlen);

/* Reads path (regular file, at most ENV_FILE_MAX bytes, mode without group
 * or other bits) into *out (malloc'd NUL-terminated value; the caller frees
 * it after wiping it). Returns 0, or -1 with err set and *out NULL. */
int env_file_read(const char *path, char **out, char *err, size_t errlen);

#endif
