/* `sluice users add NAME` / `sluice users list`: maintains the argon2id users
 * file that SMTP AUTH checks. The password is read from stdin (one line). */
#include "cli/cli.h"

#include "core/config.h"
#include "core/privdrop.h"
#include "policy/users.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int cli_users(int argc, char **argv)
{
    if (argc < 2 || (strcmp(argv[1], "add") != 0 && strcmp(argv[1], "list") != 0) ||
        (strcmp(argv[1], "add") == 0 && argc != 3)) {
        fprintf(stderr, "usage: sluice users add NAME   (password on stdin)\n"
                        "       sluice users list\n");
        return 2;
    }
    struct config *cfg = cli_load_config("users", NULL);
    if (!cfg)
        return 2;
    int rc = 2;
    char err[512];
    struct users *u = users_load(cfg->users_file, err, sizeof err);
    if (!u) {
        fprintf(stderr, "sluice: %s\n", err);
        goto out;
    }
    if (strcmp(argv[1], "list") == 0) {
        FILE *f = fopen(cfg->users_file, "r");
        char line[1024];
        while (f && fgets(line, sizeof line, f)) {
            char *colon = strchr(line, ':');
            if (colon && line[0] != '#') {
                *colon = 0;
                printf("%s\n", line);
            }
        }
        if (f)
            fclose(f);
        rc = 0;
        goto out;
    }
    const char *name = argv[2];
    if (!*name || strpbrk(name, ": \t\r\n")) {
        fprintf(stderr, "sluice: user names cannot be empty or contain ':' or spaces\n");
        goto out;
    }
    char pass[512];
    if (!fgets(pass, sizeof pass, stdin)) {
        fprintf(stderr, "sluice: no password on stdin\n");
        goto out;
    }
    pass[strcspn(pass, "\r\n")] = 0;
    if (strlen(pass) < 8) {
        fprintf(stderr, "sluice: password too short (at least 8 characters)\n");
        goto out;
    }
    char hash[256];
    if (users_hash_password(pass, hash, sizeof hash) < 0) {
        fprintf(stderr, "sluice: hashing failed\n");
        goto out;
    }
    explicit_bzero(pass, sizeof pass);
    /* rewrite the file without the old line for NAME, then append */
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", cfg->users_file);
    mkdir(cfg->var_dir, 0700);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    FILE *out = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!out) {
        fprintf(stderr, "sluice: cannot write %s: %s\n", tmp, strerror(errno));
        goto out;
    }
    FILE *in = fopen(cfg->users_file, "r");
    char line[1024];
    size_t nl = strlen(name);
    while (in && fgets(line, sizeof line, in))
        if (!(strncmp(line, name, nl) == 0 && line[nl] == ':'))
            fputs(line, out);
    if (in)
        fclose(in);
    fprintf(out, "%s:%s\n", name, hash);
    char gerr[512];
    if (privdrop_give_like_folder(tmp, gerr, sizeof gerr) < 0) {
        fprintf(stderr, "sluice: %s\n", gerr);
        fclose(out);
        unlink(tmp);
        goto out;
    }
    if (fflush(out) != 0 || fsync(fileno(out)) != 0 || fclose(out) != 0 ||
        rename(tmp, cfg->users_file) != 0) {
        fprintf(stderr, "sluice: cannot write %s: %s\n", cfg->users_file, strerror(errno));
        goto out;
    }
    printf("user %s saved in %s (send SIGHUP to a running daemon to pick it up)\n", name,
           cfg->users_file);
    rc = 0;
out:
    users_free(u);
    config_free(cfg);
    return rc;
}
