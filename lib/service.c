/* Customer-service rules shared by gateway and worker: priorities, queue scores, routing rules,
 * per-key values. */
#include "kefu/service.h"

#include "kefu/alloc.h"
#include "kefu/redis.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

static const char *const prio_names[3] = {"high", "medium", "low"};

const char *kf_priority_name(kf_priority p) {
    return (unsigned)p < 3 ? prio_names[p] : "medium";
}

int kf_priority_parse(const char *s) {
    if (!s) return -1;
    for (int i = 0; i < 3; i++)
        if (strcmp(s, prio_names[i]) == 0) return i;
    return -1;
}

static int group_char(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

int kf_group_valid(const char *s) {
    if (!s) return 0;
    size_t i = 0;
    for (; s[i]; i++)
        if (i >= KF_GROUP_MAX || !group_char((unsigned char)s[i])) return 0;
    return i > 0;
}

long long kf_queue_score(kf_priority p, int level, long long t_us) {
    if ((unsigned)p > KF_PRIO_LOW) p = KF_PRIO_MEDIUM;
    if (level < 0) level = 0;
    if (level > 100) level = 100;
    long long t = (t_us - KF_QUEUE_EPOCH_US) / 64;
    long long tmax = (1LL << KF_QUEUE_TIME_BITS) - 1;
    if (t < 0) t = 0;
    if (t > tmax) t = tmax;
    long long cls = (long long)p * 101 + (100 - level);
    return (cls << KF_QUEUE_TIME_BITS) | t;
}

long long kf_queue_score_time_us(long long score) {
    long long t = score & ((1LL << KF_QUEUE_TIME_BITS) - 1);
    return KF_QUEUE_EPOCH_US + t * 64;
}

/* Finds needle in hay, ASCII letters compared without case. */
static int contains_nocase(const char *hay, const char *needle, size_t nlen) {
    size_t hlen = strlen(hay);
    if (nlen == 0 || nlen > hlen) return nlen == 0;
    for (size_t i = 0; i + nlen <= hlen; i++) {
        size_t k = 0;
        while (k < nlen && tolower((unsigned char)hay[i + k]) == tolower((unsigned char)needle[k]))
            k++;
        if (k == nlen) return 1;
    }
    return 0;
}

static int is_sep(char c) { return c == ',' || c == ';' || c == '\n' || c == '\r'; }

static void trim(const char **b, const char **e) {
    while (*b < *e && isspace((unsigned char)**b)) (*b)++;
    while (*e > *b && isspace((unsigned char)(*e)[-1])) (*e)--;
}

/* One entry of a "left=right" list (entries separated by , ; or newlines), both sides trimmed;
 * [b, e) is the whole entry, for messages. */
typedef struct kv_entry {
    const char *b, *e, *kb, *ke, *vb, *ve;
} kv_entry;

/* Steps *p to the next non-empty entry: 1 with it in *kv, 0 at the end, -1 when the entry has
 * no '=' (kv->b/e still name it). */
static int kv_next(const char **p, kv_entry *kv) {
    while (*p && **p) {
        const char *b = *p, *e = *p;
        while (*e && !is_sep(*e)) e++;
        *p = *e ? e + 1 : e;
        trim(&b, &e);
        if (b == e) continue;
        kv->b = b, kv->e = e;
        const char *eq = memchr(b, '=', (size_t)(e - b));
        if (!eq) return -1;
        kv->kb = b, kv->ke = eq, kv->vb = eq + 1, kv->ve = e;
        trim(&kv->kb, &kv->ke);
        trim(&kv->vb, &kv->ve);
        return 1;
    }
    return 0;
}

int kf_route_match(const char *rules, const char *channel, const char *topic, char *group,
                   size_t glen, int *priority, char *err, size_t errlen) {
    if (!rules) return 0;
    const char *p = rules;
    int matched = 0;
    kv_entry kv;
    int more;
    while ((more = kv_next(&p, &kv)) != 0) {
        const char *b = kv.b, *e = kv.e;
        if (more < 0) {
            snprintf(err, errlen, "route rule '%.*s' has no '='", (int)(e - b), b);
            return -1;
        }
        const char *mb = kv.kb, *me = kv.ke, *vb = kv.vb, *ve = kv.ve;
        const char *slash = memchr(vb, '/', (size_t)(ve - vb));
        const char *ge = slash ? slash : ve;
        char g[KF_GROUP_MAX + 1], pr[16] = "";
        size_t gl = (size_t)(ge - vb);
        if (gl == 0 || gl > KF_GROUP_MAX) {
            snprintf(err, errlen, "route rule '%.*s': bad group", (int)(e - b), b);
            return -1;
        }
        memcpy(g, vb, gl);
        g[gl] = '\0';
        int prio = -1;
        if (slash) {
            size_t pl = (size_t)(ve - slash - 1);
            if (pl >= sizeof(pr)) pl = sizeof(pr) - 1;
            memcpy(pr, slash + 1, pl);
            pr[pl] = '\0';
            prio = kf_priority_parse(pr);
        }
        if (!kf_group_valid(g) || (slash && prio < 0)) {
            snprintf(err, errlen, "route rule '%.*s': group must match [a-z0-9_-]{1,32}, "
                     "priority high|medium|low", (int)(e - b), b);
            return -1;
        }
        size_t ml = (size_t)(me - mb);
        int hit;
        if (ml == 1 && *mb == '*') {
            hit = 1;
        } else if (ml > 8 && strncmp(mb, "channel:", 8) == 0) {
            hit = channel && strlen(channel) == ml - 8 && memcmp(channel, mb + 8, ml - 8) == 0;
        } else if (ml > 6 && strncmp(mb, "topic:", 6) == 0) {
            hit = topic && contains_nocase(topic, mb + 6, ml - 6);
        } else {
            snprintf(err, errlen, "route rule '%.*s': match must be channel:<name>, "
                     "topic:<keyword> or *", (int)(e - b), b);
            return -1;
        }
        /* Keep parsing after a hit so a syntax error anywhere is reported the same way. */
        if (hit && !matched) {
            matched = 1;
            snprintf(group, glen, "%s", g);
            *priority = prio;
        }
    }
    return matched;
}

/* Walks the "k=v" entries of spec, noting the value of key and of `*`; -1 when malformed. */
static int spec_walk(const char *spec, const char *key, long long *val, int *found_key,
                     int *found_star, long long *star) {
    const char *p = spec;
    kv_entry kv;
    int more;
    while ((more = kv_next(&p, &kv)) != 0) {
        if (more < 0 || kv.kb == kv.ke) return -1;
        const char *kb = kv.kb, *ke = kv.ke, *vb = kv.vb, *ve = kv.ve;
        for (const char *q = kb; q < ke; q++)
            if (!group_char((unsigned char)*q) && *q != '*') return -1;
        if (vb == ve) return -1;
        char num[24];
        size_t vl = (size_t)(ve - vb);
        if (vl >= sizeof(num)) return -1;
        memcpy(num, vb, vl);
        num[vl] = '\0';
        char *end;
        long long v = strtoll(num, &end, 10);
        if (*end || v < 0) return -1;
        size_t kl = (size_t)(ke - kb);
        if (kl == 1 && *kb == '*') {
            *found_star = 1;
            *star = v;
        } else if (key && strlen(key) == kl && memcmp(key, kb, kl) == 0 && !*found_key) {
            *found_key = 1;
            *val = v;
        }
    }
    return 0;
}

long long kf_spec_value(const char *spec, const char *key, long long def) {
    long long v = 0, star = 0;
    int fk = 0, fs = 0;
    if (!spec || spec_walk(spec, key, &v, &fk, &fs, &star) < 0) return def;
    return fk ? v : fs ? star : def;
}

int kf_spec_valid(const char *spec) {
    long long v = 0, star = 0;
    int fk = 0, fs = 0;
    return spec && spec_walk(spec, NULL, &v, &fk, &fs, &star) == 0;
}

/* ---- pushes ---- */

static long long jint(const json_t *o, const char *k) {
    const json_t *v = json_object_get(o, k);
    if (json_is_integer(v)) return json_integer_value(v);
    if (json_is_real(v)) return (long long)json_real_value(v);
    if (json_is_string(v)) return atoll(json_string_value(v));
    return 0;
}

static const char *jstr(const json_t *o, const char *k) {
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

json_t *kf_push_conv_assigned(const char *conv, const json_t *view) {
    json_t *msgs = json_array();
    const json_t *vm = json_object_get(view, "msgs");
    size_t i;
    const json_t *m;
    if (json_is_array(vm)) {
        json_array_foreach(vm, i, m) {
            const char *id = jstr(m, "id");
            json_array_append_new(
                msgs, json_pack("{s:s, s:s, s:{s:s, s:s, s:s}, s:s, s:I, s:s}", "conv", conv, "id", id,
                                "from", "id", jstr(m, "from"), "role", jstr(m, "role"), "name",
                                jstr(m, "name"), "text", jstr(m, "text"), "ts",
                                (json_int_t)atoll(id), "cid", jstr(m, "cid")));
        }
    }
    json_t *p = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:s, s:s, s:I, s:I, s:o}", "type", "conv.assigned",
        "conv", conv, "ticket", jstr(view, "ticket"), "channel", jstr(view, "channel"), "topic",
        jstr(view, "topic"), "customer", jstr(view, "customer"), "customer_name",
        jstr(view, "customer_name"), "level", (json_int_t)jint(view, "level"), "priority",
        jstr(view, "priority"), "group", jstr(view, "group"), "created",
        (json_int_t)jint(view, "created"), "assigned_at", (json_int_t)jint(view, "assigned_at"),
        "msgs", msgs);
    if (*jstr(view, "from")) json_object_set_new(p, "transferred_from", json_string(jstr(view, "from")));
    return p;
}

