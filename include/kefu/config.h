/* Configuration: a table of typed options filled from defaults, a file, the environment
 * (KEFU_<NAME>) and command-line flags (--name value), in that order of precedence. */
#ifndef KEFU_CONFIG_H
#define KEFU_CONFIG_H

#include <stddef.h>

typedef enum { KF_OPT_INT, KF_OPT_STR, KF_OPT_BOOL } kf_opt_type;

typedef struct kf_option {
    const char *name;       /* lower_snake_case; flags accept dashes for underscores */
    kf_opt_type type;
    size_t offset;          /* of a long long (INT, BOOL) or char * (STR) in the config struct */
    const char *def;        /* default, as text */
    long long min, max;     /* bounds for INT */
    int reloadable;         /* applied again on SIGHUP */
    const char *doc;        /* one line for --help and docs/operations.md */
} kf_option;

/** Fills cfg from defaults, then `file` (when non-NULL; lines "name value" or "name = value",
 * '#' comments), then the environment, then argv flags ("--name value", "--name=value"; a BOOL
 * flag alone means yes). Flags not in the table are errors except those listed in `passthru`
 * (NULL-terminated names handled by the caller, e.g. "config"); when `only_reloadable` is set,
 * only reloadable options change. Returns 0, or -1 with a message in err. String values are
 * malloc'd and owned by cfg (freed by kf_config_free). */
int kf_config_load(const kf_option *opts, void *cfg, const char *file, int argc, char **argv,
                   const char *const *passthru, int only_reloadable, char *err, size_t errlen);

/** Frees the strings of cfg. */
void kf_config_free(const kf_option *opts, void *cfg);

/** Prints every option with its default and doc (for --help). */
void kf_config_usage(const kf_option *opts, const char *prog);

/** Finds the value of "--config FILE" / "--config=FILE" in argv, or env KEFU_CONFIG; NULL when
 * absent. */
const char *kf_config_file_arg(int argc, char **argv);

#endif
