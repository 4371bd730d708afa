/* The configuration written out: as INI (config dump), as JSON, and as
 * the reference docs of every key (docs/CONFIG.md). */
#include "core/config_int.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <stdio.h>

/* ---- output ---- */

/* Lists longer than this are wrapped onto indented continuation lines, which
 * keeps every line inside inih's line buffer. */
#define DUMP_WRAP 72

static void dump_section(FILE *f, int section, const void *base)
{
    for (size_t i = 0; i < N_KEYS; i++) {
        const struct config_key *k = &config_keys[i];
        if (k->section != section)
            continue;
        char *v = cfg_format_value(k, base);
        size_t len = strlen(v);
        if (!k->list_sep || len <= DUMP_WRAP) {
            fprintf(f, "%s =%s%s\n", k->name, len ? " " : "", v);
            free(v);
            continue;
        }
        fprintf(f, "%s =", k->name);
        const char *p = v;
        bool first = true;
        while (*p) {
            const char *cut = p + strlen(p);
            if ((size_t)(cut - p) > DUMP_WRAP) {
                const char *sep = p + DUMP_WRAP;
                while (sep > p && *sep != k->list_sep)
                    sep--;
                if (sep == p)
                    sep = strchr(p + DUMP_WRAP, k->list_sep);
                if (sep)
                    cut = sep + 1;
            }
            fprintf(f, "%s%.*s\n", first ? " " : "    ", (int)(cut - p), p);
            first = false;
            p = cut;
        }
        free(v);
    }
}

void config_dump(const struct config *cfg, FILE *f)
{
    fprintf(f, "# Effective sluice configuration%s%s\n", cfg->path ? " from " : "",
            cfg->path ? cfg->path : " (embedded defaults)");
    for (int sec = 0; sec < SEC_UPSTREAM; sec++) {
        fprintf(f, "%s[%s]\n", sec ? "\n" : "", section_names[sec]);
        dump_section(f, sec, cfg);
    }
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        fprintf(f, "\n[upstream %s]\n", cfg->upstreams[i].name);
        dump_section(f, SEC_UPSTREAM, &cfg->upstreams[i]);
    }
}

static json_t *value_json(const struct config_key *k, const void *base)
{
    const void *p = (const char *)base + k->offset;
    switch (k->type) {
    case T_BOOL:
        return json_boolean(*(const bool *)p);
    case T_INT:
    case T_DURATION:
        return json_integer(*(const int *)p);
    case T_SIZE:
        return json_integer(*(const long long *)p);
    case T_RATE:
        return json_real(*(const double *)p);
    case T_ENUM:
        return json_string(k->choices[*(const int *)p]);
    case T_KIND:
        return json_string(k->choices[*(const bool *)p ? 1 : 0]);
    default: {
        const char *s = *(char *const *)p;
        return s ? json_string(s) : json_null();
    }
    }
}

static json_t *section_json(int section, const void *base)
{
    json_t *o = json_object();
    for (size_t i = 0; i < N_KEYS; i++)
        if (config_keys[i].section == section)
            json_object_set_new(o, config_keys[i].name, value_json(&config_keys[i], base));
    return o;
}

json_t *config_to_json(const struct config *cfg)
{
    json_t *root = json_object(), *ups = json_array();
    json_object_set_new(root, "path", cfg->path ? json_string(cfg->path) : json_null());
    for (int sec = 0; sec < SEC_UPSTREAM; sec++)
        json_object_set_new(root, section_names[sec], section_json(sec, cfg));
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        json_t *u = section_json(SEC_UPSTREAM, &cfg->upstreams[i]);
        json_object_set_new(u, "name", json_string(cfg->upstreams[i].name));
        json_array_append_new(ups, u);
    }
    json_object_set_new(root, "upstreams", ups);
    return root;
}

void config_docs(FILE *f)
{
    for (int sec = 0; sec < SEC_COUNT; sec++) {
        fprintf(f, "%s### [%s%s]\n\n", sec ? "\n" : "", section_names[sec],
                sec == SEC_UPSTREAM ? " NAME" : "");
        fprintf(f, "| Key | Type | Default | Environment | Description |\n");
        fprintf(f, "|-----|------|---------|-------------|-------------|\n");
        for (size_t i = 0; i < N_KEYS; i++) {
            const struct config_key *k = &config_keys[i];
            char def[160], env[96], type[96];
            if (k->section != sec)
                continue;
            if (!k->def)
                snprintf(def, sizeof(def), "(unset)");
            else if (strncmp(k->def, "${var_dir}", 10) == 0)
                snprintf(def, sizeof(def), "`<var_dir>%s`", k->def + 10);
            else if (strcmp(k->def, "${hostname}") == 0)
                snprintf(def, sizeof(def), "system host name");
            else if (strcmp(k->def, "${port}") == 0)
                snprintf(def, sizeof(def), "`587`; `465` with tls = implicit");
            else if (k->def[0] == '\0')
                snprintf(def, sizeof(def), "(empty)");
            else if (strlen(k->def) > 40)
                snprintf(def, sizeof(def), "`%.24s...`", k->def);
            else
                snprintf(def, sizeof(def), "`%s`", k->def);
            if (k->choices) {
                size_t used = 0;
                type[0] = '\0';
                for (int c = 0; k->choices[c]; c++)
                    used += (size_t)snprintf(type + used, sizeof(type) - used, "%s%s",
                                             c ? " \\| " : "", k->choices[c]);
            } else if (k->min || k->max) {
                char lo[32], hi[32];
                cfg_format_range(k, k->min, lo, sizeof(lo));
                cfg_format_range(k, k->max, hi, sizeof(hi));
                snprintf(type, sizeof(type), "%s, %s to %s", type_names[k->type], lo, hi);
            } else {
                snprintf(type, sizeof(type), "%s", type_names[k->type]);
            }
            snprintf(env, sizeof(env), "SLUICE_%s%s_%s", section_names[sec],
                     sec == SEC_UPSTREAM ? "_<NAME>" : "", k->name);
            for (char *c = env; *c; c++)
                *c = (char)toupper((unsigned char)*c);
            fprintf(f, "| `%s`%s%s%s | %s | %s | `%s` | %s |\n", k->name, k->alias ? " (or `" : "",
                    k->alias ? k->alias : "", k->alias ? "`)" : "", type, def, env, k->doc);
        }
    }
}

json_t *config_keys_json(void)
{
    json_t *a = json_array();
    for (size_t i = 0; i < N_KEYS; i++) {
        const struct config_key *k = &config_keys[i];
        char env[96];
        snprintf(env, sizeof(env), "SLUICE_%s%s_%s", section_names[k->section],
                 k->section == SEC_UPSTREAM ? "_<NAME>" : "", k->name);
        for (char *c = env; *c; c++)
            *c = (char)toupper((unsigned char)*c);
        json_array_append_new(a, json_pack("{s:s, s:s, s:s, s:s?, s:s, s:s?}", "section",
                                           section_names[k->section], "key", k->name, "type",
                                           type_names[k->type], "default", k->def, "environment",
                                           env, "description", k->doc));
    }
    return json_pack("{s:o}", "keys", a);
}