json_t *kf_push_agent_monitor(const json_t *state) {
    json_t *p = json_object();
    json_object_set_new(p, "type", json_string("monitor"));
    json_object_set_new(p, "kind", json_string("agent"));
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)state, k, v) {
        if (!strcmp(k, "groups") && !json_is_array(v))
            json_object_set_new(p, k, json_array());
        else if (json_is_real(v))
            json_object_set_new(p, k, json_integer((json_int_t)json_real_value(v)));
        else
            json_object_set(p, k, v);
    }
    return p;
}

size_t kf_json_strings(const json_t *arr, const char **out, size_t max) {
    size_t n = 0, i;
    const json_t *v;
    if (!json_is_array(arr)) return 0;
    json_array_foreach(arr, i, v) {
        if (n < max && json_is_string(v)) out[n++] = json_string_value(v);
    }
    return n;
}

void kf_staff_script_in(kf_redis *r, const char *domain, const char *name, kf_redis_cb *cb,
                        void *priv, int argc, const char **argv) {
    const char *av[24];
    char cfg[KF_KEY_MAX];
    if (argc > 23) abort();
    kf_key_staff_in(cfg, domain, "config");
    av[0] = cfg;
    for (int i = 0; i < argc; i++) av[1 + i] = argv[i];
    kf_redis_script(r, kf_redis_slot(r, cfg), name, cb, priv, 1, argc + 1, av, NULL);
}

