#!/bin/sh
# tools/callgraph.sh - which files of a room call which, from the objects
# the build made: a file calls another when it uses (nm: U) a symbol the
# other defines (T, or D/B for data). Prints one line per file with the
# files it calls, then checks that no files call each other in a circle
# (tsort finds the loop). Exit 1 on a circle.
#
#   tools/callgraph.sh [OBJDIR]     default build/obj/engine (make all first)
set -eu

dir=${1:-build/obj/engine}
ls "$dir"/*.o >/dev/null 2>&1 || { echo "callgraph: no objects in $dir (make all)" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

for o in "$dir"/*.o; do
  f=$(basename "$o" .o)
  case $f in *_test) continue ;; esac
  nm --defined-only -g "$o" | awk -v f="$f" '$2 ~ /^[TDBR]$/ { print $3, f }'
done | sort > "$tmp/defs"

for o in "$dir"/*.o; do
  f=$(basename "$o" .o)
  case $f in *_test) continue ;; esac
  nm -u "$o" | awk -v f="$f" '{ print $NF, f }'
done | sort > "$tmp/uses"

# caller callee, once per pair, without calls inside one file
join "$tmp/uses" "$tmp/defs" | awk '$2 != $3 { print $2, $3 }' | sort -u > "$tmp/edges"

for o in "$dir"/*.o; do
  f=$(basename "$o" .o)
  case $f in *_test) continue ;; esac
  printf '%-10s -> %s\n' "$f" "$(awk -v f="$f" '$1 == f { printf "%s ", $2 }' "$tmp/edges")"
done

if tsort "$tmp/edges" > /dev/null 2> "$tmp/loop"; then
  echo "callgraph: no circle among the files of $dir"
else
  echo "callgraph: files of $dir call each other in a circle:" >&2
  awk '/input contains a loop:$/ { if (l != "") print "  " l; l = ""; next }
       { sub(/^tsort: /, ""); l = l == "" ? $0 : l " -> " $0 }
       END { if (l != "") print "  " l }' "$tmp/loop" >&2
  exit 1
fi
