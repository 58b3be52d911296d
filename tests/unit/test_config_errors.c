/*
 * Unit tests for edge/core/config.c's error messages: every error is one line, whatever bytes the
 * config file's keys and values hold (found by tests/fuzz/fuzz_config: a key written "dra\n-x"
 * put a raw newline into the message, which main prints as a log line). Control characters in
 * a message are shown as '?'.
 *
 * Not covered: the options themselves (tests/unit/test_config.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "tap.h"
#include "edge/core/config.h"

/* Loads `json` as a config file; returns the result with the message in err. */
static int
load_text(const char *json, char *err, size_t errlen)
{
    char path[] = "/tmp/pushedge-test-config.XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0 || write(fd, json, strlen(json)) != (ssize_t)strlen(json))
        return -1;
    close(fd);
    char *argv[] = {"pushedge", "--config", path, NULL};
    char *envp[] = {NULL};
    pe_config_t cfg;
    err[0] = '\0';
    int r = pe_config_load(&cfg, 3, argv, envp, stdout, err, errlen);
    pe_config_dispose(&cfg);
    unlink(path);
    return r;
}

static int
has_control(const char *s)
{
    for (; *s != '\0'; ++s)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 1;
    return 0;
}

static void
test_one_line(void)
{
    static const char *inputs[] = {
        "{\"dra\\n-timeout\":5}",           /* a key with a newline: unknown setting */
        "{\"threads\":\"1\\r\\n2\"}",       /* a value with CR LF: not an integer */
        "{\"log-level\":\"x\\u001b[31m\"}", /* an escape sequence */
        "{\"listen\":[\"a\\tb\"]}",         /* a tab (and no port) */
        "{\"redis\":\"\\u007f\"}",          /* DEL */
    };
    char err[512];
    for (size_t i = 0; i != sizeof(inputs) / sizeof(inputs[0]); ++i) {
        TAP_EQ_INT(load_text(inputs[i], err, sizeof(err)), PE_CFG_ERROR, "refused: %s", inputs[i]);
        TAP_OK(err[0] != '\0' && !has_control(err), "one printable line: %s", err);
    }
    TAP_EQ_INT(load_text("{\"dra\\n-timeout\":5}", err, sizeof(err)), PE_CFG_ERROR, "refused");
    TAP_OK(strstr(err, "\"dra?-timeout\": unknown setting") != NULL, "the key is shown with '?': %s", err);
}

int
main(void)
{
    tap_subtest("one line", test_one_line);
    return tap_done();
}
