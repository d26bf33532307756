#!/usr/bin/python3
"""MongoDB helper for the integration tests (pymongo 3.11 from Debian; run with /usr/bin/python3).
Works against test/lib/fakemongo.py and against a real mongod alike.

usage:
  mongo_tool.py fill URI DB LABEL        canary, everytype, orders (+4 indexes), capped log,
                                         validated (validator + collation), view big_orders
  mongo_tool.py snapshot URI DB          stable description of DB: every collection and view
                                         (by name) with type, options, index specs and the
                                         SHA-256 of every document's raw BSON in natural order
  mongo_tool.py docs URI DB COLL         each document's raw BSON as hex, natural order
  mongo_tool.py many URI DB COLL N [SIZE]   N documents of about SIZE bytes (200)
  mongo_tool.py padded URI DB COLL N SIZE   N documents of about SIZE bytes that compress to
                                         almost nothing (one letter repeated)
  mongo_tool.py counts URI DB            {"collections": {name: documents}} of every collection
                                         (views and system.* left out), counted by reading them
  mongo_tool.py cmd URI DB JSON          runs one command (extended JSON); prints the reply as
                                         relaxed extended JSON; exit 1 when ok is not 1
  mongo_tool.py drop URI DB              drops every collection and view of DB
  mongo_tool.py everytype-hex            the raw everytype document fill inserts, as hex
  mongo_tool.py insert-hex URI DB COLL HEX...   inserts raw documents (hex) in one ordered
                                         insert; prints the reply's n and writeErrors codes
"""
import datetime
import hashlib
import os
import random
import struct
import sys
from collections import OrderedDict

import bson
import pymongo
from bson import json_util
from bson.binary import Binary, UuidRepresentation
from bson.code import Code
from bson.codec_options import CodecOptions
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.raw_bson import RawBSONDocument
from bson.regex import Regex
from bson.son import SON
from bson.timestamp import Timestamp

OPTS = CodecOptions(document_class=OrderedDict, uuid_representation=UuidRepresentation.UNSPECIFIED)
RAW = CodecOptions(document_class=RawBSONDocument, uuid_representation=UuidRepresentation.UNSPECIFIED)
CANON = json_util.JSONOptions(json_mode=json_util.JSONMode.CANONICAL, document_class=OrderedDict,
                              uuid_representation=UuidRepresentation.UNSPECIFIED)
RELAXED = json_util.JSONOptions(json_mode=json_util.JSONMode.RELAXED, document_class=OrderedDict,
                                uuid_representation=UuidRepresentation.UNSPECIFIED)


def client(uri):
    timeout = int(os.environ.get('MONGO_TOOL_TIMEOUT_MS', '10000'))
    return pymongo.MongoClient(uri, document_class=OrderedDict, uuidRepresentation='unspecified',
                               serverSelectionTimeoutMS=timeout, connectTimeoutMS=timeout)


def database(uri, db, raw=False):
    return client(uri).get_database(db, codec_options=RAW if raw else OPTS)


def command(db, cmd):
    return db.command(cmd, codec_options=OPTS)


def canon(doc):
    return json_util.dumps(doc, json_options=CANON)


# ------------------------------------------------------------------ the every-type document

def _element(t, name, value):
    return bytes([t]) + name.encode() + b'\x00' + value


def _string(s):
    b = s.encode()
    return struct.pack('<i', len(b) + 1) + b + b'\x00'


