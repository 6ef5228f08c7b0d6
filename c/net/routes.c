/* routes.c - a request's way in (docs/http_api.md): the route and method
 * checks, the body limit, the token check of internal routes, forwarding
 * to the leader (or 503 "no leader") on a node that does not lead,
 * consistent reads held for their ReadIndex, then the route: the client
 * routes are here, the internal ones in follow.c, the reports in
 * metrics.c. Runs on the event loop's thread; the node's state is
 * node.h. */
#include <event2/http.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "node.h"

static const lkvnet_json_member *need_string(lkvnet_server *s, lkvnet_req *req,
                                             int route, double start,
                                             const lkvnet_json_object *o,
                                             const char *name) {
  const lkvnet_json_member *m = lkvnet_json_get(o, name);
  if (m == NULL) {
    lkvnet_node_reply_error(s, req, route, start, 400, "missing member \"%s\"",
                            name);
    return NULL;
  }
  if (m->type != LKVNET_JSON_STRING) {
    lkvnet_node_reply_error(s, req, route, start, 400,
                            "member \"%s\" must be a string, not %s", name,
                            lkvnet_json_type_name(m->type));
    return NULL;
  }
  return m;
}

static void route_write_json(lkvnet_server *s, lkvnet_req *req, int route,
                             double start) {
  size_t n;
  const char *body = lkvnet_req_body(req, &n);
  lkvnet_json_object o;
  char jerr[LKVNET_JSON_ERR_LEN];
  const lkvnet_json_member *k, *v = NULL;
  memset(&o, 0, sizeof o);
  if (body == NULL) {
    lkvnet_node_reply_error(s, req, route, start, 500,
                            "out of memory reading the body");
    return;
  }
  if (lkvnet_json_parse_object(body, n, &o, jerr) != 0) {
    lkvnet_node_reply_error(s, req, route, start, 400, "malformed JSON: %s",
                            jerr);
    return;
  }
  if ((k = need_string(s, req, route, start, &o, "key")) != NULL &&
      (route == LKVNET_ROUTE_DELETE ||
       (v = need_string(s, req, route, start, &o, "value")) != NULL)) {
    if (route == LKVNET_ROUTE_SET)
      lkvnet_node_write_begin(s, req, route, start, LKVNET_OP_SET, k->str,
                              k->len, v->str, v->len);
    else
      lkvnet_node_write_begin(s, req, route, start, LKVNET_OP_DELETE, k->str,
                              k->len, NULL, 0);
  }
  lkvnet_json_free(&o);
}

/* GET /get?key=K, from this node's engine (a consistent read comes here
 * once its ReadIndex is applied). */
static void route_get(lkvnet_server *s, lkvnet_req *req, const char *query,
                      double start) {
  size_t klen;
  int found;
  char *key = lkvnet_node_query_param(query, "key", &klen, &found);
  if (key == NULL) {
    if (found)
      lkvnet_node_reply_error(s, req, LKVNET_ROUTE_GET, start, 500,
                              "out of memory");
    else
      lkvnet_node_reply_error(s, req, LKVNET_ROUTE_GET, start, 400,
                              "missing query parameter \"key\"");
    return;
  }
  if (lkvnet_node_is_reserved(key, klen)) {
    free(key);
    lkvnet_node_reply_error(
        s, req, LKVNET_ROUTE_GET, start, 400,
        "keys starting with \\xff\\xfflunakv/ are reserved");
    return;
  }
  lkvnet_node_read_local(s, req, LKVNET_ROUTE_GET, start, key, klen);
  free(key);
}

/* "true" or "1" turn a flag on. */
static int query_flag(const char *query, const char *name) {
  size_t n;
  int found, on;
  char *v = lkvnet_node_query_param(query, name, &n, &found);
  on = v != NULL && (strcmp(v, "true") == 0 || strcmp(v, "1") == 0);
  free(v);
  return on;
}

