#!/bin/bash
# Self-test of the MongoDB test bed: test/lib/fakemongo.py (mongod 5.0 wire protocol, in
# memory) started by test/lib/mongo.sh, checked with test/lib/mongo_tool.py (pymongo):
# catalog (options, index specs, views) as created, unique indexes, ordered inserts,
# renameCollection with dropTarget, byte-exact documents of every BSON type, and the
# snapshot read concern refused by a standalone. With TB_TEST_MONGO_URI the same checks
# run against that real server (the standalone check is then skipped).
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/mongo.sh"
P=$(free_port)
PS=$(free_port)

scratch_dir
mongo_start "$D/rs" $P
U=$MONGO_URI_BASE
DB=tb_selftest_app
mtool drop "$U" $DB
mtool drop "$U" ${DB}2

is "$(mtool cmd "$U" admin '{"ping": 1}' | grep -o '"ok": 1.0')" '"ok": 1.0' "the server answers ping at $U"

mtool fill "$U" $DB A
ok $? "fill creates collections, indexes, a capped collection, a validated one and a view"
mtool snapshot "$U" $DB >"$D/snap1"
mtool snapshot "$U" $DB >"$D/snap2"
cmp -s "$D/snap1" "$D/snap2"
ok $? "snapshot is stable across two calls"
is "$(grep -c '^  doc ' "$D/snap1")" 209 "snapshot hashes every document (1 + 1 + 200 + 5 + 2)"
unlike "$(cat "$D/snap1")" "$DB" "snapshot does not name the database"

# --- the catalog as created
lc() { mtool cmd "$U" $DB "{\"listCollections\": 1, \"filter\": {\"name\": \"$1\"}}"; }
like "$(lc log)" '"type": "collection", "options": \{"capped": true, "size": 1048576, "max": 100\}, "info": \{"readOnly": false, "uuid": \{"\$binary": \{"base64": "[A-Za-z0-9+/]{22}==", "subType": "04"\}\}\}, "idIndex": \{"v": 2, "key": \{"_id": 1\}, "name": "_id_"\}' \
	"listCollections: the capped collection's options in order, info with a UUID, idIndex"
like "$(lc validated)" '"options": \{"validator": \{"\$jsonSchema": \{"bsonType": "object", "required": \["name"\].*\}\}, "validationLevel": "moderate", "validationAction": "error", "collation": \{"locale": "en", [^}]*"strength": 2[,}]' \
	"listCollections: validator, validationLevel, validationAction and collation kept"
like "$(lc big_orders)" '"name": "big_orders", "type": "view", "options": \{"viewOn": "orders", "pipeline": \[\{"\$match": \{"total": \{"\$gt": 1000\}\}\}\]\}, "info": \{"readOnly": true\}\}' \
	"listCollections: the view with viewOn and pipeline, read-only, no uuid"
like "$(lc canary)" '"options": \{\}' "a collection created by insert has empty options"
names=$(mtool cmd "$U" $DB '{"listCollections": 1, "nameOnly": true, "filter": {"type": "view"}}')
like "$names" '"firstBatch": \[\{"name": "big_orders", "type": "view"\}\]' "listCollections filter on type, nameOnly"
ix=$(mtool cmd "$U" $DB '{"listIndexes": "orders"}')
like "$ix" '"firstBatch": \[\{"v": 2, "key": \{"_id": 1\}, "name": "_id_"\}, \{"v": 2, "key": \{"customer": 1, "number": -1\}, "name": "customer_number", "unique": true\}, \{"v": 2, "key": \{"created": 1\}, "name": "created_ttl", "expireAfterSeconds": 3600\}, \{"v": 2, "key": \{"coupon": 1\}, "name": "coupon_sparse", "sparse": true\}, \{"v": 2, "key": \{"status": 1, "total": -1\}, "name": "status_partial", "partialFilterExpression": \{"total": \{"\$gt": 100\}\}\}\]' \
	"listIndexes: _id_ first, every spec verbatim with v: 2"
