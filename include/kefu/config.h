/* Configuration: a table of typed options filled from defaults, a file, the environment
 * (KEFU_<NAME>) and command-line flags (--name value), in that order of precedence. */
#ifndef KEFU_CONFIG_H
#define KEFU_CONFIG_H

#include <stddef.h>
#include <stdio.h>

typedef enum { KF_OPT_INT, KF_OPT_STR, KF_OPT_BOOL } kf_opt_type;

typedef struct kf_option {
    const char *name;       /* lower_snake_case; flags accept dashes for underscores */
    kf_opt_type type;
    size_t offset;          /* of a long long (INT, BOOL) or char * (STR) in the config struct */
    const char *def;        /* default, as text */
    long long min, max;     /* bounds for INT */
    int reloadable;         /* applied again on SIGHUP */
    const char *doc;        /* --help, docs/operations.md and the example files: full sentences */
    const char *section;    /* heading the option is listed under (consecutive rows share it) */
} kf_option;

/* What --dump-config needs besides the table: the program and where its file goes. */
typedef struct kf_config_info {
    const char *prog;    /* "kefu-gateway" */
    const char *install; /* where the file is installed, e.g. "/etc/kefu/gateway.conf" */
    const char *intro;   /* a paragraph on what to set first, for the example file */
    const char *usage;   /* more usage lines for --help (NULL: none) */
} kf_config_info;

/* Rows of options both programs read, written once so that their defaults, bounds and meaning
 * cannot drift apart (a worker that trimmed node inboxes shorter than the gateways keep them
 * would lose pushes). T is the program's option struct; KF_SHARED_OPTION_CHECK(T) at file
 * scope proves its fields have the types the rows assume. */
#define KF_SHARED_OPTION_REDIS(T, sec)                                                                \
    {"redis", KF_OPT_STR, offsetof(T, redis), "127.0.0.1:6379", 0, 0, 0,                                \
     "Redis: one stand-alone server `host:port`, or seed nodes of one Redis Cluster (one or more, "     \
     "comma-separated `host:port`; any nodes of it, masters or replicas: the rest is read from the "    \
     "cluster). Which of the two is asked of the server. Several stand-alone servers are refused "      \
     "(docs/operations.md, \"Migrating from a shard list\"). Every gateway and every worker must "      \
     "reach the same server or the same cluster.", sec}
#define KF_SHARED_OPTION_REDIS_TIMEOUT(T, sec)                                                        \
    {"redis_timeout_ms", KF_OPT_INT, offsetof(T, redis_timeout_ms), "5000", 50, 600000, 0,              \
     "Redis connect timeout, and how long a connection with commands pending may go without any "       \
     "reply before it is dropped (its requests fail: a gateway answers `unavailable`) and "             \
     "re-established. A busy Redis that keeps answering is never dropped. In a cluster also the "      \
     "longest a command is retried while its slot answers `TRYAGAIN` or `CLUSTERDOWN`. Blocking "      \
     "reads (node inboxes, the lifecycle stream) block for 1 s and get 1 s more.", sec}
#define KF_SHARED_OPTION_INBOX_MAXLEN(T, sec)                                                         \
    {"inbox_maxlen", KF_OPT_INT, offsetof(T, inbox_maxlen), "1000000", 100, 1000000000000LL, 1,         \
     "most entries a node inbox stream keeps (approximate `MAXLEN` on each append, by gateways and "    \
     "workers alike). A live gateway trims what it has read every second, so this bounds only the "     \
     "inbox of a node that is down.", sec}
#define KF_SHARED_OPTION_LOG_LEVEL(T, sec)                                                            \
    {"log_level", KF_OPT_STR, offsetof(T, log_level), "info", 0, 0, 1,                                  \
     "`debug`, `info`, `warn`, `error` or `off`.", sec}
#define KF_SHARED_OPTION_CHECK(T)                                                                     \
    _Static_assert(__builtin_types_compatible_p(__typeof__(((T *)0)->redis), char *) &&               \
                       __builtin_types_compatible_p(__typeof__(((T *)0)->log_level), char *) &&       \
                       __builtin_types_compatible_p(__typeof__(((T *)0)->redis_timeout_ms),           \
                                                    long long) &&                                     \
                       __builtin_types_compatible_p(__typeof__(((T *)0)->inbox_maxlen), long long),   \
                   "shared option fields of " #T " have the wrong types")

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

/** Prints the table as `format`: "markdown" (the tables of docs/operations.md, one per section)
 * or "example" (a configuration file with every option commented out at its default). Returns
 * 0, or -1 for an unknown format. */
int kf_config_dump(const kf_option *opts, const kf_config_info *info, const char *format, FILE *out);

/** Handles the flags that print instead of run: --help/-h, and --dump-config FORMAT (or
 * --dump-config=FORMAT). Returns the exit status to leave with (0; 2 for an unknown format), or
 * -1 when neither is given. */
int kf_config_print_flags(const kf_option *opts, const kf_config_info *info, int argc, char **argv);

/** Finds the value of "--config FILE" / "--config=FILE" in argv, or env KEFU_CONFIG; NULL when
 * absent. */
const char *kf_config_file_arg(int argc, char **argv);

#endif
