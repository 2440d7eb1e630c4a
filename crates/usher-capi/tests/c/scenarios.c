/* Scenarios of the usher C API, run by tests/it/c.rs against a real usherd.
 *
 * The server list comes from USHER_LICENSE (usher_client_new(NULL, ...)). The program
 * talks to its harness by lines: it prints "ASK <what> <arg>" on stdout and reads one
 * line back on stdin once the harness has done it. Exit status 0 means every check
 * passed; a failure prints "FAIL ..." on stderr. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <dirent.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "usher.h"

#define CHECK(cond) do { if (!(cond)) { fail(__LINE__, #cond); } } while (0)
#define OK(call) do { int32_t rc_ = (call); if (rc_ != USHER_OK) { fail_rc(__LINE__, #call, rc_); } } while (0)

static void fail(int line, const char *what) {
    fprintf(stderr, "FAIL line %d: %s\n", line, what);
    exit(1);
}

static void fail_rc(int line, const char *what, int32_t rc) {
    char detail[512];
    usher_last_error_detail(detail, sizeof detail);
    fprintf(stderr, "FAIL line %d: %s returned %d (%s): %s\n", line, what, (int)rc,
            usher_status_message(rc), detail);
    exit(1);
}

static void sleep_ms(long ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

/* Asks the harness to do something and waits until it is done. */
static void ask(const char *what, unsigned long long arg) {
    char line[64];
    printf("ASK %s %llu\n", what, arg);
    fflush(stdout);
    if (fgets(line, sizeof line, stdin) == NULL) {
        fail(__LINE__, "the harness went away");
    }
}

static usher_client *new_client(int manual) {
    usher_client *c = NULL;
    OK(usher_client_new(NULL, &c));
    OK(usher_client_set_int(c, USHER_OPT_INSECURE_PLAINTEXT, 1));
    OK(usher_client_set_int(c, USHER_OPT_CONNECT_TIMEOUT_MS, 2000));
    OK(usher_client_set_int(c, USHER_OPT_REQUEST_TIMEOUT_MS, 20000));
    OK(usher_client_set_int(c, USHER_OPT_MANUAL_HEARTBEAT, manual));
    OK(usher_client_set_str(c, USHER_OPT_PROGRAM, "scenarios"));
    return c;
}

/* Polls the status (up to 20 s) until it is `want`. */
static void wait_status(usher_license *lic, int32_t want) {
    int32_t status = 0;
    int i;
    for (i = 0; i < 400; i++) {
        usher_license_status(lic, &status);
        if (status == want) {
            return;
        }
        sleep_ms(50);
    }
    fprintf(stderr, "FAIL: status %d, waited for %d\n", (int)status, (int)want);
    exit(1);
}

/* What the event callback saw. */
struct seen {
    int lost, connection_lost, reconnected, granted;
    int32_t reentrant_rc;
    usher_client *client;
};

static void on_event(int32_t event, uint64_t lease_id, const char *detail, void *user_data) {
    struct seen *seen = (struct seen *)user_data;
    usher_license *other = NULL;
    (void)lease_id;
    (void)detail;
    switch (event) {
    case USHER_EVENT_LICENSE_LOST:
        /* A blocking call from a callback is refused, not deadlocked. */
        seen->reentrant_rc = usher_checkout(seen->client, "cad", NULL, 1, USHER_CHECKOUT_NOWAIT, 0, &other);
        seen->lost++;
        break;
    case USHER_EVENT_CONNECTION_LOST: seen->connection_lost++; break;
    case USHER_EVENT_RECONNECTED: seen->reconnected++; break;
    case USHER_EVENT_LICENSE_GRANTED: seen->granted++; break;
    default: break;
    }
}

static volatile int sink;

static void wait_for(volatile int *counter, const char *what) {
    int i;
    for (i = 0; i < 400 && *counter == 0; i++) {
        sleep_ms(50);
    }
    if (*counter == 0) {
        fprintf(stderr, "FAIL: no %s event\n", what);
        exit(1);
    }
}

static int grant(void) {
    usher_client *c = new_client(0);
    usher_license *lic = NULL;
    uint64_t lease = 0;
    uint32_t count = 0;
    int64_t expiry = -1;
    int32_t status = 0, verified = -1;
    char server[64], small[4], statement[4096];
    CHECK(usher_abi_version() == USHER_ABI_VERSION);
    CHECK(strcmp(usher_version(), USHER_HEADER_VERSION) == 0);
    OK(usher_checkout(c, "cad", "2025", 2, USHER_CHECKOUT_NOWAIT, 0, &lic));
    OK(usher_license_status(lic, &status));
    CHECK(status == USHER_STATUS_GRANTED);
    OK(usher_license_lease_id(lic, &lease));
    CHECK(lease != 0);
    OK(usher_license_count(lic, &count));
    CHECK(count == 2);
    OK(usher_license_expiry(lic, &expiry));
    CHECK(expiry == 0);
    OK(usher_license_verified(lic, &verified));
    CHECK(verified == 0);
    /* Not verified, so no statement to pass on. */
    strcpy(statement, "x");
    OK(usher_license_statement(lic, statement, sizeof statement));
    CHECK(statement[0] == '\0');
    OK(usher_license_server(lic, server, sizeof server));
    CHECK(strstr(server, "@127.0.0.1") != NULL);
    CHECK(usher_license_server(lic, small, sizeof small) == USHER_E_BUFFER_TOO_SMALL);
    CHECK(strlen(small) == 3);
    ask("INUSE", 2);
    OK(usher_checkin(lic));
    ask("INUSE", 0);
    OK(usher_client_free(c));
    return 0;
}