like "$(mtool cmd "$U" $DB '{"listIndexes": "validated"}')" '"name": "name_1", "collation": \{"locale": "en", [^}]*"strength": 2[,}]' \
	"an index on a collection with a collation inherits it"
view=$(mtool cmd "$U" $DB '{"find": "big_orders", "filter": {"status": "paid"}, "projection": {"_id": 1}}')
like "$view" '"firstBatch": \[\{"_id": 139\}, \{"_id": 142\}' "find on a view runs its pipeline on viewOn"
like "$(mtool cmd "$U" $DB '{"count": "big_orders"}')" '"n": 63' "count on a view"
like "$(mtool cmd "$U" $DB '{"aggregate": "orders", "pipeline": [{"$match": {"status": "new"}}, {"$count": "n"}], "cursor": {}}')" \
	'"firstBatch": \[\{"n": 66\}\]' "aggregate with \$count"
like "$(mtool cmd "$U" $DB '{"insert": "big_orders", "documents": [{"_id": 1}]}')" '"code": 166' \
	"an insert into a view fails with CommandNotSupportedOnView"
like "$(mtool cmd "$U" $DB '{"create": "log"}')" '"code": 48, "codeName": "NamespaceExists"' \
	"create of an existing name fails with NamespaceExists"

# --- unique index, validation, ordered inserts
dup=$(mtool cmd "$U" $DB '{"insert": "orders", "documents": [{"_id": 5000, "customer": "c01", "number": {"$numberLong": "1018"}}]}')
like "$dup" '"writeErrors": \[\{"index": 0, "code": 11000, "keyPattern": \{"customer": 1, "number": -1\}, "keyValue": \{"customer": "c01", "number": 1018\}, "errmsg": "E11000 duplicate key error collection: [a-z_0-9]+\.orders index: customer_number dup key: \{ customer: \\"c01\\", number: 1018 \}"\}\]' \
	"the unique compound index refuses a duplicate (E11000, keyPattern, keyValue)"
like "$dup" '^\{"n": 0,' "and nothing is inserted"
ord=$(mtool cmd "$U" $DB '{"insert": "canary", "documents": [{"_id": 100}, {"_id": 1}, {"_id": 101}]}')
like "$ord" '^\{"n": 1, "writeErrors": \[\{"index": 1, "code": 11000,' "an ordered insert stops at the first duplicate"
like "$(mtool cmd "$U" $DB '{"count": "canary", "query": {"_id": 101}}')" '"n": 0' "the document after it is not inserted"
unord=$(mtool cmd "$U" $DB '{"insert": "canary", "documents": [{"_id": 102}, {"_id": 1}, {"_id": 103}], "ordered": false}')
like "$unord" '^\{"n": 2, "writeErrors": \[\{"index": 1, "code": 11000,' "an unordered insert goes on after it"
like "$(mtool cmd "$U" $DB '{"insert": "validated", "documents": [{"_id": 9, "qty": 1}]}')" '"code": 121' \
	"the validator refuses a document without name"
like "$(mtool cmd "$U" $DB '{"insert": "validated", "documents": [{"_id": 9, "qty": 1}], "bypassDocumentValidation": true}')" \
	'^\{"n": 1,' "bypassDocumentValidation lets it in"