def everytype_raw():
    """One document holding every BSON type, built with bson.encode, plus the deprecated
    types (undefined, DBPointer, symbol) appended as hand-built elements."""
    doc = OrderedDict([
        ('_id', 'everytype'),
        ('int32', 42), ('int32_min', -2147483648), ('int32_max', 2147483647),
        ('int64', Int64(42)), ('int64_min', Int64(-9223372036854775808)), ('int64_max', Int64(9223372036854775807)),
        ('double', 3.141592653589793), ('double_negzero', -0.0), ('double_nan', float('nan')),
        ('double_inf', float('inf')), ('double_neginf', float('-inf')), ('double_tiny', 5e-324),
        ('dec', Decimal128('1234567890.123456789012345678901234')), ('dec_nan', Decimal128('NaN')),
        ('dec_negzero', Decimal128('-0')), ('dec_negzero_exp', Decimal128('-0E+3')),
        ('dec_inf', Decimal128('-Infinity')), ('dec_trailing', Decimal128('1.10')),
        ('string', 'h\u00e9llo w\u00f6rld \u2014 \u65e5\u672c\u8a9e \U0001F389'), ('string_nul', 'a\x00b'),
        ('string_empty', ''),
        ('date', datetime.datetime(2024, 2, 29, 23, 59, 59, 999000)),
        ('date_1969', datetime.datetime(1969, 7, 20, 20, 17, 40, 1000)),
        ('date_epoch', datetime.datetime(1970, 1, 1)),
        ('date_1900', datetime.datetime(1900, 1, 1, 0, 0, 0, 1000)),
        ('bin0', Binary(b'\x00\x01\x02\xff binary', 0)), ('bin0_empty', Binary(b'', 0)),
        ('bin2_old', Binary(b'old binary', 2)),
        ('bin3_uuid_old', Binary(bytes.fromhex('00112233445566778899aabbccddeeff'), 3)),
        ('bin4_uuid', Binary(bytes.fromhex('0123456789ab4def8123456789abcdef'), 4)),
        ('bin5_md5', Binary(hashlib.md5(b'x').digest(), 5)),
        ('bin80_user', Binary(b'user defined', 0x80)),
        ('oid', ObjectId('5f0c1a2b3c4d5e6f7a8b9c0d')),
        ('ts', Timestamp(1700000000, 7)),
        ('regex', Regex('^ab.c$', 'imsx')), ('regex_noflags', Regex('x+', '')),
        ('minkey', MinKey()), ('maxkey', MaxKey()),
        ('code', Code('function () { return 1; }')),
        ('code_scope', Code('function () { return y; }', {'y': 1})),
        ('null', None), ('true', True), ('false', False),
        ('nested', OrderedDict([('l1', OrderedDict([('l2', OrderedDict([('l3', OrderedDict([
            ('l4', [1, [2, [3, OrderedDict([('deep', 'x'), ('ts0', Timestamp(0, 0))])]]])]))]))])),
            ('z_before_a', 1), ('a_after_z', 2)])),
        ('dbref_like', OrderedDict([('$id', 1), ('$ref', 'canary')])),
        ('array_mixed', [1, 'two', 3.0, None, OrderedDict([('k', [])]), [[]], Int64(5)]),
        ('empty_doc', OrderedDict()), ('empty_array', []),
        ('field.with.dots', OrderedDict([('$dollar', 1)])),
    ])
    raw = bson.encode(doc, codec_options=OPTS)
    extra = (_element(0x06, 'undefined', b'')
             + _element(0x0E, 'symbol', _string('sym'))
             + _element(0x0C, 'dbpointer', _string('canary') + bytes.fromhex('5f0c1a2b3c4d5e6f7a8b9c0e')))
    body = raw[4:-1] + extra
    return struct.pack('<i', len(body) + 5) + body + b'\x00'


# ------------------------------------------------------------------ subcommands

