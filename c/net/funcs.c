/* funcs.c - stored functions on the node (docs/functions.md, "On a
 * node"; the routes: docs/http_api.md, "Stored functions"): PUT, GET and
 * DELETE /functions[/{library}], POST /call/{function}. The Lua runtime
 * is the binding's, behind the hooks of lkvnet.h (s->fns); this file
 * decides where and when a call runs and commits what it wrote.
 *
 * Where: a library's put and delete and a read-write call run on the
 * leader (routes.c forwards the library writes, this file the calls); a
 * read-only call runs on the leader after a ReadIndex, or with
 * consistent=false on any node over what it has applied.
 *
 * When (the isolation, strict serializability): a read-write call runs
 * over the engine with the overlay above it (overlay.c: the writes the
 * leader proposed and has not applied), which together are the state
 * with the whole log applied, so that its entry, proposed in the same
 * step, follows everything it read; and never inside a Ready (it
 * proposes). Until the overlay holds everything past the applied index
 * (a new leader's, at the start) and while a library's entry is not
 * applied, it waits as a waiter of apply.c. The call's writes, and a
 * library's keys, go to the log as one BATCH entry (apply.c applies it
 * as one engine batch); the request is answered when it applies, as a
 * write is.
 *
 * Runs on the event loop's thread; the node's state is node.h. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "node.h"

/* A library or function name: 1 to LKVNET_FN_NAME_MAX bytes of
 * [A-Za-z0-9_.-] (the runtime's rule, lkvf_check_name). */
