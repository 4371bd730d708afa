/* `sluice creds import FILE`: moves the users of the retired users file
 * ([auth] users_file, "name:$argon2id$..." lines) into the credential store.
 * The argon2id hashes are stored as they are, so the passwords keep working
 * without anyone typing them again; SCRAM needs a rotate, which knows the
 * password. */
#include "cli/creds_import.h"

#include "cli/cli.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int users_file_parse(const char *buf, size_t len, struct users_line **out, size_t *n, char *err,
                     size_t errlen)
{
    struct users_line *v = NULL;
    size_t count = 0;
    int lineno = 0;
    *out = NULL;
    *n = 0;
    for (size_t pos = 0; pos < len;) {
        const char *line = buf + pos;
        const char *nl = memchr(line, '\n', len - pos);
        size_t ll = nl ? (size_t)(nl - line) : len - pos;
        pos += ll + (nl ? 1 : 0);
        lineno++;
        if (ll > 0 && line[ll - 1] == '\r')
            ll--;
        if (ll >= USERS_LINE_MAX) {
            snprintf(err, errlen, "line %d is too long", lineno);
            goto bad;
        }
        if (memchr(line, '\0', ll)) {
            snprintf(err, errlen, "line %d holds a NUL byte", lineno);
            goto bad;
        }
        if (ll == 0 || line[0] == '#')
            continue;
        const char *colon = memchr(line, ':', ll);
        size_t nlen = colon ? (size_t)(colon - line) : 0;
        char name[CRED_NAME_MAX + 1];
        if (!colon) {
            snprintf(err, errlen, "line %d: expected name:$argon2id$...", lineno);
            goto bad;
        }
        if (nlen <= CRED_NAME_MAX) {
            memcpy(name, line, nlen);
            name[nlen] = '\0';
        }
        if (nlen > CRED_NAME_MAX || !cred_name_valid(name)) {
            snprintf(err, errlen,
                     "line %d: '%.*s' is not a valid credential name (1-64 of A-Z a-z 0-9 . _ -)",
                     lineno, (int)(nlen > 64 ? 64 : nlen), line);
            goto bad;
        }
        size_t hlen = ll - nlen - 1;
        if (hlen < 10 || memcmp(colon + 1, "$argon2id$", 10) != 0) {
            snprintf(err, errlen, "line %d: the hash of '%s' is not argon2id", lineno, name);
            goto bad;
        }
        for (size_t i = 0; i < count; i++)
            if (strcmp(v[i].name, name) == 0) {
                snprintf(err, errlen, "line %d: '%s' is listed twice", lineno, name);
                goto bad;
            }
        struct users_line *nv = realloc(v, (count + 1) * sizeof *nv);
        if (!nv) {
            snprintf(err, errlen, "out of memory");
            goto bad;
        }
        v = nv;
        memcpy(v[count].name, name, nlen + 1);
        memcpy(v[count].hash, colon + 1, hlen);
        v[count].hash[hlen] = '\0';
        count++;
    }
    *out = v;
    *n = count;
    return 0;
bad:
    free(v);
    return -1;
}

/* the users file of a relay is small */
#define MAX_USERS_FILE (64u << 20)

int creds_import_users(const struct cli *cli, struct creds *db, const char *path)
{
    size_t len;
    char *text = cli_read_all(path, MAX_USERS_FILE, &len);
    if (!text)
        return cli_fail(cli, errno == ENOENT ? CLI_ERR_NOT_FOUND : CLI_ERR_IO, "%s: %s", path,
                        strerror(errno));
    struct users_line *users = NULL;
    size_t n;
    char err[512];
    int pr = users_file_parse(text, len, &users, &n, err, sizeof err);
    free(text);
    if (pr < 0)
        return cli_fail(cli, CLI_ERR_INVALID, "%s: %s; nothing imported", path, err);
    json_t *imported = json_array(), *skipped = json_array();
    int rc = CLI_EXIT_OK;
    for (size_t i = 0; i < n && rc == CLI_EXIT_OK; i++) {
        struct cred *c = NULL;
        if (creds_lookup(db, users[i].name, &c) == 0) {
            creds_free_cred(c);
            json_array_append_new(skipped, json_string(users[i].name));
            continue;
        }
        struct cred_spec spec = {.name = users[i].name, .password_hash = users[i].hash};
        if (creds_add(db, &spec, NULL, 0, err, sizeof err) < 0)
            rc = cli_fail(cli, CLI_ERR_IO, "%s: %s (the users before it were imported)",
                          users[i].name, err);
        else
            json_array_append_new(imported, json_string(users[i].name));
    }
    if (rc == CLI_EXIT_OK) {
        if (cli->json) {
            json_t *j = json_pack("{s:s, s:O, s:O}", "file", path, "imported", imported, "skipped",
                                  skipped);
            char *s = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
            if (s)
                printf("%s\n", s);
            free(s);
            json_decref(j);
        } else {
            size_t k;
            json_t *x;
            json_array_foreach(imported, k, x) printf("imported %s\n", json_string_value(x));
            json_array_foreach(skipped, k, x) printf(
                "skipped %s: the store has a credential of that name\n", json_string_value(x));
            printf("%zu imported, %zu skipped from %s (password only: 'sluice creds rotate NAME "
                   "--password' adds SCRAM-SHA-256)\n",
                   json_array_size(imported), json_array_size(skipped), path);
        }
    }
    json_decref(imported);
    json_decref(skipped);
    free(users);
    return rc;
}