/* ---- staff domains ---- */

/* Next name of a list at *s ending at any of stops or NUL; copies it into out (out holds one byte
 * more than a valid name, so a truncated name is still too long to be valid). Returns its length, leaves *s on the stop. */
static size_t next_name(const char **s, const char *stops, char *out, size_t outlen) {
    const char *p = *s;
    while (*p == ' ' || *p == '\t') p++;
    const char *start = p;
    while (*p && !strchr(stops, *p)) p++;
    const char *end = p;
    while (end > start && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r')) end--;
    size_t n = (size_t)(end - start);
    snprintf(out, outlen, "%.*s", (int)(n < outlen ? n : outlen - 1), start);
    *s = p;
    return n;
}

/* Walks spec: calls fn(domain, group, arg) for each listed group, in order; stops and returns
 * -1 with err set at a syntax error, or fn's nonzero answer. */
static int domains_walk(const char *spec, int (*fn)(const char *, const char *, void *),
                        void *arg, char *err, size_t errlen) {
    char dom[KF_GROUP_MAX + 2], grp[KF_GROUP_MAX + 2];
    const char *s = spec ? spec : "";
    while (*s) {
        if (*s == ';' || *s == '\n' || *s == ' ' || *s == '\t' || *s == '\r') {
            s++;
            continue;
        }
        size_t n = next_name(&s, "=;\n", dom, sizeof(dom));
        if (*s != '=') {
            snprintf(err, errlen, "staff domain '%.*s' has no '=' and groups", (int)n, dom);
            return -1;
        }
        if (!kf_group_valid(dom)) {
            snprintf(err, errlen, "staff domain name '%s' must match [a-z0-9_-]{1,32}", dom);
            return -1;
        }
        s++;
        for (;;) {
            next_name(&s, ",;\n", grp, sizeof(grp));
            if (!kf_group_valid(grp)) {
                snprintf(err, errlen, "staff domain %s: group '%s' must match [a-z0-9_-]{1,32}",
                         dom, grp);
                return -1;
            }
            int rc = fn(dom, grp, arg);
            if (rc) return rc;
            if (*s != ',') break;
            s++;
        }
    }
    return 0;
}

struct dom_find {
    const char *group;
    char *out;
    size_t outlen;
};

static int find_group(const char *dom, const char *grp, void *arg) {
    struct dom_find *f = arg;
    if (strcmp(grp, f->group) != 0) return 0;
    snprintf(f->out, f->outlen, "%s", dom);
    return 1;
}

const char *kf_staff_domain_of(const char *spec, const char *group, char *out, size_t outlen) {
    char err[8];
    struct dom_find f = {group ? group : "", out, outlen};
    if (domains_walk(spec, find_group, &f, err, sizeof(err)) != 1)
        snprintf(out, outlen, "%s", KF_STAFF_DEFAULT);
    return out;
}

int kf_staff_domain_of_groups(const char *spec, const char *groups, const char *default_group,
                              char *out, char *other, size_t outlen) {
    char g[KF_GROUP_MAX + 2], d[KF_GROUP_MAX + 1];
    const char *s = groups ? groups : "";
    int seen = 0;
    while (*s == ',') s++;
    if (!*s) {
        kf_staff_domain_of(spec, default_group, out, outlen);
        return 0;
    }
    while (*s) {
        next_name(&s, ",", g, sizeof(g));
        if (*s == ',') s++;
        if (!*g) continue;
        kf_staff_domain_of(spec, g, d, sizeof(d));
        if (!seen) {
            snprintf(out, outlen, "%s", d);
            seen = 1;
        } else if (strcmp(out, d) != 0) {
            if (other) snprintf(other, outlen, "%s", d);
            return -1;
        }
    }
    if (!seen) kf_staff_domain_of(spec, default_group, out, outlen);
    return 0;
}

struct dom_list {
    char (*out)[KF_GROUP_MAX + 1];
    size_t n, max;
};

static int list_domain(const char *dom, const char *grp, void *arg) {
    (void)grp;
    struct dom_list *l = arg;
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->out[i], dom)) return 0;
    if (l->n < l->max) snprintf(l->out[l->n++], KF_GROUP_MAX + 1, "%s", dom);
    return 0;
}

