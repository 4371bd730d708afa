/* `sluice creds import FILE`: the old users file into the credential store. */
#ifndef SLUICE_CLI_CREDS_IMPORT_H
#define SLUICE_CLI_CREDS_IMPORT_H

#include <stddef.h>

#include "policy/creds.h"

struct cli;

#define USERS_LINE_MAX 1024 /* what the retired users file reader accepted */

/* One user of a users file: a valid credential name and an argon2id hash. */
struct users_line {
    char name[CRED_NAME_MAX + 1];
    char hash[USERS_LINE_MAX];
};

/* Parses a whole users file (buf, len; no NUL needed): "name:$argon2id$..."
 * lines, '#' comments and blank lines, LF or CRLF ends. Pure: no I/O. On
 * success *out (malloc'd, free it) holds *n users and 0 is returned; a
 * line that is too long, holds a NUL, lacks the colon, has an invalid
 * name, a hash that is not argon2id or a name given twice gives -1 with
 * err naming the line, and *out NULL. */
int users_file_parse(const char *buf, size_t len, struct users_line **out, size_t *n, char *err,
                     size_t errlen);

/* Adds one password credential per "name:$argon2id$..." line of path (the
 * format of the retired users file; '#' comments and blank lines allowed),
 * keeping the hash as it is. Names the store holds already are skipped and
 * reported. Returns an exit status of cli.h. */
int creds_import_users(const struct cli *cli, struct creds *db, const char *path);

#endif