# --- byte-exact documents of every BSON type
want=$(mtool everytype-hex)
is "$(mtool docs "$U" $DB everytype)" "$want" "the every-type document comes back byte for byte"
mtool insert-hex "$U" $DB copy "$want" >/dev/null
is "$(mtool docs "$U" $DB copy)" "$want" "and so does a raw copy inserted as is"
# mongod puts _id first and fills a top-level Timestamp(0, 0); nested ones stay.
moved=$(/usr/bin/python3 -c 'import bson; from bson.son import SON; from bson.timestamp import Timestamp
print(bson.encode(SON([("a", 1), ("t0", Timestamp(0, 0)), ("n", SON([("t0", Timestamp(0, 0))])), ("_id", 7)])).hex())')
mtool insert-hex "$U" $DB fixed "$moved" >/dev/null
got=$(mtool cmd "$U" $DB '{"find": "fixed"}')
like "$got" '"firstBatch": \[\{"_id": 7, "a": 1, "t0": \{"\$timestamp": \{"t": [1-9][0-9]*, "i": [1-9][0-9]*\}\}, "n": \{"t0": \{"\$timestamp": \{"t": 0, "i": 0\}\}\}\}\]' \
	"insert moves _id first and fills a top-level Timestamp(0, 0) only, as mongod does"

# --- renameCollection
mtool fill "$U" ${DB}2 B
before=$(mtool snapshot "$U" ${DB}2 | sed -n '/^collection orders$/,/^  count/p' | sed 1d)
like "$(mtool cmd "$U" admin "{\"renameCollection\": \"${DB}2.orders\", \"to\": \"${DB}2.log\"}")" \
	'"code": 48, "codeName": "NamespaceExists"' "renameCollection onto an existing collection fails without dropTarget"
like "$(mtool cmd "$U" admin "{\"renameCollection\": \"${DB}2.nothere\", \"to\": \"${DB}2.x\"}")" \
	'"code": 26, "codeName": "NamespaceNotFound"' "renameCollection of a missing collection: NamespaceNotFound"
like "$(mtool cmd "$U" ${DB}2 "{\"renameCollection\": \"${DB}2.orders\", \"to\": \"${DB}2.log\"}")" \
	'"code": 13' "renameCollection only runs against admin"
like "$(mtool cmd "$U" admin "{\"renameCollection\": \"${DB}2.orders\", \"to\": \"${DB}2.log\", \"dropTarget\": true}")" \
	'^\{"ok": 1.0' "renameCollection with dropTarget replaces the target"
after=$(mtool snapshot "$U" ${DB}2 | sed -n '/^collection log$/,/^  count/p' | sed 1d)
is "$after" "$before" "the target now has the source's options, index specs and documents"
unlike "$(mtool snapshot "$U" ${DB}2)" '^collection orders$' "and the source is gone"

# --- listDatabases, drop
like "$(mtool cmd "$U" admin '{"listDatabases": 1, "nameOnly": true}')" "\"name\": \"${DB}2\"" "listDatabases lists a database with collections"
mtool drop "$U" ${DB}2
is "$(mtool snapshot "$U" ${DB}2)" "" "drop removes every collection and view"
unlike "$(mtool cmd "$U" admin '{"listDatabases": 1, "nameOnly": true}')" "\"name\": \"${DB}2\"" "and the database is no longer listed"
like "$(mtool cmd "$U" $DB '{"find": "orders", "filter": {}, "limit": 1, "readConcern": {"level": "snapshot"}}')" \
	'"atClusterTime": \{"\$timestamp"' "a replica set serves readConcern snapshot (cursor.atClusterTime)"
mtool drop "$U" $DB

# --- a standalone refuses readConcern snapshot
if [ -z "${TB_TEST_MONGO_URI:-}" ]; then
	mongo_start "$D/standalone" $PS ""
	S=$MONGO_URI_BASE
	like "$(mtool cmd "$S" admin '{"hello": 1}')" '"isWritablePrimary": true' "the standalone answers hello"
	unlike "$(mtool cmd "$S" admin '{"hello": 1}')" 'setName' "without a setName"
	like "$(mtool cmd "$S" $DB '{"find": "orders", "filter": {}, "readConcern": {"level": "snapshot"}}')" \
		'"errmsg": "node needs to be a replica set member to use readConcern: snapshot", "code": 123, "codeName": "NotAReplicaSet"' \
		"a standalone refuses readConcern snapshot as mongod 5.0 does"
	spid=$(cat "$D/standalone/fakemongo.pid")
	mongo_stop "$D/standalone"
	kill -0 "$spid" 2>/dev/null
	ok $((!$?)) "mongo_stop ends the server process"
else
	ok 0 "# SKIP standalone checks need the fake server"
fi

done_testing
