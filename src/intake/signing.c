/* Loads DKIM keys by file name and picks the signers for a message. */
#include "intake/signing.h"

#include "core/config.h"
#include "core/log.h"
#include "mailauth/dkim.h"
#include "policy/mime.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DOMAINKEY_INFIX "._domainkey."

struct entry {
    char domain[256];
    char selector[64];
    struct dkim_signer *signer;
};

struct signing {
    int refs;
    struct entry *v;
    size_t n;
};

static bool selector_active(const char *list, const char *name)
{
    if (!list || !*list)
        return true;
    size_t n = strlen(name);
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        size_t k = strcspn(p, ", ");
        if (k == n && strncasecmp(p, name, n) == 0)
            return true;
        p += k;
    }
    return false;
}

struct signing *signing_load(const struct config *cfg, char *err, size_t errlen)
{
    struct signing *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->refs = 1;
    DIR *d = opendir(cfg->dkim_key_dir);
    if (!d) {
        if (errno == ENOENT && !(cfg->dkim_selectors && *cfg->dkim_selectors))
            return s;
        snprintf(err, errlen, "cannot read DKIM key directory %s: %s", cfg->dkim_key_dir,
                 strerror(errno));
        free(s);
        return NULL;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *name = de->d_name;
        size_t len = strlen(name);
        const char *infix = strstr(name, DOMAINKEY_INFIX);
        if (!infix || len < 5 || strcmp(name + len - 4, ".key") != 0)
            continue;
        struct entry e = {0};
        size_t sl = (size_t)(infix - name);
        size_t dl = len - 4 - sl - strlen(DOMAINKEY_INFIX);
        if (sl == 0 || sl >= sizeof e.selector || dl == 0 || dl >= sizeof e.domain)
            continue;
        memcpy(e.selector, name, sl);
        memcpy(e.domain, infix + strlen(DOMAINKEY_INFIX), dl);
        char label[400];
        snprintf(label, sizeof label, "%s%s%s", e.selector, DOMAINKEY_INFIX, e.domain);
        if (!selector_active(cfg->dkim_selectors, label))
            continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", cfg->dkim_key_dir, name);
        struct dkim_sign_opts o = {.domain = e.domain,
                                   .selector = e.selector,
                                   .key_file = path,
                                   .canon = cfg->dkim_canon,
                                   .expire_seconds = cfg->dkim_expire};
        char why[256];
        e.signer = dkim_signer_new(&o, why, sizeof why);
        if (!e.signer) {
            snprintf(err, errlen, "DKIM key %s: %s", path, why);
            closedir(d);
            s->refs = 1;
            signing_free(s);
            return NULL;
        }
        struct entry *nv = realloc(s->v, (s->n + 1) * sizeof *nv);
        if (!nv) {
            dkim_signer_free(e.signer);
            break;
        }
        s->v = nv;
        s->v[s->n++] = e;
        log_event(LOG_INFO, "dkim.key_loaded", "domain", "%s", e.domain, "selector", "%s",
                  e.selector, "algorithm", "%s",
                  dkim_algorithm_name(dkim_signer_algorithm(e.signer)), NULL);
    }
    closedir(d);
    /* every listed selector must exist: a typo would silently stop signing */
    const char *p = cfg->dkim_selectors;
    while (p && *p) {
        while (*p == ' ' || *p == ',')
            p++;
        size_t k = strcspn(p, ", ");
        if (!k)
            break;
        bool found = false;
        for (size_t i = 0; i < s->n && !found; i++) {
            char label[400];
            snprintf(label, sizeof label, "%s%s%s", s->v[i].selector, DOMAINKEY_INFIX,
                     s->v[i].domain);
            found = strlen(label) == k && strncasecmp(label, p, k) == 0;
        }
        if (!found) {
            snprintf(err, errlen, "[dkim] selectors names %.*s but %s has no such .key file",
                     (int)k, p, cfg->dkim_key_dir);
            signing_free(s);
            return NULL;
        }
        p += k;
    }
    return s;
}

struct signing *signing_ref(struct signing *s)
{
    if (s)
        s->refs++;
    return s;
}

void signing_free(struct signing *s)
{
    if (!s || --s->refs > 0)
        return;
    for (size_t i = 0; i < s->n; i++)
        dkim_signer_free(s->v[i].signer);
    free(s->v);
    free(s);
}

size_t signing_count(const struct signing *s)
{
    return s ? s->n : 0;
}

size_t signing_for_domain(struct signing *s, const char *domain, struct dkim_signer **out,
                          size_t max)
{
    size_t n = 0;
    for (size_t i = 0; s && i < s->n && n < max; i++)
        if (strcasecmp(s->v[i].domain, domain) == 0)
            out[n++] = s->v[i].signer;
    return n;
}

int signing_from_domain(const char *h, size_t len, char *out, size_t outlen)
{
    /* The same From parser as DMARC and the header policy: a signature is
     * only useful when its d= aligns with the domain receivers will check. */
    struct mime_address_list *l = malloc(sizeof(*l));
    int rc = l ? mime_from_domains(h, len, l) : -1;
    if (rc > 0 && (size_t)snprintf(out, outlen, "%s", l->domains[0]) >= outlen)
        rc = -1;
    free(l);
    return rc > 0 ? 0 : -1;
}
