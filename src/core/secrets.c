/* Secrets held by the daemon. secret_env values leave the environment at
 * start-up: the environment block stays readable in /proc/PID/environ for the
 * life of the process and is inherited by anything started, so the value is
 * kept in memory and its original bytes are overwritten. */
#include "core/secrets.h"

#include "core/config.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

extern char **environ;

struct env_secret {
    char *name, *value;
};

struct env_secrets {
    struct env_secret *v;
    size_t n;
};

struct env_secrets *env_secrets_new(void)
{
    return calloc(1, sizeof(struct env_secrets));
}

static struct env_secret *find(struct env_secrets *s, const char *name)
{
    for (size_t i = 0; s && i < s->n; i++)
        if (strcmp(s->v[i].name, name) == 0)
            return &s->v[i];
    return NULL;
}

/* Copies the value of name out of the environment, wipes every "name=value"
 * entry's value in place and unsets it. NULL when unset (or out of memory). */
static char *take_from_environ(const char *name)
{
    size_t nl = strlen(name);
    char *copy = NULL;
    for (char **e = environ; e && *e; e++) {
        if (strncmp(*e, name, nl) != 0 || (*e)[nl] != '=')
            continue;
        char *value = *e + nl + 1;
        if (!copy)
            copy = strdup(value);
        explicit_bzero(value, strlen(value));
    }
    unsetenv(name);
    return copy;
}

static const char *take_one(struct env_secrets *s, const char *name)
{
    struct env_secret *have = find(s, name);
    if (have)
        return have->value;
    char *value = take_from_environ(name);
    if (!value)
        return NULL;
    struct env_secret *v = realloc(s->v, (s->n + 1) * sizeof *v);
    char *n = strdup(name);
    if (!v || !n) {
        free(n);
        if (v)
            s->v = v;
        explicit_bzero(value, strlen(value));
        free(value);
        return NULL;
    }
    s->v = v;
    s->v[s->n].name = n;
    s->v[s->n].value = value;
    return s->v[s->n++].value;
}

void env_secrets_take(struct env_secrets *s, const struct config *cfg)
{
    for (size_t i = 0; s && i < cfg->n_upstreams; i++) {
        const char *name = cfg->upstreams[i].secret_env;
        if (name && *name)
            take_one(s, name);
    }
}

const char *env_secrets_get(struct env_secrets *s, const char *name)
{
    if (!s)
        return getenv(name);
    return take_one(s, name);
}

void env_secrets_free(struct env_secrets *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++) {
        explicit_bzero(s->v[i].value, strlen(s->v[i].value));
        free(s->v[i].value);
        free(s->v[i].name);
    }
    free(s->v);
    free(s);
}

int secret_file_check(const char *path, const char *what, char *err, size_t errlen)
{
    struct stat st;
    if (!path || !*path || stat(path, &st) < 0 || !S_ISREG(st.st_mode))
        return 0; /* absence is reported (or the file made) by its user */
    if ((st.st_mode & SECRET_FILE_FORBIDDEN_BITS) == 0)
        return 0;
    snprintf(err, errlen,
             "%s %s has mode %04o: group or others may access it; a secret must be readable by "
             "its owner only (chmod 600 %s)",
             what, path, (unsigned)(st.st_mode & 07777), path);
    return -1;
}

static size_t check(struct config_errors *errs, const char *path, const char *what)
{
    char err[1024];
    if (secret_file_check(path, what, err, sizeof err) == 0)
        return 0;
    config_errors_add(errs, NULL, 0, "%s", err);
    return 1;
}

/* DKIM keys: every SELECTOR._domainkey.DOMAIN.key in the key folder. */
static size_t check_dkim_dir(struct config_errors *errs, const char *dir)
{
    size_t bad = 0;
    DIR *d = dir && *dir ? opendir(dir) : NULL;
    if (!d)
        return 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t n = strlen(de->d_name);
        if (n < 5 || strcmp(de->d_name + n - 4, ".key") != 0)
            continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        bad += check(errs, path, "[dkim] key");
    }
    closedir(d);
    return bad;
}

size_t secrets_check_files(const struct config *cfg, struct config_errors *errs)
{
    size_t bad = 0;
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        char what[300];
        snprintf(what, sizeof what, "[upstream %s] secret_file", cfg->upstreams[i].name);
        bad += check(errs, cfg->upstreams[i].secret_file, what);
    }
    bad += check(errs, cfg->webhook_secret_file, "[webhook] secret_file");
    bad += check(errs, cfg->scram_secret_file, "[auth] scram_secret_file");
    if (cfg->store_password_file && *cfg->store_password_file)
        bad += check(errs, cfg->store_password_file, "[store] password_file");
    bad += check(errs, cfg->tls_key, "[tls] key");
    bad += check(errs, cfg->audit_key_file, "[audit] key_file");
    if (cfg->log_privacy)
        bad += check(errs, cfg->log_privacy_key_file, "[log] privacy_key_file");
    bad += check_dkim_dir(errs, cfg->dkim_key_dir);
    return bad;
}
