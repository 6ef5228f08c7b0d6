/* raft_log.c - the Raft core's log and memory: the unstable tail (entries
 * not yet handed to the driver) over the driver's storage, the arena that
 * Readys borrow, and the configurations the log's CONF entries carry
 * (docs/raft_core.md, "The log"). */
#include <stdlib.h>
#include <string.h>

#include "coding.h"
#include "err.h"
#include "raft_int.h"

/* {======================================================================
** The arena: what a Ready points to, released whole by advance
** ======================================================================= */

/* 64 KiB: a Ready of heartbeats and a few small appends fits in one
 * block; bigger payloads get a block of their own size. */
#define ARENA_BLOCK 65536u

void *lkvnet_raft_arena_alloc(raft_arena *a, size_t size) {
  size = (size + 7u) & ~(size_t)7u; /* every object 8-aligned */
  if (size == 0) size = 8;
  if (!a->head || a->head->cap - a->head->used < size) {
    size_t cap = size > ARENA_BLOCK ? size : ARENA_BLOCK;
    raft_block *b = malloc(sizeof(*b) + cap);
    if (!b) return NULL;
    b->next = a->head;
    b->used = 0;
    b->cap = cap;
    a->head = b;
  }
  void *p = a->head->mem + a->head->used;
  a->head->used += size;
  return p;
}

/* Keep one standard block for the next Ready (most Readys fit in one);
 * a block sized for one big payload goes. */
void lkvnet_raft_arena_reset(raft_arena *a) {
  raft_block *keep = NULL;
  for (raft_block *b = a->head, *next; b; b = next) {
    next = b->next;
    if (!keep && b->cap == ARENA_BLOCK) {
      keep = b;
      keep->used = 0;
      keep->next = NULL;
    } else {
      free(b);
    }
  }
  a->head = keep;
}

void lkvnet_raft_arena_free(raft_arena *a) {
  for (raft_block *b = a->head, *next; b; b = next) {
    next = b->next;
    free(b);
  }
  a->head = NULL;
}

/* {======================================================================
** Reading the log: the unstable tail, else the storage
** ======================================================================= */

/* Invariant: u_off == stable_last + 1. The storage is read only below
 * u_off, so a tail the core has cut (a follower's conflict) is never read
 * back from the storage before the driver cuts it there too. */

uint64_t lkvnet_raft_last_index(const lkvnet_raft *r) {
  return r->u_n ? r->u_off + r->u_n - 1 : r->stable_last;
}

uint64_t lkvnet_raft_last_term(const lkvnet_raft *r) {
  uint64_t t = 0;
  (void)lkvnet_raft_term_at(r, lkvnet_raft_last_index(r), &t);
  return t;
}

int lkvnet_raft_term_at(const lkvnet_raft *r, uint64_t index, uint64_t *term) {
  if (index == 0) {
    *term = 0;
    return LKV_OK;
  }
  if (index == r->snap_index) {
    *term = r->snap_term;
    return LKV_OK;
  }
  if (index < r->snap_index) return LKV_NOTFOUND;
  if (index >= r->u_off) {
    if (index - r->u_off >= r->u_n) return LKV_NOTFOUND;
    *term = r->u[index - r->u_off].term;
    return LKV_OK;
  }
  /* snap_index < index <= stable_last: the storage's, unless the driver
   * compacted past it since (then NOTFOUND from the storage) */
  return r->st.term(r->st.ctx, index, term);
}

/* Per MSG_APP or Ready: a bound on the array a slice allocates up front,
 * so a follower far behind costs one bounded message per round trip even
 * when its missing entries are empty no-ops. */
#define SLICE_MAX_ENTRIES 4096u

typedef struct slice_ctx {
  lkvnet_raft *r;
  lkvnet_raft_entry *es;
  size_t n, cap, bytes, max_bytes;
  uint64_t expect; /* the index the next entry must have */
  int rc, full;
} slice_ctx;