static int deny(void) {
    usher_client *c = new_client(0);
    usher_license *a = NULL, *b = NULL;
    char detail[256];
    int32_t rc;
    CHECK(usher_checkout(c, "nosuch", NULL, 1, USHER_CHECKOUT_NOWAIT, 0, &b) == USHER_E_NO_SUCH_FEATURE);
    CHECK(b == NULL);
    OK(usher_last_error_detail(detail, sizeof detail));
    CHECK(strstr(detail, "nosuch") != NULL);
    CHECK(usher_checkout(c, "cad", "2030", 1, USHER_CHECKOUT_NOWAIT, 0, &b) == USHER_E_VERSION_TOO_NEW);
    OK(usher_checkout(c, "cad", NULL, 3, USHER_CHECKOUT_NOWAIT, 0, &a));
    rc = usher_checkout(c, "cad", NULL, 1, USHER_CHECKOUT_NOWAIT, 0, &b);
    CHECK(rc == USHER_E_ALL_IN_USE);
    CHECK(usher_status_retryable(rc) == 1);
    CHECK(usher_status_retryable(USHER_E_NO_SUCH_FEATURE) == 0);
    CHECK(strcmp(usher_status_message(rc), "all seats in use") == 0);
    CHECK(usher_checkout(c, "cad", NULL, 1, USHER_CHECKOUT_WAIT, 300, &b) == USHER_E_WAIT_TIMED_OUT);
    /* Invalid values are refused, not undefined behaviour. */
    CHECK(usher_checkout(c, "cad", NULL, 1, 77, 0, &b) == USHER_E_INVALID_OPTION);
    CHECK(usher_checkout(c, NULL, NULL, 1, USHER_CHECKOUT_NOWAIT, 0, &b) == USHER_E_INVALID_ARGUMENT);
    CHECK(usher_checkout(c, "cad", NULL, 0, USHER_CHECKOUT_NOWAIT, 0, &b) == USHER_E_INVALID_ARGUMENT);
    CHECK(usher_checkout(c, "\xff", NULL, 1, USHER_CHECKOUT_NOWAIT, 0, &b) == USHER_E_INVALID_ARGUMENT);
    CHECK(usher_client_set_int(c, 9999, 1) == USHER_E_INVALID_OPTION);
    CHECK(usher_client_set_int(c, USHER_OPT_REQUEST_TIMEOUT_MS, 5) == USHER_E_ALREADY_CONNECTED);
    CHECK(usher_status_message(-12345) != NULL);
    OK(usher_checkin(a));
    OK(usher_client_free(c));
    {
        usher_client *bad = NULL;
        CHECK(usher_client_new("x@host", &bad) == USHER_E_BAD_SERVER_LIST);
        CHECK(bad == NULL);
        OK(usher_client_new("1@127.0.0.1", &bad));
        OK(usher_client_set_int(bad, USHER_OPT_CONNECT_TIMEOUT_MS, 300));
        CHECK(usher_checkout(bad, "cad", NULL, 1, USHER_CHECKOUT_NOWAIT, 0, &b) == USHER_E_UNREACHABLE);
        OK(usher_client_free(bad));
    }
    return 0;
}

static int queue(void) {
    usher_client *holder = new_client(0), *waiter = new_client(0);
    usher_license *held = NULL, *queued = NULL, *blocked = NULL;
    struct seen seen;
    int32_t status = 0;
    memset(&seen, 0, sizeof seen);
    OK(usher_client_set_callback(waiter, on_event, &seen));
    OK(usher_checkout(holder, "cad", NULL, 3, USHER_CHECKOUT_NOWAIT, 0, &held));
    OK(usher_checkout(waiter, "cad", NULL, 1, USHER_CHECKOUT_QUEUE, 20000, &queued));
    OK(usher_license_status(queued, &status));
    CHECK(status == USHER_STATUS_QUEUED);
    {
        uint64_t lease = 0;
        CHECK(usher_license_lease_id(queued, &lease) == USHER_E_NOT_GRANTED);
    }
    sleep_ms(300);
    OK(usher_license_status(queued, &status));
    CHECK(status == USHER_STATUS_QUEUED);
    OK(usher_checkin(held));
    wait_status(queued, USHER_STATUS_GRANTED);
    wait_for(&seen.granted, "granted");
    /* A blocking wait, granted when another holder gives its seats back. */
    ask("HOLD_THEN_RELEASE", 2);
    OK(usher_checkout(waiter, "cad", NULL, 2, USHER_CHECKOUT_WAIT, 20000, &blocked));
    ask("INUSE", 3);
    OK(usher_client_free(holder));
    OK(usher_client_free(waiter));
    (void)sink;
    return 0;
}

