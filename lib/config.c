/* Configuration from defaults, file, environment and flags over a table of typed options. */
#include "kefu/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kefu/alloc.h"

static const kf_option *find_opt(const kf_option *opts, const char *name, size_t len) {
    char norm[64];
    if (len == 0 || len >= sizeof(norm)) return NULL;
    for (size_t i = 0; i < len; i++) norm[i] = name[i] == '-' ? '_' : (char)tolower((unsigned char)name[i]);
    norm[len] = '\0';
    for (const kf_option *o = opts; o->name; o++)
        if (strcmp(o->name, norm) == 0) return o;
    return NULL;
}

static int set_opt(const kf_option *o, void *cfg, const char *val, char *err, size_t errlen) {
    char *base = cfg;
    if (o->type == KF_OPT_STR) {
        char **slot = (char **)(base + o->offset);
        kf_free(*slot);
        *slot = kf_strdup(val);
        return 0;
    }
    long long *slot = (long long *)(base + o->offset);
    if (o->type == KF_OPT_BOOL) {
        if (!strcasecmp(val, "yes") || !strcasecmp(val, "true") || !strcmp(val, "1") || !strcasecmp(val, "on")) {
            *slot = 1;
        } else if (!strcasecmp(val, "no") || !strcasecmp(val, "false") || !strcmp(val, "0") || !strcasecmp(val, "off")) {
            *slot = 0;
        } else {
            snprintf(err, errlen, "option %s: expected yes or no, got '%s'", o->name, val);
            return -1;
        }
        return 0;
    }
    char *end;
    errno = 0;
    long long v = strtoll(val, &end, 10);
    if (errno || end == val || *end != '\0') {
        snprintf(err, errlen, "option %s: expected an integer, got '%s'", o->name, val);
        return -1;
    }
    if (v < o->min || v > o->max) {
        snprintf(err, errlen, "option %s: %lld is out of range %lld..%lld", o->name, v, o->min, o->max);
        return -1;
    }
    *slot = v;
    return 0;
}

static int is_passthru(const char *const *passthru, const char *name, size_t len) {
    for (; passthru && *passthru; passthru++)
        if (strlen(*passthru) == len && strncmp(*passthru, name, len) == 0) return 1;
    return 0;
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = '\0';
    return s;
}

static int load_file(const kf_option *opts, void *cfg, const char *file, int only_reloadable,
                     char *err, size_t errlen) {
    FILE *f = fopen(file, "r");
    if (!f) {
        snprintf(err, errlen, "cannot open config file %s: %s", file, strerror(errno));
        return -1;
    }
    char line[4096];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        char *s = trim(line);
        if (*s == '\0' || *s == '#') continue;
        size_t klen = strcspn(s, " \t=");
        char *v = s + klen;
        while (*v == ' ' || *v == '\t') v++;
        if (*v == '=') v++;
        v = trim(v);
        size_t vlen = strlen(v);
        if (vlen >= 2 && ((v[0] == '"' && v[vlen - 1] == '"') || (v[0] == '\'' && v[vlen - 1] == '\''))) {
            v[vlen - 1] = '\0';
            v++;
        }
        const kf_option *o = find_opt(opts, s, klen);
        if (!o) {
            snprintf(err, errlen, "%s:%d: unknown option '%.*s'", file, lineno, (int)klen, s);
            rc = -1;
            break;
        }
        if (only_reloadable && !o->reloadable) continue;
        char sub[256];
        if (set_opt(o, cfg, v, sub, sizeof(sub)) < 0) {
            snprintf(err, errlen, "%s:%d: %s", file, lineno, sub);
            rc = -1;
            break;
        }
    }
    fclose(f);
    return rc;
}

int kf_config_load(const kf_option *opts, void *cfg, const char *file, int argc, char **argv,
                   const char *const *passthru, int only_reloadable, char *err, size_t errlen) {
    for (const kf_option *o = opts; o->name; o++) {
        if (only_reloadable && !o->reloadable) continue;
        if (o->def && set_opt(o, cfg, o->def, err, errlen) < 0) return -1;
    }
    if (file && load_file(opts, cfg, file, only_reloadable, err, errlen) < 0) return -1;
    for (const kf_option *o = opts; o->name; o++) {
        if (only_reloadable && !o->reloadable) continue;
        char env[80] = "KEFU_";
        for (size_t i = 0; o->name[i] && i < sizeof(env) - 6; i++) {
            env[5 + i] = (char)toupper((unsigned char)o->name[i]);
            env[6 + i] = '\0';
        }
        const char *v = getenv(env);
        if (v && set_opt(o, cfg, v, err, errlen) < 0) return -1;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0) {
            snprintf(err, errlen, "unexpected argument '%s'", a);
            return -1;
        }
        a += 2;
        const char *eq = strchr(a, '=');
        size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
        if (is_passthru(passthru, a, nlen)) {
            if (!eq && i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) i++;
            continue;
        }
        const kf_option *o = find_opt(opts, a, nlen);
        if (!o) {
            snprintf(err, errlen, "unknown option '--%.*s' (see --help)", (int)nlen, a);
            return -1;
        }
        const char *val;
        if (eq) {
            val = eq + 1;
        } else if (o->type == KF_OPT_BOOL && (i + 1 >= argc || strncmp(argv[i + 1], "--", 2) == 0)) {
            val = "yes";
        } else if (i + 1 < argc) {
            val = argv[++i];
        } else {
            snprintf(err, errlen, "option --%s needs a value", o->name);
            return -1;
        }
        if (only_reloadable && !o->reloadable) continue;
        if (set_opt(o, cfg, val, err, errlen) < 0) return -1;
    }
    return 0;
}

void kf_config_free(const kf_option *opts, void *cfg) {
    for (const kf_option *o = opts; o->name; o++) {
        if (o->type != KF_OPT_STR) continue;
        char **slot = (char **)((char *)cfg + o->offset);
        kf_free(*slot);
        *slot = NULL;
    }
}

void kf_config_usage(const kf_option *opts, const char *prog) {
    printf("usage: %s [--config FILE] [--option value ...]\n\n"
           "Every option may also be set as NAME value in the config file or as KEFU_NAME in the\n"
           "environment (flags win over the environment, which wins over the file).\n\n", prog);
    for (const kf_option *o = opts; o->name; o++) {
        char flag[64];
        snprintf(flag, sizeof(flag), "--%s", o->name);
        for (char *p = flag + 2; *p; p++)
            if (*p == '_') *p = '-';
        printf("  %-26s %s (default: %s)%s\n", flag, o->doc, o->def && *o->def ? o->def : "none",
               o->reloadable ? " [SIGHUP]" : "");
    }
}

const char *kf_config_file_arg(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) return argv[i + 1];
        if (strncmp(argv[i], "--config=", 9) == 0) return argv[i] + 9;
    }
    return getenv("KEFU_CONFIG");
}