static void route_scan(lkvnet_server *s, lkvnet_req *req, const char *query,
                       double start) {
  size_t alen = 0, blen = 0, llen;
  int fa, fb, fl, rc;
  char *a = lkvnet_node_query_param(query, "start", &alen, &fa);
  char *bnd = lkvnet_node_query_param(query, "end", &blen, &fb);
  char *lim = lkvnet_node_query_param(query, "limit", &llen, &fl);
  long limit = LKVNET_SCAN_DEFAULT_LIMIT, n = 0;
  lkv_iter *it = NULL;
  lkv_err err;
  lkvnet_jbuf b;
  int more = 0;
  memset(&b, 0, sizeof b);
  if ((fa && !a) || (fb && !bnd) || (fl && !lim)) {
    lkvnet_node_reply_error(s, req, LKVNET_ROUTE_SCAN, start, 500,
                            "out of memory");
    goto done;
  }
  if (lim != NULL && (lkvnet_node_parse_limit(lim, &limit) != 0 || limit < 1 ||
                      limit > LKVNET_SCAN_MAX_LIMIT)) {
    lkvnet_node_reply_error(s, req, LKVNET_ROUTE_SCAN, start, 400,
                            "limit must be an integer from 1 to %d",
                            LKVNET_SCAN_MAX_LIMIT);
    goto done;
  }
  err.msg[0] = '\0';
  if ((rc = lkv_iter_new(s->db, LKV_SEQ_LATEST, &it, &err)) != LKV_OK) {
    lkvnet_node_reply_error(s, req, LKVNET_ROUTE_SCAN, start,
                            lkvnet_node_http_status_of(rc), "%s", err.msg);
    goto done;
  }
  if (a != NULL)
    lkv_iter_seek(it, a, alen);
  else
    lkv_iter_seek_first(it);
  lkvnet_jbuf_lit(&b, "{\"items\": [");
  for (; lkv_iter_valid(it); lkv_iter_next(it)) {
    size_t kl, vl;
    const char *k = lkv_iter_key(it, &kl), *v;
    if (bnd != NULL && lkv_key_compare(k, kl, bnd, blen) > 0) break;
    if (lkvnet_node_is_reserved(k, kl)) continue;
    if (n == limit || b.len >= LKVNET_SCAN_MAX_BYTES) {
      more = 1;
      break;
    }
    v = lkv_iter_value(it, &vl);
    lkvnet_jbuf_lit(&b, n ? ", {" : "{");
    lkvnet_node_put_bytes_member(&b, "key", k, kl);
    lkvnet_jbuf_lit(&b, ", ");
    lkvnet_node_put_bytes_member(&b, "value", v, vl);
    lkvnet_jbuf_lit(&b, "}");
    n++;
  }
  if ((rc = lkv_iter_status(it, &err)) != LKV_OK) {
    lkvnet_jbuf_free(&b);
    lkvnet_node_reply_error(s, req, LKVNET_ROUTE_SCAN, start,
                            lkvnet_node_http_status_of(rc), "%s", err.msg);
    goto done;
  }
  lkvnet_jbuf_lit(&b, more ? "], \"more\": true}" : "], \"more\": false}");
  lkvnet_node_reply_json(s, req, LKVNET_ROUTE_SCAN, start, 200, &b);
done:
  if (it != NULL) lkv_iter_free(it);
  free(a);
  free(bnd);
  free(lim);
}

static void route_kv(lkvnet_server *s, lkvnet_req *req, const char *path,
                     int cmd, double start) {
  size_t klen;
  char *key = evhttp_uridecode(path + 4, 0, &klen);
  if (key == NULL) {
    lkvnet_node_reply_error(s, req, LKVNET_ROUTE_KV, start, 500,
                            "out of memory");
    return;
  }
  if (cmd == LKVNET_HTTP_GET) {
    lkv_err err;
    int rc;
    err.msg[0] = '\0';
    if (lkvnet_node_is_reserved(key, klen)) {
      lkvnet_node_reply_error(
          s, req, LKVNET_ROUTE_KV, start, 400,
          "keys starting with \\xff\\xfflunakv/ are reserved");
    } else if ((rc = lkv_db_get(s->db, key, klen, LKV_SEQ_LATEST, &s->getbuf,
                                &err)) == LKV_OK) {
      lkvnet_node_reply(s, req, LKVNET_ROUTE_KV, start, 200,
                        "application/octet-stream", s->getbuf.data,
                        s->getbuf.len);
    } else if (rc == LKV_NOTFOUND) {
      lkvnet_node_reply_error(s, req, LKVNET_ROUTE_KV, start, 404,
                              "key not found");
    } else {
      lkvnet_node_reply_error(s, req, LKVNET_ROUTE_KV, start,
                              lkvnet_node_http_status_of(rc), "%s", err.msg);
    }
  } else if (cmd == LKVNET_HTTP_PUT) {
    size_t n;
    const char *v = lkvnet_req_body(req, &n);
    if (v == NULL)
      lkvnet_node_reply_error(s, req, LKVNET_ROUTE_KV, start, 500,
                              "out of memory");
    else
      lkvnet_node_write_begin(s, req, LKVNET_ROUTE_KV, start, LKVNET_OP_SET,
                              key, klen, v, n);
  } else {
    lkvnet_node_write_begin(s, req, LKVNET_ROUTE_KV, start, LKVNET_OP_DELETE,
                            key, klen, NULL, 0);
  }
  free(key);
}