static int lost(void) {
    usher_client *c = new_client(0);
    usher_license *lic = NULL;
    uint64_t lease = 0;
    struct seen seen;
    memset(&seen, 0, sizeof seen);
    seen.client = c;
    OK(usher_client_set_callback(c, on_event, &seen));
    OK(usher_checkout(c, "cad", NULL, 1, USHER_CHECKOUT_NOWAIT, 0, &lic));
    OK(usher_license_lease_id(lic, &lease));
    ask("REMOVE", lease);
    wait_status(lic, USHER_STATUS_LOST);
    wait_for(&seen.lost, "license lost");
    CHECK(seen.reentrant_rc == USHER_E_REENTRANT);
    OK(usher_checkin(lic));
    OK(usher_client_free(c));
    return 0;
}

static int restart(void) {
    usher_client *c = new_client(0);
    usher_license *lic = NULL;
    struct seen seen;
    memset(&seen, 0, sizeof seen);
    OK(usher_client_set_callback(c, on_event, &seen));
    OK(usher_checkout(c, "cad", NULL, 1, USHER_CHECKOUT_NOWAIT, 0, &lic));
    ask("RESTART", 0);
    wait_for(&seen.connection_lost, "connection lost");
    wait_for(&seen.reconnected, "reconnected");
    wait_status(lic, USHER_STATUS_GRANTED);
    ask("INUSE", 1);
    CHECK(seen.lost == 0);
    OK(usher_client_free(c));
    return 0;
}

static int free_checks_in(void) {
    usher_client *c = new_client(0);
    usher_license *a = NULL, *b = NULL;
    OK(usher_checkout(c, "cad", NULL, 2, USHER_CHECKOUT_NOWAIT, 0, &a));
    OK(usher_checkout(c, "sim", NULL, 1, USHER_CHECKOUT_NOWAIT, 0, &b));
    ask("INUSE", 3);
    /* No checkin: freeing the client checks in everything and frees the licenses. */
    OK(usher_client_free(c));
    ask("INUSE", 0);
    return 0;
}

static int count_threads(void) {
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    int n = 0;
    if (d == NULL) {
        return -1;
    }
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.') {
            n++;
        }
    }
    closedir(d);
    return n;
}

static int manual(void) {
    usher_client *c = new_client(1);
    usher_license *lic = NULL;
    uint64_t interval = 0;
    int32_t status = 0;
    int i;
    OK(usher_checkout(c, "cad", NULL, 1, USHER_CHECKOUT_NOWAIT, 0, &lic));
    OK(usher_heartbeat_interval_ms(c, &interval));
    CHECK(interval > 0);
    /* No library thread: the application owns every thread. */
    CHECK(count_threads() == 1);
    /* Held for longer than the server's session TTL, by manual heartbeats alone. */
    for (i = 0; i < 50; i++) {
        OK(usher_heartbeat(c));
        sleep_ms(100);
    }
    OK(usher_license_status(lic, &status));
    CHECK(status == USHER_STATUS_GRANTED);
    ask("INUSE", 1);
    CHECK(count_threads() == 1);
    OK(usher_checkin(lic));
    ask("INUSE", 0);
    OK(usher_client_free(c));
    return 0;
}

static int forked(void) {
    usher_client *c = new_client(0);
    usher_license *lic = NULL, *other = NULL;
    pid_t pid;
    int wstatus = 0;
    OK(usher_checkout(c, "cad", NULL, 1, USHER_CHECKOUT_NOWAIT, 0, &lic));
    pid = fork();
    if (pid == 0) {
        int ok = usher_checkout(c, "cad", NULL, 1, USHER_CHECKOUT_NOWAIT, 0, &other) == USHER_E_FORKED
            && usher_client_free(c) == USHER_E_FORKED;
        /* Exec, as most children do: the parent's client is left alone, not freed (a
         * memory checker would count it as leaked at an _exit()). */
        execlp(ok ? "true" : "false", ok ? "true" : "false", (char *)NULL);
        _exit(3);
    }
    CHECK(pid > 0);
    CHECK(waitpid(pid, &wstatus, 0) == pid);
    CHECK(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);
    /* The parent's seat is untouched by the child. */
    ask("INUSE", 1);
    OK(usher_client_free(c));
    return 0;
}

int main(int argc, char **argv) {
    const char *name = argc > 1 ? argv[1] : "";
    if (strcmp(name, "grant") == 0) return grant();
    if (strcmp(name, "deny") == 0) return deny();
    if (strcmp(name, "queue") == 0) return queue();
    if (strcmp(name, "lost") == 0) return lost();
    if (strcmp(name, "restart") == 0) return restart();
    if (strcmp(name, "free") == 0) return free_checks_in();
    if (strcmp(name, "manual") == 0) return manual();
    if (strcmp(name, "fork") == 0) return forked();
    fprintf(stderr, "unknown scenario %s\n", name);
    return 2;
}
