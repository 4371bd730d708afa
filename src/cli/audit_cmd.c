/* `sluice audit verify FILE...`: checks the hash chain of the audit log,
 * across rotated files given oldest first, and names the first record that
 * was edited, removed, reordered or cut short. */
#include <errno.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/audit.h"
#include "core/config.h"
#include "core/privacy.h"

static const char audit_usage[] =
    "usage: sluice audit verify [FILE ...] [--key-file KEY] [--json]\n"
    "  FILE ...        audit log files in chain order, oldest first\n"
    "                  (e.g. audit.log.2 audit.log.1 audit.log); without FILE the\n"
    "                  configured [audit] file and its rotated predecessors\n"
    "                  (FILE.N ... FILE.1), keyed with the configured [audit] key_file\n"
    "  --key-file KEY  key of a keyed (HMAC-SHA-256) chain\n"
    "  --json          print one JSON object\n"
    "exit status: 0 the chain verifies, 4 a record is bad, 2 bad usage, 1 cannot read\n";

#define MAX_ROTATED 1000

/* The configured audit file after its rotated predecessors, oldest first;
 * paths are malloc'd into files, which has room for MAX_ROTATED + 1. */
static size_t configured_files(const char *path, char **files)
{
    size_t n = 0, k = 0;
    char buf[4200];
    while (k < MAX_ROTATED) {
        snprintf(buf, sizeof buf, "%s.%zu", path, k + 1);
        FILE *f = fopen(buf, "r");
        if (!f)
            break;
        fclose(f);
        k++;
    }
    for (; k > 0; k--) {
        snprintf(buf, sizeof buf, "%s.%zu", path, k);
        files[n++] = strdup(buf);
    }
    files[n++] = strdup(path);
    return n;
}

static void print_json(const struct audit_verify *v)
{
    json_t *o = json_object();
    json_object_set_new(o, "ok", json_boolean(v->problem == AUDIT_OK));
    json_object_set_new(o, "records", json_integer((json_int_t)v->records));
    if (v->records) {
        json_object_set_new(o, "first_seq", json_integer((json_int_t)v->first_seq));
        json_object_set_new(o, "last_seq", json_integer((json_int_t)v->last_seq));
        json_object_set_new(o, "last_hash", json_string(v->last_hash));
    }
    if (v->continues_from[0])
        json_object_set_new(o, "continues_from", json_string(v->continues_from));
    if (v->problem != AUDIT_OK) {
        json_object_set_new(o, "problem", json_string(audit_problem_name(v->problem)));
        json_object_set_new(o, "file", json_string(v->file));
        json_object_set_new(o, "line", json_integer((json_int_t)v->line));
        json_object_set_new(o, "seq", v->seq >= 0 ? json_integer(v->seq) : json_null());
        json_object_set_new(o, "detail", json_string(v->detail));
    }
    char *s = json_dumps(o, JSON_COMPACT);
    if (s)
        puts(s);
    free(s);
    json_decref(o);
}

static void print_text(const struct audit_verify *v, size_t nfiles)
{
    if (v->problem != AUDIT_OK) {
        printf("BAD %s:%lu", v->file, v->line);
        if (v->seq >= 0)
            printf(" seq %lld", v->seq);
        printf(": %s: %s\n", audit_problem_name(v->problem), v->detail);
        if (v->records)
            printf("records before it verified: %llu (seq %llu..%llu)\n",
                   (unsigned long long)v->records, (unsigned long long)v->first_seq,
                   (unsigned long long)v->last_seq);
        return;
    }
    printf("ok: %llu record(s) in %zu file(s)", (unsigned long long)v->records, nfiles);
    if (v->records)
        printf(", seq %llu..%llu", (unsigned long long)v->first_seq,
               (unsigned long long)v->last_seq);
    printf("\n");
    if (v->records)
        printf("last hash: %s\n", v->last_hash);
    if (v->continues_from[0])
        printf("note: the chain continues from %s, which was not checked\n", v->continues_from);
}

static int audit_verify_cmd(const struct cli *cli, int argc, char **argv)
{
    const char *key_file = NULL;
    bool json = cli->json, from_config = false;
    char **files = calloc((size_t)argc + MAX_ROTATED + 2, sizeof *files);
    size_t nfiles = 0;
    struct config *cfg = NULL;
    int rc = CLI_EXIT_USAGE;
    if (!files)
        return CLI_EXIT_FAILURE;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--key-file") == 0 && i + 1 < argc) {
            key_file = argv[++i];
        } else if (strncmp(argv[i], "--key-file=", 11) == 0) {
            key_file = argv[i] + 11;
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            rc = cli_usage_error(cli, audit_usage, "unknown option '%s'", argv[i]);
            goto out;
        } else {
            files[nfiles++] = argv[i];
        }
    }
    if (nfiles == 0) {
        cfg = cli_load_config(cli);
        if (!cfg) {
            rc = CLI_EXIT_FAILURE;
            goto out;
        }
        if (!cfg->audit_file[0]) {
            rc = cli_fail(cli, CLI_ERR_NOT_FOUND,
                          "the audit log is off in %s ([audit] file is empty); name FILE",
                          cli_config_origin(cli));
            goto out;
        }
        FILE *f = fopen(cfg->audit_file, "r");
        if (!f) {
            rc = cli_fail(cli, errno == ENOENT ? CLI_ERR_NOT_FOUND : CLI_ERR_IO,
                          "audit log %s (configuration: %s): %s", cfg->audit_file,
                          cli_config_origin(cli), strerror(errno));
            goto out;
        }
        fclose(f);
        nfiles = configured_files(cfg->audit_file, files);
        from_config = true;
        if (!key_file && cfg->audit_key_file[0])
            key_file = cfg->audit_key_file;
    }
    for (size_t i = 0; !from_config && i < nfiles; i++) {
        FILE *f = fopen(files[i], "r");
        if (!f) {
            rc = cli_fail(cli, errno == ENOENT ? CLI_ERR_NOT_FOUND : CLI_ERR_IO, "%s: %s", files[i],
                          strerror(errno));
            goto out;
        }
        fclose(f);
    }
    unsigned char key[AUDIT_MAX_KEY];
    size_t keylen = 0;
    if (key_file) {
        char err[512];
        if (privacy_read_secret(key_file, key, sizeof key, &keylen, err, sizeof err) != 0) {
            rc = cli_fail(cli, CLI_ERR_IO, "key file %s", err);
            goto out;
        }
    }
    struct audit_verify v;
    audit_verify_init(&v, key_file ? key : NULL, keylen);
    int r = audit_verify_files(&v, files, nfiles);
    OPENSSL_cleanse(key, sizeof key);
    if (json)
        print_json(&v);
    else
        print_text(&v, nfiles);
    rc = r == 0 ? CLI_EXIT_OK : CLI_EXIT_CHECK_FAIL;
out:
    if (from_config)
        for (size_t i = 0; i < nfiles; i++)
            free(files[i]);
    free(files);
    config_free(cfg);
    return rc;
}

int cli_audit(const struct cli *cli, int argc, char **argv)
{
    if (cli->help)
        return cli_help(audit_usage);
    if (argc >= 2 && strcmp(argv[1], "verify") == 0)
        return audit_verify_cmd(cli, argc - 1, argv + 1);
    return cli_usage_error(cli, audit_usage,
                           argc >= 2 ? "unknown audit command" : "which audit command?");
}