/* Copy one entry into the arena; non-zero once the slice is full. */
static int slice_take(slice_ctx *s, const lkvnet_raft_entry *e) {
  if (s->n >= s->cap || (s->n > 0 && s->bytes + e->len > s->max_bytes)) {
    s->full = 1;
    return 1;
  }
  if (e->index != s->expect) { /* the storage broke its contract */
    s->rc = LKV_CORRUPTION;
    return 1;
  }
  unsigned char *d = NULL;
  if (e->len) {
    d = lkvnet_raft_arena_alloc(&s->r->arena, e->len);
    if (!d) {
      s->rc = LKV_NOMEM;
      return 1;
    }
    memcpy(d, e->data, e->len);
  }
  lkvnet_raft_entry *o = &s->es[s->n++];
  *o = *e;
  o->data = d;
  s->bytes += e->len;
  s->expect++;
  return 0;
}

static int slice_emit(void *arg, const lkvnet_raft_entry *e) {
  return slice_take(arg, e);
}

int lkvnet_raft_slice(lkvnet_raft *r, uint64_t lo, uint64_t hi,
                      size_t max_bytes, lkvnet_raft_entry **out, size_t *n) {
  *out = NULL;
  *n = 0;
  if (lo <= r->snap_index) return LKV_NOTFOUND;
  uint64_t last = lkvnet_raft_last_index(r);
  if (hi > last + 1) hi = last + 1;
  if (lo >= hi) return LKV_OK;
  uint64_t want = hi - lo;
  slice_ctx s = {
      r,  NULL,
      0,  want < SLICE_MAX_ENTRIES ? (size_t)want : SLICE_MAX_ENTRIES,
      0,  max_bytes,
      lo, LKV_OK,
      0};
  s.es = lkvnet_raft_arena_alloc(&r->arena, s.cap * sizeof(*s.es));
  if (!s.es) return LKV_NOMEM;
  if (lo < r->u_off) {
    uint64_t shi = hi < r->u_off ? hi : r->u_off;
    int rc = r->st.entries(r->st.ctx, lo, shi, slice_emit, &s);
    if (rc == LKV_OK) rc = s.rc;
    if (rc != LKV_OK) {
      if (rc != LKV_NOTFOUND) r->cnt.storage_errors++;
      return rc;
    }
    /* the storage stopped early (emit said full) or must have given
     * everything: a short answer without a reason is its failure */
    if (s.expect < shi && !s.full) {
      r->cnt.storage_errors++;
      return LKV_CORRUPTION;
    }
    if (s.expect < shi) goto done;
  }
  for (uint64_t i = s.expect; i < hi; i++) {
    const raft_ent *u = &r->u[i - r->u_off];
    lkvnet_raft_entry e = {u->term, u->index, u->type, u->data, u->len};
    if (slice_take(&s, &e)) break;
  }
  if (s.rc != LKV_OK) return s.rc;
done:
  *out = s.es;
  *n = s.n;
  return LKV_OK;
}

/* {======================================================================
** Writing the log: cut and append
** ======================================================================= */

static void ent_free(raft_ent *e) {
  free(e->data);
  e->data = NULL;
}

static int reserve(void **arr, size_t *cap, size_t need, size_t size) {
  if (need <= *cap) return LKV_OK;
  size_t c = *cap ? *cap : 16;
  while (c < need) c *= 2;
  void *p = realloc(*arr, c * size);
  if (!p) return LKV_NOMEM;
  *arr = p;
  *cap = c;
  return LKV_OK;
}

