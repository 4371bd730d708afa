/* `sluice creds import FILE`: the old users file into the credential store. */
#ifndef SLUICE_CLI_CREDS_IMPORT_H
#define SLUICE_CLI_CREDS_IMPORT_H

struct cli;
struct creds;

/* Adds one password credential per "name:$argon2id$..." line of path (the
 * format of the retired users file; '#' comments and blank lines allowed),
 * keeping the hash as it is. Names the store holds already are skipped and
 * reported. Returns an exit status of cli.h. */
int creds_import_users(const struct cli *cli, struct creds *db, const char *path);

#endif
