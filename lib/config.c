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

/* Writes `text` wrapped at `width` columns, each line starting with `prefix` (the first with
 * `first` when non-NULL). Words longer than a line are not split. */
static void wrap(FILE *out, const char *text, const char *first, const char *prefix, int width) {
    const char *lead = first ? first : prefix;
    int col = fprintf(out, "%s", lead), fresh = 1;
    while (*text) {
        while (*text == ' ') text++;
        size_t w = strcspn(text, " ");
        if (w == 0) break;
        if (!fresh && col + 1 + (int)w > width) {
            col = fprintf(out, "\n%s", prefix) - 1;
            fresh = 1;
        }
        col += fprintf(out, "%s%.*s", fresh ? "" : " ", (int)w, text);
        fresh = 0;
        text += w;
    }
    fputc('\n', out);
}

#define BIG_MAX 1000000000000LL

/* The bounds of an INT option as text: "Range 1..65535.", "At least 100." */
static void range_text(const kf_option *o, char *buf, size_t len) {
    if (o->max >= BIG_MAX)
        snprintf(buf, len, "At least %lld.", o->min);
    else
        snprintf(buf, len, "Range %lld..%lld.", o->min, o->max);
}

static void flag_name(const kf_option *o, char *buf, size_t len) {
    snprintf(buf, len, "--%s", o->name);
    for (char *p = buf + 2; *p; p++)
        if (*p == '_') *p = '-';
}

/* --help: every option by section, with its range, default and reload behaviour. */
static void usage(const kf_option *opts, const char *prog, const char *more) {
    printf("usage: %s [--config FILE] [--option value ...]\n"
           "       %s --dump-config markdown|example\n%s\n"
           "Every option may also be set as NAME value in the config file or as KEFU_NAME in the\n"
           "environment (flags win over the environment, which wins over the file). [SIGHUP]\n"
           "marks the options re-read from the file on SIGHUP.\n", prog, prog, more ? more : "");
    const char *section = NULL;
    for (const kf_option *o = opts; o->name; o++) {
        if (o->section && (!section || strcmp(section, o->section) != 0)) {
            section = o->section;
            printf("\n%s:\n", section);
        }
        char flag[64], range[64] = "", head[96], doc[2048];
        flag_name(o, flag, sizeof(flag));
        if (o->type == KF_OPT_INT) range_text(o, range, sizeof(range));
        snprintf(doc, sizeof(doc), "%s%s%s (default: %s)%s", o->doc, *range ? " " : "", range,
                 o->def && *o->def ? o->def : "empty", o->reloadable ? " [SIGHUP]" : "");
        snprintf(head, sizeof(head), "  %-28s ", flag);
        if (strlen(head) > 31) {
            printf("  %s\n", flag);
            snprintf(head, sizeof(head), "%31s", "");
        }
        wrap(stdout, doc, head, "                               ", 100);
    }
}

/* A default as the example file writes it: quoted when empty or when it holds a space. */
static void example_value(const kf_option *o, char *buf, size_t len) {
    const char *d = o->def ? o->def : "";
    if (o->type == KF_OPT_STR && (!*d || strchr(d, ' ') || strchr(d, '#')))
        snprintf(buf, len, "\"%s\"", d);
    else
        snprintf(buf, len, "%s", d);
}

