/* loop.c - what every file of the node calls and which calls none of
 * them: the clock, the log line, and waking the Raft driver (node.h). */
#include <event2/event.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "node.h"

double lkvnet_node_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void lkvnet_node_log(lkvnet_server *s, const char *fmt, ...) {
  char line[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (s->log != NULL) {
    s->log(s->log_ctx, line);
  } else {
    char ts[32];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
    fprintf(stderr, "%s lunakv node %s: %s\n", ts, s->my_url ? s->my_url : "-",
            line);
  }
}

void lkvnet_node_wake(lkvnet_server *s) {
  if (s->ready_ev != NULL) event_active(s->ready_ev, EV_TIMEOUT, 0);
}