int lkvnet_raft_log_append(lkvnet_raft *r, const lkvnet_raft_entry *es,
                           size_t n) {
  if (n == 0) return LKV_OK;
  uint64_t first = es[0].index;
  /* Take every allocation before changing anything, so a failure leaves
   * the log whole (the message is then as if lost). */
  size_t keep_u = first >= r->u_off ? (size_t)(first - r->u_off) : 0;
  if (reserve((void **)&r->u, &r->u_cap, keep_u + n, sizeof(*r->u)))
    return LKV_NOMEM;
  size_t n_conf = 0;
  for (size_t i = 0; i < n; i++)
    if (es[i].type == LKVNET_RAFT_ENTRY_CONF) n_conf++;
  if (reserve((void **)&r->confs, &r->cap_confs, r->n_confs + n_conf,
              sizeof(*r->confs)))
    return LKV_NOMEM;
  unsigned char **copies = calloc(n, sizeof(*copies));
  if (!copies) return LKV_NOMEM;
  for (size_t i = 0; i < n; i++) {
    if (!es[i].len) continue;
    copies[i] = malloc(es[i].len);
    if (!copies[i]) {
      for (size_t j = 0; j < i; j++) free(copies[j]);
      free(copies);
      return LKV_NOMEM;
    }
    memcpy(copies[i], es[i].data, es[i].len);
  }

  /* cut: within the unstable tail, or into what the storage holds (the
   * driver cuts there too when it writes the next Ready's entries) */
  if (first < r->u_off) {
    for (size_t i = 0; i < r->u_n; i++) ent_free(&r->u[i]);
    r->u_n = 0;
    r->stable_last = first - 1;
    r->u_off = first;
  } else {
    for (size_t i = keep_u; i < r->u_n; i++) ent_free(&r->u[i]);
    r->u_n = keep_u;
  }
  if (r->durable > first - 1) r->durable = first - 1;
  int conf_cut = 0;
  while (r->n_confs && r->confs[r->n_confs - 1].index >= first) {
    r->n_confs--;
    conf_cut = 1;
  }

  for (size_t i = 0; i < n; i++) {
    raft_ent *u = &r->u[r->u_n++];
    u->term = es[i].term;
    u->index = es[i].index;
    u->type = es[i].type;
    u->data = copies[i];
    u->len = es[i].len;
    if (u->type == LKVNET_RAFT_ENTRY_CONF) {
      lkvnet_raft_confchange cc;
      /* a CONF entry that does not decode changes nothing: a leader of
       * this code never writes one, and refusing the whole append would
       * stall the follower for good */
      if (lkvnet_raft_conf_decode(u->data, u->len, &cc, NULL) == LKV_OK) {
        r->confs[r->n_confs].index = u->index;
        r->confs[r->n_confs].conf = cc.conf;
        r->n_confs++;
        conf_cut = 1;
      }
    }
  }
  free(copies);
  if (conf_cut) {
    lkvnet_raft_conf_refresh(r);
    lkvnet_raft_peers_sync(r);
  }
  return LKV_OK;
}

uint64_t lkvnet_raft_find_conflict_by_term(const lkvnet_raft *r, uint64_t index,
                                           uint64_t term) {
  uint64_t last = lkvnet_raft_last_index(r);
  if (index > last) index = last;
  for (;;) {
    uint64_t t;
    if (lkvnet_raft_term_at(r, index, &t) != LKV_OK) return index;
    if (t <= term || index == 0) return index;
    index--;
  }
}

void lkvnet_raft_log_restore(lkvnet_raft *r, uint64_t index, uint64_t term,
                             const lkvnet_raft_conf *conf) {
  for (size_t i = 0; i < r->u_n; i++) ent_free(&r->u[i]);
  r->u_n = 0;
  r->snap_index = index;
  r->snap_term = term;
  r->stable_last = index;
  r->u_off = index + 1;
  if (r->commit < index) r->commit = index;
  r->applied = index;
  r->durable = index;
  r->base_conf = *conf;
  r->n_confs = 0;
  r->restore = 1;
  r->restore_conf = *conf;
  lkvnet_raft_conf_refresh(r);
  lkvnet_raft_peers_sync(r);
}

void lkvnet_raft_log_free(lkvnet_raft *r) {
  for (size_t i = 0; i < r->u_n; i++) ent_free(&r->u[i]);
  free(r->u);
  r->u = NULL;
  r->u_n = r->u_cap = 0;
  free(r->confs);
  r->confs = NULL;
  r->n_confs = r->cap_confs = 0;
}

/* {======================================================================
** Configurations
** ======================================================================= */

static int conf_index_of(const lkvnet_raft_conf *c, uint64_t id) {
  for (size_t i = 0; i < c->n_voters; i++)
    if (c->voters[i] == id) return (int)i;
  return -1;
}

