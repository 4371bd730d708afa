/* Secrets the daemon holds: upstream passwords named by secret_env, taken out
 * of the environment once at start-up, and the rule that a secret or private
 * key file is readable by its owner only. */
#ifndef SLUICE_CORE_SECRETS_H
#define SLUICE_CORE_SECRETS_H

#include <stddef.h>

struct config;
struct config_errors;

struct env_secrets;

/* Allocates an empty set; env_secrets_free releases it. */
struct env_secrets *env_secrets_new(void);

/* Moves the value of every variable an upstream names in secret_env from the
 * environment into s: the value is copied, its bytes in the environment are
 * overwritten (so /proc/PID/environ no longer shows it) and the variable is
 * unset. Variables taken before stay in s. */
void env_secrets_take(struct env_secrets *s, const struct config *cfg);

/* The value of variable name: the one taken before, else it is taken from the
 * environment now. NULL when neither has it. s may be NULL (plain getenv). */
const char *env_secrets_get(struct env_secrets *s, const char *name);

/* Wipes the values and frees s (NULL is fine). */
void env_secrets_free(struct env_secrets *s);

/* Group or other permission bits on a secret file: refused. */
#define SECRET_FILE_FORBIDDEN_BITS 077

/* 0 when path does not exist or only its owner has access; otherwise -1 with
 * err naming what (e.g. "[tls] key"), the file and its mode. */
int secret_file_check(const char *path, const char *what, char *err, size_t errlen);

/* Applies secret_file_check to every secret and private key cfg names (upstream
 * and webhook secret_file, scram_secret_file, TLS and DKIM keys, audit and
 * privacy keys); each problem is added to errs. Returns how many. */
size_t secrets_check_files(const struct config *cfg, struct config_errors *errs);

#endif