/* POST /transfer_leader {"node_url": "http://..."}: on the leader (a
 * follower forwards it), hand the leadership over; answered once the
 * target leads. */
static void route_transfer(lkvnet_server *s, lkvnet_req *req, double start) {
  size_t n;
  const char *body = lkvnet_req_body(req, &n);
  lkvnet_json_object o;
  char jerr[LKVNET_JSON_ERR_LEN];
  const lkvnet_json_member *u;
  memset(&o, 0, sizeof o);
  if (body == NULL) {
    lkvnet_node_reply_error(s, req, LKVNET_ROUTE_TRANSFER, start, 500,
                            "out of memory reading the body");
    return;
  }
  if (lkvnet_json_parse_object(body, n, &o, jerr) != 0) {
    lkvnet_node_reply_error(s, req, LKVNET_ROUTE_TRANSFER, start, 400,
                            "malformed JSON: %s", jerr);
    return;
  }
  if ((u = need_string(s, req, LKVNET_ROUTE_TRANSFER, start, &o, "node_url")) !=
      NULL)
    (void)lkvnet_node_transfer_begin(s, req, start, u->str, u->len);
  lkvnet_json_free(&o);
}

/* A consistent read, once its ReadIndex is applied: the route itself,
 * on the query (or the path) it kept. */
static void serve_get(lkvnet_server *s, lkvnet_waiter *w, lkvnet_req *req) {
  route_get(s, req, w->key, w->h.start);
}
static void serve_scan(lkvnet_server *s, lkvnet_waiter *w, lkvnet_req *req) {
  route_scan(s, req, w->key, w->h.start);
}
static void serve_kv(lkvnet_server *s, lkvnet_waiter *w, lkvnet_req *req) {
  route_kv(s, req, w->key, LKVNET_HTTP_GET, w->h.start);
}

/* Hold a consistent read on the leader until the core confirms the
 * leadership (ReadIndex) and the index it names is applied. */
static void read_consistent(lkvnet_server *s, lkvnet_req *req, int route,
                            double start, const char *arg) {
  lkvnet_read_fn fn = route == LKVNET_ROUTE_GET    ? serve_get
                      : route == LKVNET_ROUTE_SCAN ? serve_scan
                                                   : serve_kv;
  char *copy = strdup(arg);
  lkvnet_waiter *w;
  if (copy == NULL || (w = lkvnet_node_waiter_add(s, req, route, start, fn,
                                                  copy, strlen(arg))) == NULL) {
    lkvnet_node_reply_error(s, req, route, start, 500, "out of memory");
    return;
  }
  lkvnet_node_read_begin(s, w);
}

/* A route's method as HTTP spells it. */
static const char *method_name(int m) {
  return m == LKVNET_HTTP_POST ? "POST" : "GET";
}

