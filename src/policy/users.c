/* Users file parsing and argon2id verification. */
#include "policy/users.h"

#include "policy/secret.h"

#include <argon2.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* OWASP's argon2id floor: 19 MiB, 2 passes, 1 lane. */
#define ARGON2_T_COST 2
#define ARGON2_M_COST 19456
#define ARGON2_LANES 1
#define SALT_LEN 16
#define HASH_LEN 32

struct user {
    char *name;
    char *hash;
};

struct users {
    int refs; /* the daemon and in-flight checks share one set */
    struct user *v;
    size_t n;
    char dummy[160]; /* verified against for unknown names */
};

size_t users_count(const struct users *u)
{
    return u ? u->n : 0;
}

int users_hash_password(const char *password, char *out, size_t out_size)
{
    unsigned char salt[SALT_LEN];
    FILE *f = fopen("/dev/urandom", "rb");
    if (!f || fread(salt, 1, sizeof salt, f) != sizeof salt) {
        if (f)
            fclose(f);
        return -1;
    }
    fclose(f);
    int r = argon2id_hash_encoded(ARGON2_T_COST, ARGON2_M_COST, ARGON2_LANES, password,
                                  strlen(password), salt, sizeof salt, HASH_LEN, out, out_size);
    return r == ARGON2_OK ? 0 : -1;
}

struct users *users_load(const char *path, char *err, size_t errlen)
{
    struct users *u = calloc(1, sizeof *u);
    if (!u) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    u->refs = 1;
    if (users_hash_password("not-a-real-password", u->dummy, sizeof u->dummy) < 0) {
        snprintf(err, errlen, "cannot hash with argon2id");
        free(u);
        return NULL;
    }
    FILE *f = path && *path ? fopen(path, "r") : NULL;
    if (!f) {
        if (path && *path && errno != ENOENT) {
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
            free(u);
            return NULL;
        }
        return u;
    }
    char line[1024];
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0] || line[0] == '#')
            continue;
        char *colon = strchr(line, ':');
        if (!colon || colon == line || strncmp(colon + 1, "$argon2id$", 10) != 0) {
            snprintf(err, errlen,
                     "%s:%d: expected 'name:$argon2id$...' (a retired format: move "
                     "the users into the store with 'sluice creds import FILE')",
                     path, lineno);
            fclose(f);
            users_free(u);
            return NULL;
        }
        *colon = 0;
        for (size_t i = 0; i < u->n; i++)
            if (strcmp(u->v[i].name, line) == 0) {
                snprintf(err, errlen, "%s:%d: user '%s' listed twice", path, lineno, line);
                fclose(f);
                users_free(u);
                return NULL;
            }
        struct user *nv = realloc(u->v, (u->n + 1) * sizeof *nv);
        if (!nv)
            break;
        u->v = nv;
        u->v[u->n].name = strdup(line);
        u->v[u->n].hash = strdup(colon + 1);
        u->n++;
    }
    fclose(f);
    return u;
}

struct users *users_ref(struct users *u)
{
    __atomic_add_fetch(&u->refs, 1, __ATOMIC_SEQ_CST);
    return u;
}

void users_free(struct users *u)
{
    if (!u || __atomic_sub_fetch(&u->refs, 1, __ATOMIC_SEQ_CST) > 0)
        return;
    for (size_t i = 0; i < u->n; i++) {
        free(u->v[i].name);
        free(u->v[i].hash);
    }
    free(u->v);
    free(u);
}

bool users_verify(const struct users *u, const char *name, const char *password)
{
    const char *hash = u->dummy;
    bool known = false;
    for (size_t i = 0; i < u->n; i++)
        if (strcmp(u->v[i].name, name) == 0) {
            hash = u->v[i].hash;
            known = true;
            break;
        }
    bool ok = secret_argon2_verify(hash, password);
    return ok && known;
}