def fill(uri, dbname, label):
    db = database(uri, dbname)
    db.canary.insert_one(OrderedDict([('_id', 1), ('v', '%s canary' % label)]))
    db.everytype.insert_one(RawBSONDocument(everytype_raw()))

    orders = []
    for i in range(1, 201):
        d = OrderedDict([('_id', i), ('customer', 'c%02d' % (i % 17)), ('number', Int64(1000 + i)),
                         ('total', round(i * 7.25, 2)), ('status', ['new', 'paid', 'shipped'][i % 3]),
                         ('created', datetime.datetime(2100, 1, 1) + datetime.timedelta(minutes=i)),
                         ('lines', [OrderedDict([('sku', 'sku-%d' % (i * j % 31)), ('qty', j)])
                                    for j in range(1, i % 4 + 2)])])
        if i % 5 == 0:
            d['coupon'] = 'C%03d' % i
        orders.append(d)
    db.orders.insert_many(orders)
    command(db, SON([('createIndexes', 'orders'), ('indexes', [
        SON([('key', SON([('customer', 1), ('number', -1)])), ('name', 'customer_number'), ('unique', True)]),
        SON([('key', SON([('created', 1)])), ('name', 'created_ttl'), ('expireAfterSeconds', 3600)]),
        SON([('key', SON([('coupon', 1)])), ('name', 'coupon_sparse'), ('sparse', True)]),
        SON([('key', SON([('status', 1), ('total', -1)])), ('name', 'status_partial'),
             ('partialFilterExpression', SON([('total', SON([('$gt', 100)]))]))]),
    ])]))

    command(db, SON([('create', 'log'), ('capped', True), ('size', 1048576), ('max', 100)]))
    db.log.insert_many([OrderedDict([('_id', i), ('msg', 'log line %d' % i), ('level', i % 3)])
                        for i in range(1, 6)])

    command(db, SON([('create', 'validated'),
                     ('validator', SON([('$jsonSchema', SON([
                         ('bsonType', 'object'), ('required', ['name']),
                         ('properties', SON([('name', SON([('bsonType', 'string'), ('maxLength', 40)])),
                                             ('qty', SON([('bsonType', ['int', 'long']), ('minimum', 0)]))]))]))])),
                     ('validationLevel', 'moderate'), ('validationAction', 'error'),
                     ('collation', SON([('locale', 'en'), ('strength', 2)]))]))
    db.validated.insert_many([OrderedDict([('_id', 1), ('name', 'Apple'), ('qty', 3)]),
                              OrderedDict([('_id', 2), ('name', 'banana'), ('qty', Int64(7))])])
    command(db, SON([('createIndexes', 'validated'),
                     ('indexes', [SON([('key', SON([('name', 1)])), ('name', 'name_1')])])]))

    command(db, SON([('create', 'big_orders'), ('viewOn', 'orders'),
                     ('pipeline', [SON([('$match', SON([('total', SON([('$gt', 1000)]))]))])])]))


def coll_infos(db):
    return list(db.list_collections())


def snapshot(uri, dbname):
    db = database(uri, dbname)
    rawdb = database(uri, dbname, raw=True)
    out = []
    for info in sorted(coll_infos(db), key=lambda d: d['name']):
        name = info['name']
        if name == 'system.views':       # the views are listed with their definitions
            continue
        ctype = info.get('type', 'collection')
        out.append('%s %s' % (ctype, name))
        out.append('  options %s' % canon(info.get('options', {})))
        ro = (info.get('info') or {}).get('readOnly')
        out.append('  readOnly %s' % ('true' if ro else 'false'))
        if ctype == 'view':
            continue
        if 'idIndex' in info:
            ix = OrderedDict((k, v) for k, v in info['idIndex'].items() if k != 'ns')
            out.append('  idIndex %s' % canon(ix))
        for ix in sorted(db[name].list_indexes(), key=lambda d: d['name']):
            ix = OrderedDict((k, v) for k, v in ix.items() if k != 'ns')
            out.append('  index %s' % canon(ix))
        n = 0
        for d in rawdb[name].find({}, sort=[('$natural', 1)], batch_size=1000):
            out.append('  doc %s' % hashlib.sha256(d.raw).hexdigest())
            n += 1
        out.append('  count %d' % n)
    print('\n'.join(out))


def docs(uri, dbname, coll):
    rawdb = database(uri, dbname, raw=True)
    for d in rawdb[coll].find({}, sort=[('$natural', 1)]):
        print(d.raw.hex())


