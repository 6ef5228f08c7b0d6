/* wire.c - the Raft messages' wire format (wire.h). Pure: no I/O. */
#include "wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coding.h"

#define FIXED 75u /* version, type, flags, 9 x 8 */
#define ENTRY 21u /* type 1, term 8, index 8, length 4 */
#define F_REJECT 1u
#define F_TRANSFER 2u
#define F_CONF 4u

size_t lkvnet_wire_size(const lkvnet_raft_msg *m) {
  size_t n = 4 + FIXED + 4, i;
  if (m->conf != NULL) n += 2 + 8 * (m->conf->n_voters + m->conf->n_learners);
  for (i = 0; i < m->n_entries; i++) n += ENTRY + m->entries[i].len;
  return n;
}

void lkvnet_wire_encode(unsigned char *dst, const lkvnet_raft_msg *m) {
  unsigned char *p = dst + 4;
  const uint64_t f[9] = {m->from,    m->to,         m->term,
                         m->index,   m->log_term,   m->commit,
                         m->context, m->hint_index, m->hint_term};
  size_t i;
  lkv_put32(dst, (uint32_t)(lkvnet_wire_size(m) - 4));
  *p++ = LKVNET_WIRE_VERSION;
  *p++ = (unsigned char)m->type;
  *p++ =
      (unsigned char)((m->reject ? F_REJECT : 0) |
                      (m->transfer ? F_TRANSFER : 0) | (m->conf ? F_CONF : 0));
  for (i = 0; i < 9; i++, p += 8) lkv_put64(p, f[i]);
  if (m->conf != NULL) {
    *p++ = (unsigned char)m->conf->n_voters;
    *p++ = (unsigned char)m->conf->n_learners;
    for (i = 0; i < m->conf->n_voters; i++, p += 8)
      lkv_put64(p, m->conf->voters[i]);
    for (i = 0; i < m->conf->n_learners; i++, p += 8)
      lkv_put64(p, m->conf->learners[i]);
  }
  lkv_put32(p, (uint32_t)m->n_entries);
  p += 4;
  for (i = 0; i < m->n_entries; i++) {
    const lkvnet_raft_entry *e = &m->entries[i];
    *p++ = (unsigned char)e->type;
    lkv_put64(p, e->term);
    lkv_put64(p + 8, e->index);
    lkv_put32(p + 16, (uint32_t)e->len);
    p += 20;
    if (e->len) memcpy(p, e->data, e->len);
    p += e->len;
  }
}

void lkvnet_wire_msg_free(lkvnet_wire_msg *w) {
  free(w->ents);
  w->ents = NULL;
  w->cap = 0;
}

static int bad(char *why, size_t whylen, const char *what, size_t at) {
  snprintf(why, whylen, "%s (message at byte %zu)", what, at);
  return -1;
}

int lkvnet_wire_decode(const unsigned char *buf, size_t len, size_t *off,
                       lkvnet_wire_msg *w, char *why, size_t whylen) {
  size_t at = *off, n, end, i, count;
  const unsigned char *p;
  uint64_t f[9];
  unsigned flags;
  if (at == len) return 0;
  if (len - at < 4) return bad(why, whylen, "truncated length", at);
  n = lkv_get32(buf + at);
  if (n > len - at - 4) return bad(why, whylen, "length past the body", at);
  if (n < FIXED + 4) return bad(why, whylen, "message too short", at);
  p = buf + at + 4;
  end = at + 4 + n;
  if (p[0] != LKVNET_WIRE_VERSION)
    return bad(why, whylen, "unknown version", at);
  if (p[1] < LKVNET_RAFT_MSG_APP || p[1] > LKVNET_RAFT_MSG_TIMEOUT_NOW)
    return bad(why, whylen, "unknown message type", at);
  flags = p[2];
  if (flags & ~(F_REJECT | F_TRANSFER | F_CONF))
    return bad(why, whylen, "unknown flags", at);
  memset(&w->m, 0, sizeof w->m);
  w->m.type = p[1];
  w->m.reject = (flags & F_REJECT) != 0;
  w->m.transfer = (flags & F_TRANSFER) != 0;
  p += 3;
  for (i = 0; i < 9; i++, p += 8) f[i] = lkv_get64(p);
  w->m.from = f[0];
  w->m.to = f[1];
  w->m.term = f[2];
  w->m.index = f[3];
  w->m.log_term = f[4];
  w->m.commit = f[5];
  w->m.context = f[6];
  w->m.hint_index = f[7];
  w->m.hint_term = f[8];
  if (w->m.from == LKVNET_RAFT_NONE) return bad(why, whylen, "no sender", at);
  if (flags & F_CONF) {
    size_t nv, nl;
    if ((size_t)(buf + end - p) < 2) return bad(why, whylen, "truncated", at);
    nv = p[0];
    nl = p[1];
    p += 2;
    if (nv + nl > LKVNET_RAFT_MAX_MEMBERS ||
        (size_t)(buf + end - p) < 8 * (nv + nl) + 4)
      return bad(why, whylen, "bad configuration", at);
    memset(&w->conf, 0, sizeof w->conf);
    w->conf.n_voters = nv;
    w->conf.n_learners = nl;
    for (i = 0; i < nv; i++, p += 8) w->conf.voters[i] = lkv_get64(p);
    for (i = 0; i < nl; i++, p += 8) w->conf.learners[i] = lkv_get64(p);
    w->m.conf = &w->conf;
  }
  if ((size_t)(buf + end - p) < 4) return bad(why, whylen, "truncated", at);
  count = lkv_get32(p);
  p += 4;
  if (count > (size_t)(buf + end - p) / ENTRY)
    return bad(why, whylen, "entry count past the message", at);
  if (count > w->cap) {
    lkvnet_raft_entry *ne = realloc(w->ents, count * sizeof *ne);
    if (ne == NULL) return bad(why, whylen, "out of memory", at);
    w->ents = ne;
    w->cap = count;
  }
  for (i = 0; i < count; i++) {
    lkvnet_raft_entry *e = &w->ents[i];
    size_t dl;
    if ((size_t)(buf + end - p) < ENTRY)
      return bad(why, whylen, "truncated entry", at);
    e->type = p[0];
    e->term = lkv_get64(p + 1);
    e->index = lkv_get64(p + 9);
    dl = lkv_get32(p + 17);
    p += ENTRY;
    if (e->type < LKVNET_RAFT_ENTRY_NORMAL || e->type > LKVNET_RAFT_ENTRY_NOOP)
      return bad(why, whylen, "unknown entry type", at);
    if (dl > (size_t)(buf + end - p))
      return bad(why, whylen, "entry past the message", at);
    e->data = p;
    e->len = dl;
    p += dl;
  }
  if (p != buf + end) return bad(why, whylen, "trailing bytes", at);
  w->m.entries = count ? w->ents : NULL;
  w->m.n_entries = count;
  *off = end;
  return 1;
}