size_t kf_staff_domain_list(const char *spec, char (*out)[KF_GROUP_MAX + 1], size_t max) {
    char err[8];
    if (max == 0) return 0;
    struct dom_list l = {out, 1, max};
    snprintf(out[0], KF_GROUP_MAX + 1, "%s", KF_STAFF_DEFAULT);
    if (domains_walk(spec, list_domain, &l, err, sizeof(err)) < 0) return 1;
    return l.n;
}

struct dom_check {
    char seen_groups[512][KF_GROUP_MAX + 1];
    char seen_group_dom[512][KF_GROUP_MAX + 1];
    size_t ngroups;
    char closed[KF_STAFF_DOMAINS_MAX][KF_GROUP_MAX + 1]; /* domains whose list ended */
    size_t nclosed;
    char cur[KF_GROUP_MAX + 1];
    char *err;
    size_t errlen;
};

static int check_group(const char *dom, const char *grp, void *arg) {
    struct dom_check *c = arg;
    if (strcmp(c->cur, dom) != 0) {
        for (size_t i = 0; i < c->nclosed; i++)
            if (!strcmp(c->closed[i], dom)) {
                snprintf(c->err, c->errlen, "staff domain %s is listed twice", dom);
                return -1;
            }
        if (c->nclosed == KF_STAFF_DOMAINS_MAX) {
            snprintf(c->err, c->errlen, "at most %d staff domains", KF_STAFF_DOMAINS_MAX);
            return -1;
        }
        snprintf(c->closed[c->nclosed++], KF_GROUP_MAX + 1, "%s", dom);
        snprintf(c->cur, sizeof(c->cur), "%s", dom);
    }
    for (size_t i = 0; i < c->ngroups; i++)
        if (!strcmp(c->seen_groups[i], grp)) {
            if (!strcmp(c->seen_group_dom[i], dom))
                snprintf(c->err, c->errlen, "group %s is listed twice in staff domain %s", grp,
                         dom);
            else
                snprintf(c->err, c->errlen, "group %s is in staff domains %s and %s", grp,
                         c->seen_group_dom[i], dom);
            return -1;
        }
    if (c->ngroups == 512) {
        snprintf(c->err, c->errlen, "at most 512 groups in staff_domains");
        return -1;
    }
    snprintf(c->seen_groups[c->ngroups], KF_GROUP_MAX + 1, "%s", grp);
    snprintf(c->seen_group_dom[c->ngroups++], KF_GROUP_MAX + 1, "%s", dom);
    return 0;
}

