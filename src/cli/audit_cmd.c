/* `sluice audit verify FILE...`: checks the hash chain of the audit log,
 * across rotated files given oldest first, and names the first record that
 * was edited, removed, reordered or cut short. */
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/audit.h"
#include "core/privacy.h"

static void audit_usage(FILE *f)
{
    fputs("usage: sluice audit verify FILE [FILE2 ...] [--key-file KEY] [--json]\n"
          "  FILE ...        audit log files in chain order, oldest first\n"
          "                  (e.g. audit.log.2 audit.log.1 audit.log)\n"
          "  --key-file KEY  key of a keyed (HMAC-SHA-256) chain: [audit] key_file\n"
          "  --json          print one JSON object\n"
          "exit status: 0 the chain verifies, 2 a record is bad or bad usage\n",
          f);
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

static int audit_verify_cmd(int argc, char **argv)
{
    const char *key_file = NULL;
    bool json = false;
    char **files = calloc((size_t)argc + 1, sizeof *files);
    size_t nfiles = 0;
    if (!files)
        return 2;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if (strcmp(argv[i], "--key-file") == 0 && i + 1 < argc) {
            key_file = argv[++i];
        } else if (strncmp(argv[i], "--key-file=", 11) == 0) {
            key_file = argv[i] + 11;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            audit_usage(stdout);
            free(files);
            return 0;
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "sluice audit verify: unknown option '%s'\n", argv[i]);
            audit_usage(stderr);
            free(files);
            return 2;
        } else {
            files[nfiles++] = argv[i];
        }
    }
    if (nfiles == 0) {
        audit_usage(stderr);
        free(files);
        return 2;
    }
    unsigned char key[AUDIT_MAX_KEY];
    size_t keylen = 0;
    if (key_file) {
        char err[512];
        if (privacy_read_secret(key_file, key, sizeof key, &keylen, err, sizeof err) != 0) {
            fprintf(stderr, "sluice audit verify: key file %s\n", err);
            free(files);
            return 2;
        }
    }
    struct audit_verify v;
    audit_verify_init(&v, key_file ? key : NULL, keylen);
    int rc = audit_verify_files(&v, files, nfiles);
    OPENSSL_cleanse(key, sizeof key);
    if (json)
        print_json(&v);
    else
        print_text(&v, nfiles);
    free(files);
    return rc == 0 ? 0 : 2;
}

int cli_audit(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "verify") == 0)
        return audit_verify_cmd(argc - 1, argv + 1);
    if (argc >= 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        audit_usage(stdout);
        return 0;
    }
    audit_usage(stderr);
    return 2;
}