static const struct {
  const char *path;
  int route;
  int method; /* POST or GET */
} routes[] = {
    {"/set", LKVNET_ROUTE_SET, LKVNET_HTTP_POST},
    {"/delete", LKVNET_ROUTE_DELETE, LKVNET_HTTP_POST},
    {"/get", LKVNET_ROUTE_GET, LKVNET_HTTP_GET},
    {"/scan", LKVNET_ROUTE_SCAN, LKVNET_HTTP_GET},
    {"/status", LKVNET_ROUTE_STATUS, LKVNET_HTTP_GET},
    {"/stats", LKVNET_ROUTE_STATS, LKVNET_HTTP_GET},
    {"/health", LKVNET_ROUTE_HEALTH, LKVNET_HTTP_GET},
    {"/metrics", LKVNET_ROUTE_METRICS, LKVNET_HTTP_GET},
    {"/raft", LKVNET_ROUTE_RAFT, LKVNET_HTTP_POST},
    {"/snapshot", LKVNET_ROUTE_SNAPSHOT, LKVNET_HTTP_POST},
    {"/sync", LKVNET_ROUTE_SYNC, LKVNET_HTTP_GET},
    {"/transfer_leader", LKVNET_ROUTE_TRANSFER, LKVNET_HTTP_POST},
    {"/add_node", LKVNET_ROUTE_ADD_NODE, LKVNET_HTTP_POST},
    {"/remove_node", LKVNET_ROUTE_REMOVE_NODE, LKVNET_HTTP_POST},
};