int lkvnet_raft_conf_is_voter(const lkvnet_raft_conf *c, uint64_t id) {
  return id != LKVNET_RAFT_NONE && conf_index_of(c, id) >= 0;
}

int lkvnet_raft_conf_is_learner(const lkvnet_raft_conf *c, uint64_t id) {
  for (size_t i = 0; i < c->n_learners; i++)
    if (c->learners[i] == id) return id != LKVNET_RAFT_NONE;
  return 0;
}

void lkvnet_raft_conf_refresh(lkvnet_raft *r) {
  r->conf = r->n_confs ? r->confs[r->n_confs - 1].conf : r->base_conf;
}

void lkvnet_raft_conf_compact(lkvnet_raft *r, uint64_t index) {
  size_t k = 0;
  while (k < r->n_confs && r->confs[k].index <= index) k++;
  if (k == 0) return;
  r->base_conf = r->confs[k - 1].conf;
  memmove(r->confs, r->confs + k, (r->n_confs - k) * sizeof(*r->confs));
  r->n_confs -= k;
}

typedef struct load_ctx {
  lkvnet_raft *r;
  int rc;
} load_ctx;

static int load_emit(void *arg, const lkvnet_raft_entry *e) {
  load_ctx *l = arg;
  lkvnet_raft *r = l->r;
  if (e->type != LKVNET_RAFT_ENTRY_CONF) return 0;
  lkvnet_raft_confchange cc;
  if (lkvnet_raft_conf_decode(e->data, e->len, &cc, NULL) != LKV_OK) return 0;
  if (reserve((void **)&r->confs, &r->cap_confs, r->n_confs + 1,
              sizeof(*r->confs))) {
    l->rc = LKV_NOMEM;
    return 1;
  }
  r->confs[r->n_confs].index = e->index;
  r->confs[r->n_confs].conf = cc.conf;
  r->n_confs++;
  return 0;
}

int lkvnet_raft_conf_load(lkvnet_raft *r, lkv_err *err) {
  uint64_t last = r->stable_last;
  if (last <= r->snap_index) return LKV_OK;
  load_ctx l = {r, LKV_OK};
  int rc = r->st.entries(r->st.ctx, r->snap_index + 1, last + 1, load_emit, &l);
  if (rc == LKV_OK) rc = l.rc;
  if (rc != LKV_OK)
    return lkv_seterr(err, rc,
                      "raft: reading the log for its configuration "
                      "(%llu..%llu) failed",
                      (unsigned long long)r->snap_index + 1,
                      (unsigned long long)last);
  lkvnet_raft_conf_refresh(r);
  return LKV_OK;
}

/* A CONF entry's data, little-endian:
 *   0  version   1  (1)
 *   1  op        1  LKVNET_RAFT_CONF_*
 *   2  node      8
 *  10  voters    1  count
 *  11  learners  1  count
 *  12  ids       8 each: the voters, then the learners
 *      ctx_len   4
 *      ctx       ctx_len bytes (the driver's) */
#define CONF_VERSION 1u
#define CONF_FIXED 12u

int lkvnet_raft_conf_encode(int op, uint64_t node, const lkvnet_raft_conf *conf,
                            const void *ctx, size_t ctx_len,
                            unsigned char **out, size_t *len) {
  size_t ids = conf->n_voters + conf->n_learners;
  size_t n = CONF_FIXED + ids * 8u + 4u + ctx_len;
  unsigned char *b = malloc(n);
  if (!b) return LKV_NOMEM;
  b[0] = CONF_VERSION;
  b[1] = (unsigned char)op;
  lkv_put64(b + 2, node);
  b[10] = (unsigned char)conf->n_voters;
  b[11] = (unsigned char)conf->n_learners;
  unsigned char *p = b + CONF_FIXED;
  for (size_t i = 0; i < conf->n_voters; i++, p += 8)
    lkv_put64(p, conf->voters[i]);
  for (size_t i = 0; i < conf->n_learners; i++, p += 8)
    lkv_put64(p, conf->learners[i]);
  lkv_put32(p, (uint32_t)ctx_len);
  if (ctx_len) memcpy(p + 4, ctx, ctx_len);
  *out = b;
  *len = n;
  return LKV_OK;
}

