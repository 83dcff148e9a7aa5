/* Unit tests for the option table: defaults, file, environment, flags, bounds, reload. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "kefu/config.h"

typedef struct {
    char *name;
    long long port;
    long long flag;
    long long limit;
} cfg_t;

static const kf_option table[] = {
    {"name", KF_OPT_STR, offsetof(cfg_t, name), "kefu", 0, 0, 0, "a name", "First"},
    {"port", KF_OPT_INT, offsetof(cfg_t, port), "8080", 1, 65535, 0, "a port", "First"},
    {"flag", KF_OPT_BOOL, offsetof(cfg_t, flag), "no", 0, 1, 0, "a switch", "Second"},
    {"max_limit", KF_OPT_INT, offsetof(cfg_t, limit), "10", 0, 100, 1, "reloadable.", "Second"},
    {NULL, 0, 0, NULL, 0, 0, 0, NULL, NULL},
};

static char err[512];

static int load(cfg_t *c, const char *file, int argc, char **argv, int only_reloadable) {
    static const char *const passthru[] = {"config", NULL};
    return kf_config_load(table, c, file, argc, argv, passthru, only_reloadable, err, sizeof(err));
}

static const char *write_file(const char *text) {
    static char path[64];
    snprintf(path, sizeof(path), "/tmp/kefu-test-config-%d", (int)getpid());
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

static void test_defaults(void **state) {
    (void)state;
    cfg_t c = {0};
    char *argv[] = {"prog"};
    assert_int_equal(load(&c, NULL, 1, argv, 0), 0);
    assert_string_equal(c.name, "kefu");
    assert_int_equal(c.port, 8080);
    assert_int_equal(c.flag, 0);
    kf_config_free(table, &c);
    assert_null(c.name);
}

static void test_precedence(void **state) {
    (void)state;
    cfg_t c = {0};
    const char *f = write_file("# comment\nname = fromfile\nport 1000\nmax_limit=\"20\"\n");
    setenv("KEFU_PORT", "2000", 1);
    char *argv[] = {"prog", "--config", (char *)f, "--max-limit", "30", "--flag"};
    assert_int_equal(load(&c, f, 6, argv, 0), 0);
    assert_string_equal(c.name, "fromfile"); /* file only */
    assert_int_equal(c.port, 2000);          /* env beats file */
    assert_int_equal(c.limit, 30);           /* flag beats file, dashes accepted */
    assert_int_equal(c.flag, 1);             /* a bare bool flag means yes */
    unsetenv("KEFU_PORT");
    kf_config_free(table, &c);
    unlink(f);
}

static void test_errors(void **state) {
    (void)state;
    cfg_t c = {0};
    char *a1[] = {"prog", "--port", "70000"};
    assert_int_equal(load(&c, NULL, 3, a1, 0), -1);
    assert_non_null(strstr(err, "out of range"));
    char *a2[] = {"prog", "--port=12x"};
    assert_int_equal(load(&c, NULL, 2, a2, 0), -1);
    assert_non_null(strstr(err, "integer"));
    char *a3[] = {"prog", "--nope", "1"};
    assert_int_equal(load(&c, NULL, 3, a3, 0), -1);
    assert_non_null(strstr(err, "unknown option"));
    char *a4[] = {"prog", "--flag=maybe"};
    assert_int_equal(load(&c, NULL, 2, a4, 0), -1);
    char *a5[] = {"prog", "--name"};
    assert_int_equal(load(&c, NULL, 2, a5, 0), -1);
    assert_non_null(strstr(err, "needs a value"));
    const char *f = write_file("port 1\nbogus 2\n");
    char *a6[] = {"prog"};
    assert_int_equal(load(&c, f, 1, a6, 0), -1);
    assert_non_null(strstr(err, ":2: unknown option"));
    assert_int_equal(load(&c, "/nonexistent/kefu.conf", 1, a6, 0), -1);
    kf_config_free(table, &c);
    unlink(f);
}

static void test_reload_only_reloadable(void **state) {
    (void)state;
    cfg_t c = {0};
    char *argv[] = {"prog", "--port", "1234"};
    assert_int_equal(load(&c, NULL, 3, argv, 0), 0);
    const char *f = write_file("port 999\nmax_limit 42\n");
    char *none[] = {"prog"};
    assert_int_equal(load(&c, f, 1, none, 1), 0);
    assert_int_equal(c.port, 1234); /* not reloadable: unchanged */
    assert_int_equal(c.limit, 42);
    kf_config_free(table, &c);
    unlink(f);
}

