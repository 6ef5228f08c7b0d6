/* overlay.c - the writes a leader has proposed and not yet applied, as a
 * stored function's call reads them (docs/functions.md, "On a node").
 *
 * Why: a read-write call must read the state its own entry will follow,
 * which is the engine once every entry before it is applied. Waiting for
 * that allows one call per commit round trip. The overlay holds, for
 * every key that the entries after a base index wrote, its newest value
 * (or its deletion); the engine beneath it plus the overlay is then the
 * state with the whole log applied, so calls run back to back, each
 * proposing its entry after the ones it read. Raft keeps that safe: the
 * log only ever loses a suffix, so an entry a call read can be lost only
 * together with the call's own entry, which comes after it.
 *
 * Shape: two generations, each a sorted array of items (a binary search
 * to find, a memmove to insert: the arrays stay small, a few thousand
 * keys). New writes go to the young one; once it is large and the old
 * one is gone, it becomes the old one; the old one goes as soon as the
 * applied index reaches its last entry (the engine holds all of it). A
 * reader looks at the young one, then the old one, then the engine.
 *
 * Runs on the event loop's thread, as the node does. */
#include <stdlib.h>
#include <string.h>

#include "node.h"

/* The young generation becomes the old one past either of these (when
 * the old one is gone already; else it keeps growing meanwhile). */
#define YOUNG_MAX_ITEMS 4096
#define YOUNG_MAX_BYTES (8u << 20)

typedef struct lkvnet_ovl_item {
  size_t klen, vlen;
  int deleted;
  char data[]; /* the key, then the value */
} Item;

static void gen_free(lkvnet_ovl_gen *g) {
  size_t i;
  for (i = 0; i < g->n; i++) free(g->v[i]);
  free(g->v);
  memset(g, 0, sizeof *g);
}

void lkvnet_overlay_reset(lkvnet_overlay *o, int valid) {
  gen_free(&o->g[0]);
  gen_free(&o->g[1]);
  o->valid = valid;
}

/* The position of key in g: where it is (*found = 1) or would go. */
static size_t gen_find(const lkvnet_ovl_gen *g, const char *key, size_t klen,
                       int *found) {
  size_t lo = 0, hi = g->n;
  *found = 0;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    const Item *it = g->v[mid];
    int c = lkv_key_compare(it->data, it->klen, key, klen);
    if (c == 0) {
      *found = 1;
      return mid;
    }
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

static int gen_put(lkvnet_ovl_gen *g, const lkvnet_fn_write *w) {
  size_t vlen = w->op == LKVNET_FN_SET ? w->vlen : 0, pos;
  int found;
  Item *it = malloc(sizeof *it + w->klen + vlen);
  if (it == NULL) return -1;
  it->klen = w->klen;
  it->vlen = vlen;
  it->deleted = w->op != LKVNET_FN_SET;
  if (w->klen) memcpy(it->data, w->key, w->klen);
  if (vlen) memcpy(it->data + w->klen, w->val, vlen);
  pos = gen_find(g, w->key, w->klen, &found);
  if (found) {
    g->bytes -= g->v[pos]->klen + g->v[pos]->vlen;
    free(g->v[pos]);
  } else {
    if (g->n == g->cap) {
      size_t nc = g->cap ? g->cap * 2 : 64;
      Item **nv = realloc(g->v, nc * sizeof *nv);
      if (nv == NULL) {
        free(it);
        return -1;
      }
      g->v = nv;
      g->cap = nc;
    }
    memmove(g->v + pos + 1, g->v + pos, (g->n - pos) * sizeof *g->v);
    g->n++;
  }
  g->v[pos] = it;
  g->bytes += w->klen + vlen;
  return 0;
}

void lkvnet_overlay_applied(lkvnet_overlay *o, uint64_t applied) {
  if (o->g[0].n > 0 && applied >= o->g[0].end) gen_free(&o->g[0]);
  if (o->g[1].n > 0 && applied >= o->g[1].end) gen_free(&o->g[1]);
}

void lkvnet_overlay_add(lkvnet_overlay *o, uint64_t index,
                        const lkvnet_fn_write *w, size_t n) {
  size_t i;
  if (!o->valid || n == 0) return;
  if (o->g[0].n == 0 &&
      (o->g[1].n >= YOUNG_MAX_ITEMS || o->g[1].bytes >= YOUNG_MAX_BYTES)) {
    o->g[0] = o->g[1];
    memset(&o->g[1], 0, sizeof o->g[1]);
  }
  for (i = 0; i < n; i++)
    if (gen_put(&o->g[1], &w[i]) != 0) {
      /* what is in the log is then no longer all here: calls wait for
       * the apply instead, until the log is applied and it starts anew */
      lkvnet_overlay_reset(o, 0);
      return;
    }
  o->g[1].end = index;
}

int lkvnet_overlay_get(const lkvnet_overlay *o, const char *key, size_t klen,
                       const char **val, size_t *vlen) {
  int g, found;
  for (g = 1; g >= 0; g--) {
    size_t pos = gen_find(&o->g[g], key, klen, &found);
    if (found) {
      const Item *it = o->g[g].v[pos];
      if (it->deleted) return 0;
      *val = it->data + it->klen;
      *vlen = it->vlen;
      return 1;
    }
  }
  return -1;
}

void lkvnet_overlay_seek(const lkvnet_overlay *o, const char *lo, size_t lolen,
                         lkvnet_overlay_pos *p) {
  int g, found;
  for (g = 0; g < 2; g++)
    p->i[g] = lo != NULL ? gen_find(&o->g[g], lo, lolen, &found) : 0;
}

int lkvnet_overlay_next(const lkvnet_overlay *o, lkvnet_overlay_pos *p,
                        const char **key, size_t *klen, const char **val,
                        size_t *vlen, int *deleted) {
  const Item *a = p->i[0] < o->g[0].n ? o->g[0].v[p->i[0]] : NULL;
  const Item *b = p->i[1] < o->g[1].n ? o->g[1].v[p->i[1]] : NULL;
  const Item *it;
  int c;
  if (a == NULL && b == NULL) return 0;
  c = a == NULL   ? 1
      : b == NULL ? -1
                  : lkv_key_compare(a->data, a->klen, b->data, b->klen);
  if (c < 0) {
    it = a;
    p->i[0]++;
  } else {
    it = b; /* the young one's, newer, when both have the key */
    p->i[1]++;
    if (c == 0) p->i[0]++;
  }
  *key = it->data;
  *klen = it->klen;
  *val = it->data + it->klen;
  *vlen = it->vlen;
  *deleted = it->deleted;
  return 1;
}

int lkvnet_overlay_empty(const lkvnet_overlay *o) {
  return o->g[0].n == 0 && o->g[1].n == 0;
}
