/* `sluice creds import FILE`: moves the users of the retired users file
 * ([auth] users_file, "name:$argon2id$..." lines) into the credential store.
 * The argon2id hashes are stored as they are, so the passwords keep working
 * without anyone typing them again; SCRAM needs a rotate, which knows the
 * password. */
#include "cli/creds_import.h"

#include "cli/cli.h"
#include "policy/creds.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LINE_MAX_USERS 1024

struct import_line {
    char name[CRED_NAME_MAX + 1];
    char hash[LINE_MAX_USERS];
};

/* Checks every line before anything is written: a file that does not parse
 * imports nothing. Returns the number of users, or -1 with err set. */
static long parse_users(FILE *f, struct import_line **out, char *err, size_t errlen)
{
    char line[LINE_MAX_USERS];
    struct import_line *v = NULL;
    long n = 0;
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t len = strcspn(line, "\r\n");
        if (line[len] == '\0' && !feof(f)) {
            snprintf(err, errlen, "line %d is too long", lineno);
            goto bad;
        }
        line[len] = '\0';
        if (line[0] == '\0' || line[0] == '#')
            continue;
        char *colon = strchr(line, ':');
        if (!colon) {
            snprintf(err, errlen, "line %d: expected name:$argon2id$...", lineno);
            goto bad;
        }
        *colon = '\0';
        if (!cred_name_valid(line)) {
            snprintf(err, errlen,
                     "line %d: '%.64s' is not a valid credential name (1-64 of A-Z "
                     "a-z 0-9 . _ -)",
                     lineno, line);
            goto bad;
        }
        if (strncmp(colon + 1, "$argon2id$", 10) != 0) {
            snprintf(err, errlen, "line %d: the hash of '%.64s' is not argon2id", lineno, line);
            goto bad;
        }
        struct import_line *nv = realloc(v, (size_t)(n + 1) * sizeof *nv);
        if (!nv) {
            snprintf(err, errlen, "out of memory");
            goto bad;
        }
        v = nv;
        memcpy(v[n].name, line, strlen(line) + 1); /* valid names fit */
        snprintf(v[n].hash, sizeof v[n].hash, "%s", colon + 1);
        n++;
    }
    if (ferror(f)) {
        snprintf(err, errlen, "cannot read: %s", strerror(errno));
        goto bad;
    }
    *out = v;
    return n;
bad:
    free(v);
    return -1;
}

int creds_import_users(const struct cli *cli, struct creds *db, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return cli_fail(cli, errno == ENOENT ? CLI_ERR_NOT_FOUND : CLI_ERR_IO, "%s: %s", path,
                        strerror(errno));
    struct import_line *users = NULL;
    char err[512];
    long n = parse_users(f, &users, err, sizeof err);
    fclose(f);
    if (n < 0)
        return cli_fail(cli, CLI_ERR_INVALID, "%s: %s; nothing imported", path, err);
    json_t *imported = json_array(), *skipped = json_array();
    int rc = CLI_EXIT_OK;
    for (long i = 0; i < n && rc == CLI_EXIT_OK; i++) {
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