static int name_ok(const char *p, size_t n) {
  size_t i;
  if (n == 0 || n > LKVNET_FN_NAME_MAX) return 0;
  for (i = 0; i < n; i++) {
    char c = p[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'))
      return 0;
  }
  return 1;
}

static void answer_free(lkvnet_server *s, lkvnet_fn_answer *a) {
  s->fns.answer_free(s->fns.ctx, a);
}

/* A hook's refusal: {"ok": false, "error": ..., ["limit": ...]}. */
static void reply_refusal(lkvnet_server *s, lkvnet_req *req, int route,
                          double start, const lkvnet_fn_answer *a) {
  lkvnet_jbuf b;
  memset(&b, 0, sizeof b);
  lkvnet_jbuf_lit(&b, "{\"ok\": false, \"error\": ");
  lkvnet_jbuf_str(&b, a->error, strlen(a->error));
  if (a->limit != NULL) {
    lkvnet_jbuf_lit(&b, ", \"limit\": ");
    lkvnet_jbuf_str(&b, a->limit, strlen(a->limit));
  }
  lkvnet_jbuf_lit(&b, "}");
  lkvnet_node_reply_json(s, req, route, start, a->status ? a->status : 500, &b);
}

/* key = prefix + name into buf (room for LKVNET_FN_NAME_MAX + 32) */
static size_t fn_key(char *buf, const char *prefix, const char *name,
                     size_t nlen) {
  size_t pn = strlen(prefix + 2) + 2; /* the prefix starts with \xff\xff */
  memcpy(buf, prefix, pn);
  memcpy(buf + pn, name, nlen);
  return pn + nlen;
}

/* Propose writes as one BATCH entry and hold req until it applies; extra
 * (NULL, or members for the 200 answer; malloc'd) goes with it. */
static void propose_batch(lkvnet_server *s, lkvnet_req *req, int route,
                          double start, const lkvnet_fn_write *w, size_t n,
                          char *extra) {
  size_t plen = lkvnet_node_batch_size(w, n), clen;
  unsigned char *cmd;
  lkvnet_pending *p;
  if (plen > LKV_MAX_VALUE_BYTES) {
    free(extra);
    lkvnet_node_reply_error(s, req, route, start, 413,
                            "the writes are %zu bytes; the limit is %u", plen,
                            (unsigned)LKV_MAX_VALUE_BYTES);
    return;
  }
  clen = lkvnet_node_cmd_size(0, plen);
  if ((cmd = malloc(clen)) == NULL) {
    free(extra);
    lkvnet_node_reply_error(s, req, route, start, 500, "out of memory");
    return;
  }
  lkvnet_node_cmd_encode(cmd, LKVNET_OP_BATCH, NULL, 0, NULL, 0);
  lkvnet_node_batch_encode(cmd + clen - plen, w, n);
  p = lkvnet_node_propose(s, req, route, start, cmd, clen, plen);
  free(cmd);
  if (p != NULL)
    p->extra = extra;
  else
    free(extra);
}

/* ", \"name\": " + json, malloc'd (NULL when out of memory) */
static char *member(const char *name, const char *json, size_t len) {
  size_t nl = strlen(name);
  char *m = malloc(nl + len + 8);
  if (m == NULL) return NULL;
  memcpy(m, ", \"", 3);
  memcpy(m + 3, name, nl);
  memcpy(m + 3 + nl, "\": ", 3);
  memcpy(m + 6 + nl, json, len);
  m[6 + nl + len] = '\0';
  return m;
}

/* {======================================================================
** Libraries: PUT, GET, DELETE /functions[/{library}]
** ======================================================================= */

static void put_library(lkvnet_server *s, lkvnet_req *req, const char *name,
                        size_t nlen, double start) {
  char key[LKVNET_FN_NAME_MAX + 32], lkey[LKVNET_FN_NAME_MAX + 32];
  lkvnet_fn_answer a;
  lkvnet_fn_write w[2];
  const char *src;
  size_t slen;
  char *extra;
  if (!lkvnet_node_write_check(s, req, LKVNET_ROUTE_FUNCTIONS, start)) return;
  if ((src = lkvnet_req_body(req, &slen)) == NULL) {
    lkvnet_node_reply_error(s, req, LKVNET_ROUTE_FUNCTIONS, start, 500,
                            "out of memory reading the body");
    return;
  }
  /* compiled and run here first: a library that does not load is never
   * stored; every node compiles it again from the store once applied */
  memset(&a, 0, sizeof a);
  s->fns.load(s->fns.ctx, s->db, name, nlen, src, slen, &a);
  if (a.status != 200) {
    reply_refusal(s, req, LKVNET_ROUTE_FUNCTIONS, start, &a);
    answer_free(s, &a);
    return;
  }
  memset(w, 0, sizeof w);
  w[0].op = w[1].op = LKVNET_FN_SET;
  w[0].key = key;
  w[0].klen = fn_key(key, LKVNET_LIB_PREFIX, name, nlen);
  w[0].val = src;
  w[0].vlen = slen;
  w[1].key = lkey;
  w[1].klen = fn_key(lkey, LKVNET_LIBLIMITS_PREFIX, name, nlen);
  w[1].val = a.limits ? a.limits : "";
  w[1].vlen = a.limits_len;
  extra = member("functions", a.json ? a.json : "[]", a.json ? a.json_len : 2);
  propose_batch(s, req, LKVNET_ROUTE_FUNCTIONS, start, w, 2, extra);
  answer_free(s, &a);
}

/* The source of library name (key, klen: its key) into s->getbuf: 1, or 0
 * after answering 404 (no such library) or the engine's error. */
static int library_source(lkvnet_server *s, lkvnet_req *req, const char *name,
                          size_t nlen, double start, const char *key,
                          size_t klen) {
  lkv_err err;
  int rc;
  err.msg[0] = '\0';
  rc = lkv_db_get(s->db, key, klen, LKV_SEQ_LATEST, &s->getbuf, &err);
  if (rc == LKV_NOTFOUND)
    lkvnet_node_reply_error(s, req, LKVNET_ROUTE_FUNCTIONS, start, 404,
                            "no library '%.*s'", (int)nlen, name);
  else if (rc != LKV_OK)
    lkvnet_node_reply_error(s, req, LKVNET_ROUTE_FUNCTIONS, start,
                            lkvnet_node_http_status_of(rc), "%s", err.msg);
  return rc == LKV_OK;
}

static void delete_library(lkvnet_server *s, lkvnet_req *req, const char *name,
                           size_t nlen, double start) {
  char key[LKVNET_FN_NAME_MAX + 32], lkey[LKVNET_FN_NAME_MAX + 32];
  lkvnet_fn_write w[2];
  if (!lkvnet_node_write_check(s, req, LKVNET_ROUTE_FUNCTIONS, start)) return;
  memset(w, 0, sizeof w);
  w[0].op = w[1].op = LKVNET_FN_DELETE;
  w[0].key = key;
  w[0].klen = fn_key(key, LKVNET_LIB_PREFIX, name, nlen);
  w[1].key = lkey;
  w[1].klen = fn_key(lkey, LKVNET_LIBLIMITS_PREFIX, name, nlen);
  if (!library_source(s, req, name, nlen, start, key, w[0].klen)) return;
  propose_batch(s, req, LKVNET_ROUTE_FUNCTIONS, start, w, 2, NULL);
}

static void get_library(lkvnet_server *s, lkvnet_req *req, const char *name,
                        size_t nlen, double start) {
  char key[LKVNET_FN_NAME_MAX + 32];
  size_t klen = fn_key(key, LKVNET_LIB_PREFIX, name, nlen);
  lkvnet_jbuf b;
  if (!library_source(s, req, name, nlen, start, key, klen)) return;
  memset(&b, 0, sizeof b);
  lkvnet_jbuf_lit(&b, "{");
  lkvnet_node_put_bytes_member(&b, "name", name, nlen);
  lkvnet_jbuf_lit(&b, ", ");
  lkvnet_node_put_bytes_member(&b, "source", s->getbuf.data, s->getbuf.len);
  lkvnet_jbuf_lit(&b, "}");
  lkvnet_node_reply_json(s, req, LKVNET_ROUTE_FUNCTIONS, start, 200, &b);
}

static void list_libraries(lkvnet_server *s, lkvnet_req *req, double start) {
  lkvnet_fn_answer a;
  memset(&a, 0, sizeof a);
  s->fns.list(s->fns.ctx, s->db, &a);
  if (a.status != 200)
    reply_refusal(s, req, LKVNET_ROUTE_FUNCTIONS, start, &a);
  else
    lkvnet_node_reply(s, req, LKVNET_ROUTE_FUNCTIONS, start, 200,
                      "application/json", a.json, a.json_len);
  answer_free(s, &a);
}

void lkvnet_node_route_functions(lkvnet_server *s, lkvnet_req *req,
                                 const char *path, int cmd, double start) {
  const char *name = path + sizeof "/functions" - 1;
  size_t nlen;
  if (*name == '/') name++;
  nlen = strlen(name);
  if (nlen == 0) {
    if (cmd != LKVNET_HTTP_GET) {
      lkvnet_req_add_header(req, "Allow", "GET, HEAD");
      lkvnet_node_reply_error(s, req, LKVNET_ROUTE_FUNCTIONS, start, 405,
                              "method not allowed on /functions (use GET)");
      return;
    }
  } else if (cmd != LKVNET_HTTP_GET && cmd != LKVNET_HTTP_PUT &&
             cmd != LKVNET_HTTP_DELETE) {
    lkvnet_req_add_header(req, "Allow", "GET, HEAD, PUT, DELETE");
    lkvnet_node_reply_error(s, req, LKVNET_ROUTE_FUNCTIONS, start, 405,
                            "method not allowed on /functions/{library} (use "
                            "GET, PUT or DELETE)");
    return;
  }
  if (!s->has_fns) {
    lkvnet_node_reply_error(s, req, LKVNET_ROUTE_FUNCTIONS, start, 501,
                            "this node runs no stored functions");
    return;
  }
  if (nlen == 0) {
    list_libraries(s, req, start);
    return;
  }
  if (!name_ok(name, nlen)) {
    lkvnet_node_reply_error(s, req, LKVNET_ROUTE_FUNCTIONS, start, 400,
                            "library name must be 1 to %d bytes of "
                            "[A-Za-z0-9_.-]",
                            LKVNET_FN_NAME_MAX);
    return;
  }
  if (cmd == LKVNET_HTTP_PUT)
    put_library(s, req, name, nlen, start);
  else if (cmd == LKVNET_HTTP_DELETE)
    delete_library(s, req, name, nlen, start);
  else
    get_library(s, req, name, nlen, start);
}

/* }====================================================================== */

/* {======================================================================
** Calls: POST /call/{function}
** ======================================================================= */

/* A read-write call that wrote nothing, once a ReadIndex round confirmed
 * that this node still led after it ran: its result (in w->key). */
static void serve_result(lkvnet_server *s, lkvnet_waiter *w, lkvnet_req *req) {
  lkvnet_jbuf b;
  uint64_t term, last;
  lkvnet_raft_position(s->raft, &term, &last);
  if (!s->leader || term != w->floor_term) {
    /* deposed since it ran: the entries it may have read at its floor
     * can be another leader's now. It wrote nothing: it runs again at
     * the next leader (park.c) */
    lkvnet_node_park(s, req, w->h.route, w->h.start);
    return;
  }
  memset(&b, 0, sizeof b);
  lkvnet_jbuf_lit(&b, "{\"ok\": true, \"result\": ");
  lkvnet_jbuf_raw(&b, w->key, w->klen);
  lkvnet_jbuf_lit(&b, "}");
  lkvnet_node_reply_json(s, req, w->h.route, w->h.start, 200, &b);
}

/* Run the call of req (its path names the function, its body is the
 * args) over the engine as it is (with the overlay above it when confirm
 * is set: a read-write call on the leader), and answer it: at once when
 * it failed, or wrote nothing and needs no confirming; when it wrote
 * nothing and confirm is set, once a ReadIndex round confirms this node
 * still leads (a leader deposed unawares, paused say, would otherwise
 * answer from a stale state) and everything up to last (the log's last
 * index as it ran: the writes it may have read) is applied; else once its
 * BATCH entry applies. */
static void run_call(lkvnet_server *s, lkvnet_req *req, double start,
                     int confirm, uint64_t last) {
  const char *name = lkvnet_req_path(req) + sizeof "/call/" - 1, *args;
  size_t alen;
  lkvnet_fn_answer a;
  if ((args = lkvnet_req_body(req, &alen)) == NULL) {
    lkvnet_node_reply_error(s, req, LKVNET_ROUTE_CALL, start, 500,
                            "out of memory reading the body");
    return;
  }
  memset(&a, 0, sizeof a);
  s->fns.call(s->fns.ctx, s->db, confirm ? &s->ovl : NULL, name, strlen(name),
              alen ? args : NULL, alen, &a);
  if (a.status != 200) {
    reply_refusal(s, req, LKVNET_ROUTE_CALL, start, &a);
  } else if (a.nwrites == 0 && confirm) {
    char *res = malloc(a.json_len ? a.json_len : 1);
    lkvnet_waiter *w;
    if (res != NULL) memcpy(res, a.json, a.json_len);
    if (res == NULL ||
        (w = lkvnet_node_waiter_add(s, req, LKVNET_ROUTE_CALL, start,
                                    serve_result, res, a.json_len)) == NULL)
      lkvnet_node_reply_error(s, req, LKVNET_ROUTE_CALL, start, 500,
                              "out of memory");
    else {
      w->floor = last;
      w->floor_term = s->ovl_term;
      lkvnet_node_read_begin(s, w);
    }
  } else if (a.nwrites == 0) {
    lkvnet_jbuf b;
    memset(&b, 0, sizeof b);
    lkvnet_jbuf_lit(&b, "{\"ok\": true, \"result\": ");
    lkvnet_jbuf_raw(&b, a.json, a.json_len);
    lkvnet_jbuf_lit(&b, "}");
    lkvnet_node_reply_json(s, req, LKVNET_ROUTE_CALL, start, 200, &b);
  } else if (!confirm) {
    /* run as read-only (its kind when the request came), it wrote: a
     * library put meanwhile made it a read-write function. Its writes
     * were made over a state without the overlay (and this may be inside
     * a Ready): nothing of it is proposed */
    lkvnet_node_reply_error(s, req, LKVNET_ROUTE_CALL, start, 503,
                            "the function changed while the call waited "
                            "(it is no longer read-only); nothing was "
                            "written; retry");
  } else {
    propose_batch(s, req, LKVNET_ROUTE_CALL, start, a.writes, a.nwrites,
                  member("result", a.json, a.json_len));
  }
  answer_free(s, &a);
}

static void serve_rw(lkvnet_server *s, lkvnet_waiter *w, lkvnet_req *req);

/* A read-write call on the leader: now, over the engine and the overlay
 * (together: the state with the whole log applied, whatever of it is not
 * committed yet), when the overlay holds everything past the applied
 * index, no stored library waits for its apply (the call would run the
 * old code) and no Ready is open (it proposes); else once that holds.
 * The overlay starts, empty, at the first call of a term (or after it
 * ran out of memory), from the log's last index then: calls run once
 * everything up to there is applied, even while writes keep coming. */
static void call_rw(lkvnet_server *s, lkvnet_req *req, double start) {
  uint64_t term, last;
  lkvnet_waiter *w;
  char *none;
  if (!s->leader) {
    /* it stopped leading while the call waited: the call has not run, so
     * it goes to the next leader as a new request would (park.c) */
    lkvnet_node_park(s, req, LKVNET_ROUTE_CALL, start);
    return;
  }
  lkvnet_raft_position(s->raft, &term, &last);
  if (!s->ovl.valid || s->ovl_term != term) {
    /* every proposal from now on is noted: once the entries up to last
     * are applied, the engine and the overlay are the whole log. Any
     * library entry is among those (one of an earlier term may have been
     * cut: its index means nothing now) */
    lkvnet_overlay_reset(&s->ovl, 1);
    s->ovl_term = term;
    s->ovl_from = last;
    s->lib_index = 0;
  }
  if (!s->in_ready && s->applied_index >= s->ovl_from &&
      s->applied_index >= s->lib_index) {
    if (lkvnet_node_write_check(s, req, LKVNET_ROUTE_CALL, start))
      run_call(s, req, start, 1, last);
    return;
  }
  if ((none = malloc(1)) == NULL ||
      (w = lkvnet_node_waiter_add(s, req, LKVNET_ROUTE_CALL, start, serve_rw,
                                  none, 0)) == NULL) {
    lkvnet_node_reply_error(s, req, LKVNET_ROUTE_CALL, start, 500,
                            "out of memory");
    return;
  }
  /* inside a Ready: released by the pass after it (the applied index is
   * reached already); else when the entries before the overlay, and the
   * last library entry, are */
  w->target = s->in_ready                  ? s->applied_index
              : s->ovl_from > s->lib_index ? s->ovl_from
                                           : s->lib_index;
}

static void serve_rw(lkvnet_server *s, lkvnet_waiter *w, lkvnet_req *req) {
  call_rw(s, req, w->h.start);
}

/* A read-only call, released by its ReadIndex: it writes nothing. */
static void serve_ro(lkvnet_server *s, lkvnet_waiter *w, lkvnet_req *req) {
  run_call(s, req, w->h.start, 0, 0); /* its ReadIndex came first */
}

/* consistent=false (or 0) */
static int inconsistent(const char *query) {
  size_t n;
  int found, off;
  char *v = lkvnet_node_query_param(query, "consistent", &n, &found);
  off = v != NULL && (strcmp(v, "false") == 0 || strcmp(v, "0") == 0);
  free(v);
  return off;
}

void lkvnet_node_route_call(lkvnet_server *s, lkvnet_req *req, const char *path,
                            const char *query, double start) {
  const char *name = path + sizeof "/call/" - 1;
  size_t nlen = strlen(name);
  int kind;
  if (lkvnet_req_method(req) != LKVNET_HTTP_POST) {
    lkvnet_req_add_header(req, "Allow", "POST");
    lkvnet_node_reply_error(s, req, LKVNET_ROUTE_CALL, start, 405,
                            "method not allowed on /call/{function} (use "
                            "POST)");
    return;
  }
  if (!s->has_fns) {
    lkvnet_node_reply_error(s, req, LKVNET_ROUTE_CALL, start, 501,
                            "this node runs no stored functions");
    return;
  }
  if (!name_ok(name, nlen)) {
    lkvnet_node_reply_error(s, req, LKVNET_ROUTE_CALL, start, 404,
                            "unknown function: a name is 1 to %d bytes of "
                            "[A-Za-z0-9_.-]",
                            LKVNET_FN_NAME_MAX);
    return;
  }
  if (s->needs_snapshot) {
    lkvnet_node_reply_error(s, req, LKVNET_ROUTE_CALL, start, 503,
                            "this node is installing a snapshot; retry");
    return;
  }
  kind = s->fns.kind(s->fns.ctx, s->db, name, nlen);
  if (kind == 1 && inconsistent(query)) {
    run_call(s, req, start, 0, 0); /* here, over what this node applied */
    return;
  }
  if (!s->leader) {
    /* the leader runs it (and knows functions this node has not applied
     * yet); 503 when none is known */
    lkvnet_node_forward(s, req, LKVNET_ROUTE_CALL, start);
    return;
  }
  if (kind < 0) {
    /* the runtime's own words (which library failed to load, if any) */
    run_call(s, req, start, 0, 0);
    return;
  }
  if (kind == 1) {
    char *none = malloc(1);
    lkvnet_waiter *w;
    if (none == NULL ||
        (w = lkvnet_node_waiter_add(s, req, LKVNET_ROUTE_CALL, start, serve_ro,
                                    none, 0)) == NULL) {
      lkvnet_node_reply_error(s, req, LKVNET_ROUTE_CALL, start, 500,
                              "out of memory");
      return;
    }
    lkvnet_node_read_begin(s, w); /* ReadIndex, as a consistent read */
    return;
  }
  call_rw(s, req, start);
}

/* }====================================================================== */