void lkvnet_node_dispatch(lkvnet_server *s, lkvnet_req *req, double start) {
  const char *path = lkvnet_req_path(req);
  const char *query = lkvnet_req_query(req);
  int cmd = lkvnet_req_method(req);
  size_t body = lkvnet_req_body_len(req);
  size_t i;
  int route = LKVNET_ROUTE_OTHER;
  /* HEAD is GET without the body (lkvnet_node_reply() leaves it out) */
  if (cmd == LKVNET_HTTP_HEAD) cmd = LKVNET_HTTP_GET;
  if (*path == '\0') path = "/";
  for (i = 0; i < sizeof routes / sizeof routes[0]; i++)
    if (strcmp(path, routes[i].path) == 0) route = routes[i].route;
  if (route == LKVNET_ROUTE_OTHER && strncmp(path, "/kv/", 4) == 0)
    route = LKVNET_ROUTE_KV;
  if (route == LKVNET_ROUTE_OTHER && (strcmp(path, "/functions") == 0 ||
                                      strncmp(path, "/functions/", 11) == 0))
    route = LKVNET_ROUTE_FUNCTIONS; /* funcs.c checks its methods */
  if (route == LKVNET_ROUTE_OTHER && strncmp(path, "/call/", 6) == 0)
    route = LKVNET_ROUTE_CALL;
  if (route == LKVNET_ROUTE_OTHER) {
    lkvnet_node_reply_error(s, req, LKVNET_ROUTE_OTHER, start, 404,
                            "no route %s %s", lkvnet_req_method_name(req),
                            path);
    return;
  }
  if (route == LKVNET_ROUTE_KV) {
    if (cmd != LKVNET_HTTP_GET && cmd != LKVNET_HTTP_PUT &&
        cmd != LKVNET_HTTP_DELETE) {
      lkvnet_req_add_header(req, "Allow", "GET, HEAD, PUT, DELETE");
      lkvnet_node_reply_error(
          s, req, route, start, 405,
          "method %s not allowed on /kv/{key} (use GET, PUT or DELETE)",
          lkvnet_req_method_name(req));
      return;
    }
  } else if (route != LKVNET_ROUTE_FUNCTIONS && route != LKVNET_ROUTE_CALL) {
    for (i = 0; routes[i].route != route; i++) {
    }
    if (cmd != routes[i].method) {
      const char *m = method_name(routes[i].method);
      lkvnet_req_add_header(
          req, "Allow", routes[i].method == LKVNET_HTTP_GET ? "GET, HEAD" : m);
      lkvnet_node_reply_error(s, req, route, start, 405,
                              "method %s not allowed on %s (use %s)",
                              lkvnet_req_method_name(req), path, m);
      return;
    }
  }
  /* internal bodies carry whole entries (each within the body limit when
   * it was written) plus a batch; evhttp's own cap still bounds them */
  if (body > s->max_body && route != LKVNET_ROUTE_RAFT &&
      route != LKVNET_ROUTE_SNAPSHOT) {
    lkvnet_node_reply_error(s, req, route, start, 413,
                            "request body is %zu bytes; the limit is %zu", body,
                            s->max_body);
    return;
  }
  if (!query) query = "";
  if (route == LKVNET_ROUTE_RAFT || route == LKVNET_ROUTE_SNAPSHOT ||
      route == LKVNET_ROUTE_SYNC) {
    if (!lkvnet_node_authorized(s, req, route, start)) return;
  } else {
    int members =
        route == LKVNET_ROUTE_ADD_NODE || route == LKVNET_ROUTE_REMOVE_NODE;
    int write =
        route == LKVNET_ROUTE_SET || route == LKVNET_ROUTE_DELETE ||
        route == LKVNET_ROUTE_TRANSFER || members ||
        ((route == LKVNET_ROUTE_KV || route == LKVNET_ROUTE_FUNCTIONS) &&
         cmd != LKVNET_HTTP_GET);
    int consistent = !write &&
                     (route == LKVNET_ROUTE_GET || route == LKVNET_ROUTE_SCAN ||
                      route == LKVNET_ROUTE_KV) &&
                     query_flag(query, "consistent");
    /* a membership change is the cluster's own business: the token */
    if (members && !lkvnet_node_authorized(s, req, route, start)) return;
    if (s->join_refused && route != LKVNET_ROUTE_STATUS &&
        route != LKVNET_ROUTE_STATS && route != LKVNET_ROUTE_HEALTH &&
        route != LKVNET_ROUTE_METRICS) {
      /* its URL is a member it is not (members.c, --join): it serves
       * nothing until an operator sorts that out */
      lkvnet_node_reply_error(s, req, route, start, 503,
                              "this node does not serve: its join was "
                              "refused (%s)",
                              s->join_refusal.msg);
      return;
    }
    if (!write && !consistent &&
        (route == LKVNET_ROUTE_GET || route == LKVNET_ROUTE_SCAN ||
         route == LKVNET_ROUTE_KV) &&
        !lkvnet_node_is_member(s)) {
      /* its store is nobody's: empty, or left behind when it was removed */
      lkvnet_node_reply_error(s, req, route, start, 503,
                              "not a member of the cluster: this node's "
                              "data is not kept up to date");
      return;
    }
    if ((write || consistent) && !s->leader) {
      /* to the leader; 503 when none is known, or when this request was
       * forwarded here already */
      lkvnet_node_forward(s, req, route, start);
      return;
    }
    if (consistent) {
      read_consistent(s, req, route, start,
                      route == LKVNET_ROUTE_KV ? path : query);
      return;
    }
  }
  switch (route) {
    case LKVNET_ROUTE_SET:
    case LKVNET_ROUTE_DELETE: route_write_json(s, req, route, start); break;
    case LKVNET_ROUTE_TRANSFER: route_transfer(s, req, start); break;
    case LKVNET_ROUTE_ADD_NODE:
    case LKVNET_ROUTE_REMOVE_NODE:
      lkvnet_node_route_members(s, req, route, start);
      break;
    case LKVNET_ROUTE_GET: route_get(s, req, query, start); break;
    case LKVNET_ROUTE_RAFT: lkvnet_node_route_raft(s, req, start); break;
    case LKVNET_ROUTE_SNAPSHOT:
      lkvnet_node_route_snapshot(s, req, query, start);
      break;
    case LKVNET_ROUTE_SYNC: lkvnet_node_route_sync(s, req, query, start); break;
    case LKVNET_ROUTE_SCAN: route_scan(s, req, query, start); break;
    case LKVNET_ROUTE_STATUS: lkvnet_node_route_status(s, req, start); break;
    case LKVNET_ROUTE_STATS: lkvnet_node_route_stats(s, req, start); break;
    case LKVNET_ROUTE_HEALTH: lkvnet_node_route_health(s, req, start); break;
    case LKVNET_ROUTE_METRICS: lkvnet_node_route_metrics(s, req, start); break;
    case LKVNET_ROUTE_FUNCTIONS:
      lkvnet_node_route_functions(s, req, path, cmd, start);
      break;
    case LKVNET_ROUTE_CALL:
      lkvnet_node_route_call(s, req, path, query, start);
      break;
    default: route_kv(s, req, path, cmd, start); break;
  }
}
