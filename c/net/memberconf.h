/* memberconf.h - the members of a cluster by URL (docs/replication.md,
 * "Membership"): what a node URL may look like, and the configuration
 * the node keeps in its engine (LKVNET_CONF_KEY) with every member's
 * URL, so a node that restarts, or installs a snapshot, knows where
 * every member is. Pure functions: no I/O, no server state.
 *
 * The kept configuration, little-endian (version 2):
 *
 *   0  version   1  0x81 (version 1 has no such byte: it starts with
 *                   the voter count, at most LKVNET_RAFT_MAX_MEMBERS)
 *   1  voters    1  count
 *   2  learners  1  count (voters + learners <= LKVNET_RAFT_MAX_MEMBERS)
 *   3  ids       8 each: the voters, then the learners
 *      urls      per member, in the same order: length 1 (0: unknown),
 *                then the URL, normalised (lkvnet_url_normalize), whose
 *                node id (lkvnet_node_id_of) is the member's
 *
 * Version 1 (written before membership changes) is voters 1, learners 1,
 * ids 8 each: it decodes with every URL unknown. */
#ifndef LKVNET_MEMBERCONF_H
#define LKVNET_MEMBERCONF_H

#include <stddef.h>

#include "raft.h"

/* A node URL's longest normalised form, in bytes. */
#define LKVNET_URL_MAX 200
#define LKVNET_KEPTCONF_VERSION 0x81u
/* The largest encoding: every member with the longest URL. */
#define LKVNET_KEPTCONF_MAX \
  (3u + LKVNET_RAFT_MAX_MEMBERS * (8u + 1u + LKVNET_URL_MAX))

/* A node's URL is http://HOST[:PORT] with HOST a name (letters, digits,
 * '.', '-', '_'), an IPv4 address, or an IPv6 one in brackets, PORT 1 to
 * 65535 without leading zeros, and nothing after it but slashes. The
 * normalised form has the scheme and the host lower-cased and no
 * trailing slash (what lkvnet_node_id_of hashes the same way). 0 and
 * out (LKVNET_URL_MAX + 1 bytes) filled; -1 and why says what is wrong. */
int lkvnet_url_normalize(const char *url, size_t len, char *out, char *why,
                         size_t whylen);

/* A configuration with its members' URLs: urls[i] belongs to the i-th
 * member, the voters first, then the learners; "" when unknown. */
typedef struct lkvnet_keptconf {
  lkvnet_raft_conf conf;
  char urls[LKVNET_RAFT_MAX_MEMBERS][LKVNET_URL_MAX + 1];
} lkvnet_keptconf;

/* Encode k (its URLs normalised already) at out (LKVNET_KEPTCONF_MAX
 * bytes at least); returns the length. */
size_t lkvnet_keptconf_encode(const lkvnet_keptconf *k, unsigned char *out);

/* Decode either version into *k: LKV_OK, or LKV_CORRUPTION (err says
 * why) for a length that does not add up, too many members, a zero or
 * repeated id, a URL that is not one, or a URL whose id is not the
 * member's. */
int lkvnet_keptconf_decode(const unsigned char *b, size_t n, lkvnet_keptconf *k,
                           lkv_err *err);

#endif
