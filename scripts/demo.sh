#!/usr/bin/env bash
# make demo: a replication you can watch on one machine, with nothing to set
# up. It builds georep, makes a small master tree, replicates it to a local
# slave (a child `georep slave --stdio`), changes the tree, replicates again,
# and shows the status and both trees. Everything lives under $DEMO_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=bin/georep
dir=${DEMO_DIR:-$(mktemp -d /tmp/georep-demo.XXXXXX)}
master=$dir/master slave=$dir/slave state=$dir/state
mkdir -p "$master/docs/old" "$slave"

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

say "a master tree in $master"
printf 'hello from georep\n' >"$master/README.txt"
for i in $(seq 1 50); do printf 'note %d\n' "$i" >"$master/docs/note-$i.txt"; done
head -c 3000000 /dev/urandom >"$master/docs/blob.bin"
ln -s ../README.txt "$master/docs/readme-link"
ln "$master/docs/note-1.txt" "$master/docs/old/note-1-hardlink.txt"
touch -d '2001-01-01 00:00' "$master/docs/old"

say "georep master --once  (slave: $slave)"
"$bin" master --root "$master" --slave "$slave" --state "$state" --once --log-level warn

say "changes on the master: a rename, a delete, an edit, a chmod"
mv "$master/docs/note-2.txt" "$master/docs/old/note-2-moved.txt"
rm "$master/docs/note-3.txt"
printf 'edited\n' >>"$master/README.txt"
chmod 600 "$master/docs/note-4.txt"
"$bin" master --root "$master" --slave "$slave" --state "$state" --once --log-level warn

say "georep status --state $state"
"$bin" status --state "$state"

say "master and slave compared (diff -r, the slave's .georep/ state left out)"
if diff -r --no-dereference -x .georep "$master" "$slave"; then
	echo "identical: $(find "$slave" -path "$slave/.georep" -prune -o -type f -print | wc -l) files"
fi
echo
echo "the demo's files are in $dir (remove with: rm -rf $dir)"