static void dump_example(const kf_option *opts, const kf_config_info *info, FILE *out) {
    fprintf(out, "# %s configuration: every option with its default, commented out.\n", info->prog);
    fprintf(out, "# Generated by `%s --dump-config example` from the option table (the same table\n"
                 "# prints --help and the tables of docs/operations.md): do not edit by hand.\n#\n",
            info->prog);
    char text[1024];
    snprintf(text, sizeof(text),
             "Install as %s (mode 0640, owner root, group kefu) and start %s with --config %s "
             "(or KEFU_CONFIG=%s).", info->install, info->prog, info->install, info->install);
    wrap(out, text, NULL, "# ", 96);
    fprintf(out, "#\n");
    wrap(out,
         "Syntax: one option per line, \"name value\" or \"name = value\"; quote a value with "
         "\"...\" or '...'. Lines starting with # are comments. A # after a value is part of the "
         "value, so keep comments on their own lines. Unknown names are errors, so each program "
         "needs its own file.", NULL, "# ", 96);
    fprintf(out, "#\n");
    wrap(out,
         "Precedence: default < this file < environment (KEFU_<NAME>) < command-line flag "
         "(--name). [SIGHUP] marks options re-read from this file on SIGHUP (systemctl reload); "
         "the others need a restart. Flags are applied again on SIGHUP, so a reload cannot change "
         "what a flag sets: keep reloadable options in this file. See docs/operations.md.", NULL, "# ", 96);
    if (info->intro) {
        fprintf(out, "#\n");
        wrap(out, info->intro, NULL, "# ", 96);
    }
    const char *section = NULL;
    for (const kf_option *o = opts; o->name; o++) {
        if (o->section && (!section || strcmp(section, o->section) != 0)) {
            section = o->section;
            fprintf(out, "\n# ---- %s ----\n", section);
        }
        char range[64] = "", doc[2048], val[512];
        if (o->type == KF_OPT_INT) range_text(o, range, sizeof(range));
        snprintf(doc, sizeof(doc), "%s%s%s%s", o->doc, *range ? " " : "", range,
                 o->reloadable ? " [SIGHUP]" : "");
        doc[0] = (char)toupper((unsigned char)doc[0]); /* a sentence here, a table cell in docs */
        fputc('\n', out);
        wrap(out, doc, NULL, "# ", 96);
        example_value(o, val, sizeof(val));
        fprintf(out, "#%s %s\n", o->name, val);
    }
}

static void dump_markdown(const kf_option *opts, const kf_config_info *info, FILE *out) {
    fprintf(out, "<!-- generated by `%s --dump-config markdown` (scripts/gen-docs.sh): edit the "
                 "option table in the code, not this text -->\n", info->prog);
    const char *section = NULL;
    for (const kf_option *o = opts; o->name; o++) {
        if (!section || (o->section && strcmp(section, o->section) != 0)) {
            section = o->section ? o->section : "Options";
            fprintf(out, "\n#### %s\n\n| option | default | SIGHUP | meaning |\n"
                         "| --- | --- | --- | --- |\n", section);
        }
        char range[64] = "";
        if (o->type == KF_OPT_INT) range_text(o, range, sizeof(range));
        const char *d = o->def ? o->def : "";
        fprintf(out, "| `%s` | %s%s%s | %s | %s%s%s |\n", o->name, *d ? "`" : "",
                *d ? d : "empty", *d ? "`" : "", o->reloadable ? "yes" : "no", o->doc,
                *range ? " " : "", range);
    }
}

int kf_config_dump(const kf_option *opts, const kf_config_info *info, const char *format, FILE *out) {
    if (strcmp(format, "markdown") == 0)
        dump_markdown(opts, info, out);
    else if (strcmp(format, "example") == 0)
        dump_example(opts, info, out);
    else
        return -1;
    return 0;
}

int kf_config_print_flags(const kf_option *opts, const kf_config_info *info, int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(opts, info->prog, info->usage);
            return 0;
        }
        const char *fmt = NULL;
        if (!strcmp(argv[i], "--dump-config"))
            fmt = i + 1 < argc ? argv[i + 1] : "";
        else if (!strncmp(argv[i], "--dump-config=", 14))
            fmt = argv[i] + 14;
        if (!fmt) continue;
        if (kf_config_dump(opts, info, fmt, stdout) < 0) {
            fprintf(stderr, "%s: --dump-config takes markdown or example\n", info->prog);
            return 2;
        }
        return fflush(stdout) == 0 ? 0 : 1;
    }
    return -1;
}

const char *kf_config_file_arg(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) return argv[i + 1];
        if (strncmp(argv[i], "--config=", 9) == 0) return argv[i] + 9;
    }
    return getenv("KEFU_CONFIG");
}