static void test_config_file_arg(void **state) {
    (void)state;
    char *a1[] = {"prog", "--config", "/x.conf"};
    assert_string_equal(kf_config_file_arg(3, a1), "/x.conf");
    char *a2[] = {"prog", "--config=/y.conf"};
    assert_string_equal(kf_config_file_arg(2, a2), "/y.conf");
    unsetenv("KEFU_CONFIG");
    char *a3[] = {"prog"};
    assert_null(kf_config_file_arg(1, a3));
}

/* The example file, with every "#name value" line uncommented, loads and gives the defaults:
 * so the printed values are quoted where they must be. */
static void test_dump_example_round_trip(void **state) {
    (void)state;
    static const kf_config_info info = {"prog", "/etc/prog.conf", "Set name first.", NULL};
    char f[] = "/tmp/kefu-cfg-dump-XXXXXX";
    int fd = mkstemp(f);
    assert_true(fd >= 0);
    FILE *out = fdopen(fd, "w+");
    assert_int_equal(kf_config_dump(table, &info, "example", out), 0);
    rewind(out);
    char line[512], text[8192] = "";
    int settings = 0;
    while (fgets(line, sizeof(line), out)) {
        for (const kf_option *o = table; o->name; o++) {
            size_t n = strlen(o->name);
            if (line[0] == '#' && !strncmp(line + 1, o->name, n) && line[1 + n] == ' ') {
                memmove(line, line + 1, strlen(line));
                settings++;
            }
        }
        strncat(text, line, sizeof(text) - strlen(text) - 1);
    }
    fclose(out);
    assert_int_equal(settings, 4);
    assert_non_null(strstr(text, "# ---- First ----\n\n# A name\nname kefu\n"));
    assert_non_null(strstr(text, "# Reloadable. Range 0..100. [SIGHUP]\nmax_limit 10\n"));
    assert_non_null(strstr(text, "/etc/prog.conf"));
    assert_non_null(strstr(text, "# Set name first.\n"));
    FILE *w = fopen(f, "w");
    fputs(text, w);
    fclose(w);
    cfg_t c = {0};
    char *argv[] = {"prog"};
    assert_int_equal(kf_config_load(table, &c, f, 1, argv, NULL, 0, err, sizeof(err)), 0);
    assert_string_equal(c.name, "kefu");
    assert_int_equal(c.port, 8080);
    assert_int_equal(c.limit, 10);
    kf_config_free(table, &c);
    unlink(f);
}

static void test_dump_markdown(void **state) {
    (void)state;
    static const kf_config_info info = {"prog", "/etc/prog.conf", NULL, NULL};
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    assert_int_equal(kf_config_dump(table, &info, "markdown", out), 0);
    assert_int_equal(kf_config_dump(table, &info, "html", out), -1);
    fclose(out);
    assert_non_null(strstr(buf, "#### First\n\n| option | default | SIGHUP | meaning |\n"));
    assert_non_null(strstr(buf, "| `port` | `8080` | no | a port Range 1..65535. |\n"));
    assert_non_null(strstr(buf, "#### Second\n"));
    assert_non_null(strstr(buf, "| `max_limit` | `10` | yes | reloadable. Range 0..100. |\n"));
    assert_null(strstr(buf, "#### Options"));
    free(buf);
}

static void test_print_flags(void **state) {
    (void)state;
    static const kf_config_info info = {"prog", "/etc/prog.conf", NULL, NULL};
    char *a1[] = {"prog", "--port", "1"};
    assert_int_equal(kf_config_print_flags(table, &info, 3, a1), -1);
    char *a2[] = {"prog", "--dump-config=yaml"};
    assert_int_equal(kf_config_print_flags(table, &info, 2, a2), 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_reload_only_reloadable),
        cmocka_unit_test(test_config_file_arg),
        cmocka_unit_test(test_dump_example_round_trip),
        cmocka_unit_test(test_dump_markdown),
        cmocka_unit_test(test_print_flags),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
