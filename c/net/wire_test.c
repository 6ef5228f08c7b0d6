/* wire_test.c - the Raft messages' wire format (wire.c): a round trip of
 * every field, every truncation and a byte flip of a message refused or
 * decoded as what was sent. */
#include "wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

static int same_msg(const lkvnet_raft_msg *a, const lkvnet_raft_msg *b) {
  size_t i;
  if (a->type != b->type || a->from != b->from || a->to != b->to ||
      a->term != b->term || a->index != b->index ||
      a->log_term != b->log_term || a->commit != b->commit ||
      a->context != b->context || a->reject != b->reject ||
      a->hint_index != b->hint_index || a->hint_term != b->hint_term ||
      a->transfer != b->transfer || a->n_entries != b->n_entries ||
      (a->conf == NULL) != (b->conf == NULL))
    return 0;
  if (a->conf && memcmp(a->conf, b->conf, sizeof *a->conf) != 0) return 0;
  for (i = 0; i < a->n_entries; i++) {
    const lkvnet_raft_entry *x = &a->entries[i], *y = &b->entries[i];
    if (x->type != y->type || x->term != y->term || x->index != y->index ||
        x->len != y->len || (x->len && memcmp(x->data, y->data, x->len)))
      return 0;
  }
  return 1;
}

static void test_wire(void) {
  lkvnet_raft_entry es[3] = {
      {7, 41, LKVNET_RAFT_ENTRY_NOOP, NULL, 0},
      {7, 42, LKVNET_RAFT_ENTRY_NORMAL, (const unsigned char *)"\1abc", 4},
      {8, 43, LKVNET_RAFT_ENTRY_NORMAL, (const unsigned char *)"", 0}};
  lkvnet_raft_conf conf;
  lkvnet_raft_msg m[2];
  unsigned char buf[1024];
  size_t n, off, i, len;
  lkvnet_wire_msg w;
  char why[160];
  int k;
  memset(&conf, 0, sizeof conf);
  conf.voters[0] = 11;
  conf.voters[1] = 12;
  conf.learners[0] = 13;
  conf.n_voters = 2;
  conf.n_learners = 1;
  memset(m, 0, sizeof m);
  m[0].type = LKVNET_RAFT_MSG_APP;
  m[0].from = 0x1111;
  m[0].to = 0x2222;
  m[0].term = 8;
  m[0].index = 40;
  m[0].log_term = 6;
  m[0].commit = 39;
  m[0].entries = es;
  m[0].n_entries = 3;
  m[1].type = LKVNET_RAFT_MSG_SNAP;
  m[1].from = UINT64_MAX;
  m[1].to = 1;
  m[1].term = UINT64_MAX - 1;
  m[1].reject = 1;
  m[1].transfer = 1;
  m[1].hint_index = 5;
  m[1].hint_term = 4;
  m[1].context = 99;
  m[1].conf = &conf;
  n = lkvnet_wire_size(&m[0]);
  lkvnet_wire_encode(buf, &m[0]);
  lkvnet_wire_encode(buf + n, &m[1]);
  len = n + lkvnet_wire_size(&m[1]);
  memset(&w, 0, sizeof w);
  off = 0;
  for (k = 0; k < 2; k++) {
    CHECK(lkvnet_wire_decode(buf, len, &off, &w, why, sizeof why) == 1);
    CHECK(same_msg(&w.m, &m[k]));
  }
  CHECK(off == len);
  CHECK(lkvnet_wire_decode(buf, len, &off, &w, why, sizeof why) == 0);
  /* a heartbeat is 83 bytes (docs/replication.md's worked example) */
  m[1].type = LKVNET_RAFT_MSG_HEARTBEAT;
  m[1].conf = NULL;
  CHECK(lkvnet_wire_size(&m[1]) == 83);
  /* every truncation of the first message is refused, never read past */
  for (i = 1; i < n; i++) {
    unsigned char *cut = malloc(i);
    memcpy(cut, buf, i);
    off = 0;
    CHECK(lkvnet_wire_decode(cut, i, &off, &w, why, sizeof why) == -1);
    CHECK(off == 0 && why[0] != '\0');
    free(cut);
  }
  /* a flipped byte: refused, or a message of the same length (a field's
   * value changed; the transport trusts TCP for those) */
  for (i = 0; i < n; i++) {
    int rc;
    buf[i] ^= 0xff;
    off = 0;
    rc = lkvnet_wire_decode(buf, n, &off, &w, why, sizeof why);
    CHECK(rc == -1 || (rc == 1 && off == n));
    buf[i] ^= 0xff;
  }
  /* a zero sender, an unknown type, an unknown version */
  for (k = 0; k < 3; k++) {
    unsigned char b2[128];
    lkvnet_raft_msg h;
    memset(&h, 0, sizeof h);
    h.type = LKVNET_RAFT_MSG_HEARTBEAT;
    h.from = k == 0 ? 0 : 5;
    lkvnet_wire_encode(b2, &h);
    if (k == 1) b2[5] = 99;
    if (k == 2) b2[4] = 2;
    off = 0;
    CHECK(lkvnet_wire_decode(b2, lkvnet_wire_size(&h), &off, &w, why,
                             sizeof why) == -1);
  }
  lkvnet_wire_msg_free(&w);
}

int main(void) {
  test_wire();
  TEST_MAIN_END();
}
