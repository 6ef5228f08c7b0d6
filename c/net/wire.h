/* wire.h - the Raft core's messages on the wire between nodes (the body
 * of POST /raft; docs/replication.md, "The transport"). A body is any
 * number of messages, each a little-endian record:
 *
 *   0   length   4  of what follows
 *   4   version  1  (1)
 *   5   type     1  LKVNET_RAFT_MSG_*
 *   6   flags    1  1 reject, 2 transfer, 4 a configuration follows
 *   7   from, to, term, index, log_term, commit, context, hint_index,
 *       hint_term: 8 each (72 bytes)
 *   79  [voters 1, learners 1, ids 8 each]     when flags & 4
 *       entries  4  count, then per entry: type 1, term 8, index 8,
 *                   length 4, data
 *
 * Everything is checked on the way in: a length that runs past the body,
 * an unknown version or type, a zero sender. Pure functions: no I/O. */
#ifndef LKVNET_WIRE_H
#define LKVNET_WIRE_H

#include <stddef.h>

#include "raft.h"

#define LKVNET_WIRE_VERSION 1u

/* Bytes m takes on the wire. */
size_t lkvnet_wire_size(const lkvnet_raft_msg *m);
/* Encode m at dst (lkvnet_wire_size(m) bytes). */
void lkvnet_wire_encode(unsigned char *dst, const lkvnet_raft_msg *m);

/* One decoded message; its entries borrow the body's bytes. */
typedef struct lkvnet_wire_msg {
  lkvnet_raft_msg m;
  lkvnet_raft_conf conf;
  lkvnet_raft_entry *ents; /* grown as needed; lkvnet_wire_msg_free */
  size_t cap;
} lkvnet_wire_msg;

/* Decode the message at buf + *off into *w and advance *off: 1, 0 at the
 * end of buf, -1 when malformed (why says how; nothing is advanced) or
 * out of memory. */
int lkvnet_wire_decode(const unsigned char *buf, size_t len, size_t *off,
                       lkvnet_wire_msg *w, char *why, size_t whylen);
void lkvnet_wire_msg_free(lkvnet_wire_msg *w);

#endif