int kf_staff_domains_valid(const char *spec, char *err, size_t errlen) {
    struct dom_check *c = kf_calloc(1, sizeof(*c));
    c->err = err;
    c->errlen = errlen;
    int rc = domains_walk(spec, check_group, c, err, errlen);
    kf_free(c);
    return rc == 0;
}

void kf_conv_script(kf_redis *r, const char *conv, const char *name, kf_redis_cb *cb, void *priv,
                    int argc, const char **argv) {
    char meta[KF_KEY_MAX], msgs[KF_KEY_MAX], log[KF_KEY_MAX];
    if (argc > 21) abort();
    kf_key_conv_meta(meta, conv);
    kf_key_conv_msgs(msgs, conv);
    kf_key_conv_log(log, conv);
    const char *av[24] = {meta, msgs, log};
    for (int i = 0; i < argc; i++) av[3 + i] = argv[i];
    kf_redis_script(r, kf_redis_slot(r, meta), name, cb, priv, 3, argc + 3, av, NULL);
}

/* ---- trend keywords ---- */

int kf_keywords_parse(const char *spec, char out[][KF_KEYWORD_MAX + 1], size_t max, char *err,
                      size_t errlen) {
    size_t n = 0;
    const char *p = spec ? spec : "";
    while (*p) {
        /* the item runs to the next ',' or '，' (U+FF0C: EF BC 8C) */
        const char *e = p;
        size_t sep = 0;
        for (; *e; e++) {
            if (*e == ',') {
                sep = 1;
                break;
            }
            /* byte by byte: the comparison stops at the terminating NUL */
            if ((unsigned char)e[0] == 0xEF && (unsigned char)e[1] == 0xBC &&
                (unsigned char)e[2] == 0x8C) {
                sep = 3;
                break;
            }
        }
        const char *b = p, *z = e;
        while (b < z && isspace((unsigned char)*b)) b++;
        while (z > b && isspace((unsigned char)z[-1])) z--;
        size_t len = (size_t)(z - b);
        if (len > KF_KEYWORD_MAX) {
            snprintf(err, errlen, "keyword '%.*s...' is longer than %d bytes", 16, b,
                     KF_KEYWORD_MAX);
            return -1;
        }
        if (len) {
            if (n == max) {
                snprintf(err, errlen, "more than %zu keywords", max);
                return -1;
            }
            for (size_t i = 0; i < len; i++)
                out[n][i] = (char)((unsigned char)b[i] < 0x80 ? tolower((unsigned char)b[i]) : b[i]);
            out[n][len] = '\0';
            n++;
        }
        p = e + sep;
    }
    return (int)n;
}

int kf_keyword_in(const char *text, size_t len, const char *kw, size_t kwlen) {
    if (kwlen == 0 || kwlen > len) return 0;
    unsigned char first = (unsigned char)kw[0];
    for (size_t i = 0; i + kwlen <= len; i++) {
        unsigned char c = (unsigned char)text[i];
        if ((c < 0x80 ? (unsigned char)tolower(c) : c) != first) continue;
        size_t k = 1;
        for (; k < kwlen; k++) {
            unsigned char t = (unsigned char)text[i + k];
            if ((t < 0x80 ? (unsigned char)tolower(t) : t) != (unsigned char)kw[k]) break;
        }
        if (k == kwlen) return 1;
    }
    return 0;
}