def many(uri, dbname, coll, n, size=200):
    db = database(uri, dbname)
    n, size = int(n), int(size)
    rnd = random.Random(n * 7919 + size)
    batch = []
    done = 0
    base = datetime.datetime(2020, 1, 1)
    for i in range(n):
        d = OrderedDict([('_id', ObjectId()), ('i', i), ('l', Int64(i * 1000003)), ('f', i / 7.0),
                         ('t', base + datetime.timedelta(seconds=i)), ('b', i % 2 == 0)])
        if i % 3 == 0:
            d['bin'] = Binary(bytes(rnd.getrandbits(8) for _ in range(16)), 4)
        if i % 4 == 0:
            d['sub'] = OrderedDict([('k', 'v%d' % (i % 97)), ('a', [i, str(i), None])])
        if i % 5 == 0:
            d['dec'] = Decimal128('%d.%02d' % (i, i % 100))
        used = len(bson.encode(d, codec_options=OPTS))
        pad = max(0, size - used - 10)
        d['s'] = ''.join(rnd.choice('abcdefghijklmnopqrstuvwxyz0123456789') for _ in range(pad))
        batch.append(d)
        if len(batch) == 1000:
            db[coll].insert_many(batch, ordered=True)
            done += len(batch)
            batch = []
    if batch:
        db[coll].insert_many(batch, ordered=True)
        done += len(batch)
    print(done)


def padded(uri, dbname, coll, n, size):
    db = database(uri, dbname)
    n, size = int(n), int(size)
    for start in range(0, n, 1000):
        db[coll].insert_many([OrderedDict([('_id', i), ('pad', 'x' * size)])
                              for i in range(start, min(n, start + 1000))], ordered=True)
    print(n)


def counts(uri, dbname):
    db = database(uri, dbname)
    out = OrderedDict()
    for info in sorted(coll_infos(db), key=lambda d: d['name']):
        if info.get('type', 'collection') != 'collection' or info['name'].startswith('system.'):
            continue
        out[info['name']] = sum(1 for _ in db[info['name']].find({}, projection={'_id': 1}))
    print(json_util.dumps(OrderedDict([('collections', out)])))


def cmd(uri, dbname, js):
    db = database(uri, dbname)
    c = json_util.loads(js, json_options=CANON)
    reply = db.command(SON(c.items()), check=False, codec_options=OPTS)
    print(json_util.dumps(reply, json_options=RELAXED))
    return 0 if reply.get('ok') == 1 else 1


def drop(uri, dbname):
    db = database(uri, dbname)
    names = [i['name'] for i in coll_infos(db)]
    for name in sorted(names, key=lambda n: n == 'system.views'):
        if name.startswith('system.') and name != 'system.views':
            continue
        db.drop_collection(name)


def insert_hex(uri, dbname, coll, *hexes):
    db = database(uri, dbname)
    c = SON([('insert', coll), ('documents', [RawBSONDocument(bytes.fromhex(h)) for h in hexes]),
             ('ordered', True)])
    reply = db.command(c, check=False, codec_options=OPTS)
    print('n=%s errors=%s' % (reply.get('n'), ','.join(str(e['code']) for e in reply.get('writeErrors', []))))
    return 0 if reply.get('ok') == 1 else 1


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    sub, args = argv[1], argv[2:]
    table = {'fill': (fill, 3, 3), 'snapshot': (snapshot, 2, 2), 'docs': (docs, 3, 3),
             'many': (many, 4, 5), 'padded': (padded, 5, 5), 'counts': (counts, 2, 2),
             'cmd': (cmd, 3, 3), 'drop': (drop, 2, 2),
             'everytype-hex': (lambda: print(everytype_raw().hex()), 0, 0),
             'insert-hex': (insert_hex, 4, 10 ** 6)}
    if sub not in table or not table[sub][1] <= len(args) <= table[sub][2]:
        sys.exit(__doc__)
    rc = table[sub][0](*args)
    return rc or 0


if __name__ == '__main__':
    status = main(sys.argv)
    # Skip pymongo's exit handlers: they wait up to 0.5 s for its monitor threads.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