int lkvnet_raft_conf_decode(const unsigned char *data, size_t len,
                            lkvnet_raft_confchange *out, lkv_err *err) {
  memset(out, 0, sizeof(*out));
  if (len < CONF_FIXED + 4u || data[0] != CONF_VERSION)
    return lkv_seterr(err, LKV_CORRUPTION,
                      "raft: configuration entry: bad version or length %zu",
                      len);
  out->op = data[1];
  out->node = lkv_get64(data + 2);
  size_t nv = data[10], nl = data[11];
  if (out->op < LKVNET_RAFT_CONF_ADD_VOTER ||
      out->op > LKVNET_RAFT_CONF_REMOVE || out->node == LKVNET_RAFT_NONE ||
      nv + nl > LKVNET_RAFT_MAX_MEMBERS ||
      len < CONF_FIXED + (nv + nl) * 8u + 4u)
    return lkv_seterr(err, LKV_CORRUPTION,
                      "raft: configuration entry: bad op %d, node or counts "
                      "(%zu voters, %zu learners)",
                      out->op, nv, nl);
  const unsigned char *p = data + CONF_FIXED;
  for (size_t i = 0; i < nv + nl; i++, p += 8) {
    uint64_t id = lkv_get64(p);
    for (size_t j = 0; j < i; j++) {
      uint64_t o = j < nv ? out->conf.voters[j] : out->conf.learners[j - nv];
      if (o == id) id = LKVNET_RAFT_NONE; /* repeated: refused below */
    }
    if (id == LKVNET_RAFT_NONE)
      return lkv_seterr(err, LKV_CORRUPTION,
                        "raft: configuration entry: member %zu is 0 or "
                        "repeated",
                        i);
    if (i < nv)
      out->conf.voters[out->conf.n_voters++] = id;
    else
      out->conf.learners[out->conf.n_learners++] = id;
  }
  uint32_t cl = lkv_get32(p);
  p += 4;
  if ((size_t)(data + len - p) != cl)
    return lkv_seterr(err, LKV_CORRUPTION,
                      "raft: configuration entry: context of %u bytes in %zu",
                      cl, (size_t)(data + len - p));
  out->ctx = cl ? p : NULL;
  out->ctx_len = cl;
  return LKV_OK;
}

/* ---- the peers of the configuration in force ---------------------- */

void lkvnet_raft_peer_init(lkvnet_raft *r, raft_peer *p, uint64_t id) {
  memset(p, 0, offsetof(raft_peer, infl));
  p->id = id;
  p->state = LKVNET_RAFT_PROBE;
  p->next = lkvnet_raft_last_index(r) + 1;
  /* a new member counts as heard from: CheckQuorum must not depose a
   * leader in the tick after a member was added */
  p->recent_active = 1;
  p->need_send = 1;
}

/* The peers follow the configuration in force; progress is kept for
 * members that stay, so a change costs no re-probing. */
void lkvnet_raft_peers_sync(lkvnet_raft *r) {
  const lkvnet_raft_conf *c = &r->conf;
  raft_peer *old = malloc(r->n_peers * sizeof(*old) + 1);
  size_t n_old = r->n_peers;
  if (old) memcpy(old, r->peers, n_old * sizeof(*old));
  size_t n = 0;
  for (size_t i = 0; i < c->n_voters + c->n_learners; i++) {
    int voter = i < c->n_voters;
    uint64_t id = voter ? c->voters[i] : c->learners[i - c->n_voters];
    if (id == r->id) continue;
    raft_peer *p = &r->peers[n++];
    size_t j = 0;
    while (old && j < n_old && old[j].id != id) j++;
    if (old && j < n_old)
      *p = old[j];
    else
      lkvnet_raft_peer_init(r, p, id);
    p->voter = voter;
  }
  r->n_peers = n;
  free(old);
  r->dirty = 1;
}
