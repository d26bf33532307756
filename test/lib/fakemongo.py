#!/usr/bin/python3
"""fakemongo: the project's MongoDB wire-protocol test server, in memory.

usage: /usr/bin/python3 test/lib/fakemongo.py PORT [SETNAME]
env:   FAKEMONGO_TTL_INTERVAL  seconds between TTL passes (default 60, as mongod)

Built only from Debian packages: python3-mockupdb (wire protocol) and python3-mongomock
(filter, sort, projection, update and aggregation semantics). Listens on 127.0.0.1:PORT
only; prints 'fakemongo listening on ...' once ready; exits 0 on SIGTERM/SIGINT.
With SETNAME it is the primary of a single-node replica set (hello with setName,
$clusterTime/operationTime in replies, local.oplog.rs, readConcern snapshot with
cursor.atClusterTime, transactions accepted); without it a standalone, which refuses
readConcern snapshot (123 NotAReplicaSet) and txnNumber (20 IllegalOperation) as mongod does.

A backup tool sees what mongod 5.0 (wire version 13) shows:
 - catalog: create keeps every option as given (order and values); listCollections
   gives name/type/options/info{readOnly, uuid}/idIndex in mongod's order (collections
   by uuid, then views and time series by name), filter (any match expression on those
   documents), nameOnly; views are listed with info {readOnly: true} and their
   definitions appear in <db>.system.views; time series are type 'timeseries' (no
   system.buckets collection; documents are kept as inserted); listDatabases always
   has admin, config and local besides the databases with collections or views.
 - documents: kept as the raw BSON bytes received and returned as such by find,
   getMore and aggregate pipelines made only of $match/$sort/$skip/$limit; on insert _id
   is moved first (an ObjectId added when missing) and top-level Timestamp(0, 0) values
   outside _id are filled in, as mongod does. Reshaped results (projection, views, other
   pipelines) and documents changed by update are re-encoded by pymongo's bson.
 - indexes: specs verbatim, v: 2 added first when absent, 'ns' checked and dropped, the
   collection's collation inherited; unknown options refused (197); same name or same
   key conflicts (85/86); unique indexes enforced on insert, update and creation
   (E11000 with keyPattern/keyValue; sparse, partialFilterExpression, multikey arrays,
   case folding for collation strength <= 2); TTL indexes expired every
   FAKEMONGO_TTL_INTERVAL seconds; hint must name an existing index or $natural.
 - writes: insert honours ordered (writeErrors [{index, code, errmsg}] with ok: 1),
   bypassDocumentValidation; validators ($jsonSchema subset and mongomock query
   operators) are enforced unless validationLevel 'off' / validationAction 'warn';
   capped collections are trimmed to max and size, refuse deletes and size changes.
 - errors: mongod's codes and messages (NamespaceExists 48, NamespaceNotFound 26,
   CommandNotSupportedOnView 166, unknown fields 40415, snapshot on commands other than
   find/aggregate/distinct 72, non-transaction commands in a transaction 263, ...).
Not emulated: authentication (no SASL), MVCC (a read at atClusterTime sees current data;
each find materialises its whole result at once), transaction rollback (abortTransaction
keeps the writes), collation-aware matching and sorting, findAndModify, $out/$merge,
text/geo queries, returnKey/showRecordId/min/max, update with arrayFilters or pipelines,
fsync lock, write concerns (accepted, never waited on), sharding, compression, TLS.
mongod canonicalises some options (collation expanded to all its fields, capped size
rounded up to 256 bytes); this server returns them exactly as given.
One lock serialises every command (mockupdb's per-server lock, plus ours for the TTL
thread); awaitable hello and awaitData getMore wait with the locks released."""
import copy
import datetime
import decimal
import itertools
import os
import re
import signal
import struct
import sys
import threading
import time
import traceback
import uuid
from collections import OrderedDict
from collections.abc import Mapping

import bson
import mockupdb
import mongomock
import mongomock.aggregate
from mongomock import filtering as mm_filtering
from bson.binary import Binary, UuidRepresentation
from bson.code import Code
from bson.codec_options import CodecOptions
from bson.dbref import DBRef
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.raw_bson import RawBSONDocument
from bson.regex import Regex
from bson.timestamp import Timestamp

# Keep UUID binaries as Binary (byte-exact), not uuid.UUID; documents keep their key order.
OPTS = CodecOptions(document_class=OrderedDict, uuid_representation=UuidRepresentation.UNSPECIFIED)
RAW_OPTS = CodecOptions(document_class=RawBSONDocument, uuid_representation=UuidRepresentation.UNSPECIFIED)
mockupdb.CODEC_OPTIONS = OPTS

MAX_BSON = 16 * 1024 * 1024
MAX_BATCH_BYTES = MAX_BSON
TTL_INTERVAL = float(os.environ.get('FAKEMONGO_TTL_INTERVAL', '60'))
VERSION = '5.0.0-fakemongo'
START = time.time()

# Command fields that are not part of a command's own arguments (never stored as options).
GENERIC = {'$db', 'lsid', '$clusterTime', 'writeConcern', 'txnNumber', '$readPreference',
           'apiVersion', 'apiStrict', 'apiDeprecationErrors', 'comment', 'maxTimeMS',
           'readConcern', 'startTransaction', 'autocommit', '$audit', '$client',
           'mayBypassWriteBlocking', 'signature', '$configServerState', 'stmtId', 'stmtIds',
           '$queryOptions', 'clientOperationKey'}

CODE_NAMES = {
    1: 'InternalError', 2: 'BadValue', 8: 'UnknownError', 9: 'FailedToParse', 11: 'UserNotFound',
    13: 'Unauthorized', 14: 'TypeMismatch', 20: 'IllegalOperation', 26: 'NamespaceNotFound',
    27: 'IndexNotFound', 43: 'CursorNotFound', 48: 'NamespaceExists', 59: 'CommandNotFound',
    67: 'CannotCreateIndex', 72: 'InvalidOptions', 73: 'InvalidNamespace',
    76: 'NoReplicationEnabled', 85: 'IndexOptionsConflict', 86: 'IndexKeySpecsConflict',
    66: 'ImmutableField', 121: 'DocumentValidationFailure', 123: 'NotAReplicaSet', 136: 'CappedPositionLost',
    166: 'CommandNotSupportedOnView', 197: 'InvalidIndexSpecificationOption',
    238: 'NotImplemented', 263: 'OperationNotSupportedInTransaction', 10334: 'BSONObjectTooLarge',
    11000: 'DuplicateKey', 16: 'InvalidLength', 22: 'InvalidBSON', 175: 'QueryPlanKilled'}


class CmdError(Exception):
    """A command failure, reported as mongod does: {ok: 0, errmsg, code, codeName}."""

    def __init__(self, code, errmsg, **extra):
        super().__init__(errmsg)
        self.code, self.errmsg, self.extra = code, errmsg, extra

    def doc(self):
        d = OrderedDict([('ok', 0.0), ('errmsg', self.errmsg), ('code', self.code),
                         ('codeName', CODE_NAMES.get(self.code, 'Location%d' % self.code))])
        d.update(self.extra)
        return d


class WriteErr(Exception):
    """One failed document of a write command (goes into writeErrors)."""

    def __init__(self, code, errmsg, **extra):
        super().__init__(errmsg)
        self.code, self.errmsg, self.extra = code, errmsg, extra

    def entry(self, index):
        d = OrderedDict([('index', index), ('code', self.code)])
        d.update(self.extra)
        d['errmsg'] = self.errmsg
        return d


def not_implemented(what):
    return CmdError(238, 'fakemongo does not implement %s' % what)


# ---------------------------------------------------------------- command-line arguments

if len(sys.argv) < 2 or not sys.argv[1].isdigit():
    sys.exit('usage: %s PORT [SETNAME]' % sys.argv[0])
PORT = int(sys.argv[1])
SETNAME = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] else None
ME = '127.0.0.1:%d' % PORT
PROCESS_ID = ObjectId()
ELECTION_ID = ObjectId('7fffffff0000000000000001')

lock = threading.RLock()
stopping = threading.Event()
mm_client = mongomock.MongoClient()
catalog = {}                   # db name -> OrderedDict(collection name -> Coll)
oplog = []                     # local.oplog.rs entries, ascending ts
cursors = {}                   # cursor id -> Cursor
_ts_state = [0, 0]
_last_ts = [Timestamp(int(START), 1)]
server = None


# ---------------------------------------------------------------- raw BSON helpers

_FIXED = {0x01: 8, 0x06: 0, 0x07: 12, 0x08: 1, 0x09: 8, 0x0A: 0, 0x10: 4, 0x11: 8, 0x12: 8,
          0x13: 16, 0xFF: 0, 0x7F: 0}
_I32 = struct.Struct('<i')


def top_elements(raw):
    """(name bytes, type, start, value start, end) of each top-level element of a document."""
    out = []
    i, end = 4, len(raw) - 1
    while i < end:
        t = raw[i]
        z = raw.index(b'\x00', i + 1)
        name = raw[i + 1:z]
        v = z + 1
        if t in _FIXED:
            n = _FIXED[t]
        elif t in (0x02, 0x0D, 0x0E):
            n = 4 + _I32.unpack_from(raw, v)[0]
        elif t in (0x03, 0x04, 0x0F):
            n = _I32.unpack_from(raw, v)[0]
        elif t == 0x05:
            n = 5 + _I32.unpack_from(raw, v)[0]
        elif t == 0x0B:
            a = raw.index(b'\x00', v)
            n = raw.index(b'\x00', a + 1) + 1 - v
        elif t == 0x0C:
            n = 4 + _I32.unpack_from(raw, v)[0] + 12
        else:
            raise bson.errors.InvalidBSON('unknown BSON type 0x%02x' % t)
        out.append((name, t, i, v, v + n))
        i = v + n
    return out


def next_ts():
    now = int(time.time())
    if now <= _ts_state[0]:
        _ts_state[1] += 1
    else:
        _ts_state[0], _ts_state[1] = now, 1
    ts = Timestamp(_ts_state[0], _ts_state[1])
    _last_ts[0] = ts
    return ts


def cluster_time():
    return _last_ts[0]


def prepare_insert(raw):
    """mongod's fixDocumentForInsert on raw bytes: _id first (an ObjectId added when
    missing), top-level Timestamp(0, 0) outside _id replaced by the current timestamp.
    Returns the bytes to store (the input itself when nothing changes)."""
    if len(raw) > MAX_BSON:
        raise WriteErr(2, 'object to insert too large. size in bytes: %d, max size: %d'
                       % (len(raw), MAX_BSON))
    els = top_elements(raw)
    ids = [e for e in els if e[0] == b'_id']
    if len(ids) > 1:
        raise WriteErr(2, "can't have multiple _id fields in one document")
    if ids:
        t = ids[0][1]
        bad = {0x04: 'an array', 0x0B: 'a regex', 0x06: 'a undefined'}.get(t)
        if bad:
            raise WriteErr(2, "can't use %s for _id" % bad)
    zero_ts = [e for e in els if e[1] == 0x11 and e[0] != b'_id' and raw[e[3]:e[4]] == b'\x00' * 8]
    if ids and els[0][0] == b'_id' and not zero_ts:
        return raw
    parts = [raw[ids[0][2]:ids[0][4]] if ids else b'\x07_id\x00' + ObjectId().binary]
    for e in els:
        if e[0] == b'_id':
            continue
        if e in zero_ts:
            ts = next_ts()
            parts.append(raw[e[2]:e[3]] + struct.pack('<II', ts.inc, ts.time))
        else:
            parts.append(raw[e[2]:e[4]])
    body = b''.join(parts)
    return _I32.pack(len(body) + 5) + body + b'\x00'


def encode(doc):
    return bson.encode(doc, codec_options=OPTS)


def decode(raw):
    return bson.decode(raw, codec_options=OPTS)


def as_raw(doc):
    if isinstance(doc, RawBSONDocument):
        return doc
    return RawBSONDocument(encode(doc), RAW_OPTS)


# ---------------------------------------------------------------- value keys and helpers

def hkey(v, fold=False):
    """A hashable key for v under BSON equality (1 == 1.0 == NumberLong(1), True != 1)."""
    if v is None:
        return ('null',)
    if isinstance(v, bool):
        return ('bool', v)
    if isinstance(v, (int, float, Decimal128)):
        if isinstance(v, Decimal128):
            d = v.to_decimal()
        elif isinstance(v, float):
            if v != v:
                return ('num', 'nan')
            if v in (float('inf'), float('-inf')):
                return ('num', v)
            d = decimal.Decimal(v)
        else:
            d = decimal.Decimal(int(v))
        if d.is_nan():
            return ('num', 'nan')
        if d.is_infinite():
            return ('num', float(d))
        return ('num', d.normalize() if d else decimal.Decimal(0))
    if isinstance(v, str) and not isinstance(v, Code):
        return ('str', v.casefold() if fold else v)
    if isinstance(v, Mapping):
        return ('doc', tuple((k, hkey(x, fold)) for k, x in v.items()))
    if isinstance(v, (list, tuple)):
        return ('arr', tuple(hkey(x, fold) for x in v))
    return ('raw', type(v).__name__, encode({'v': v}))


def id_key(doc):
    return hkey(doc.get('_id'))


def bson_repr(v):
    """Roughly mongod's BSON toString(), for error messages."""
    if isinstance(v, Mapping):
        if not v:
            return '{}'
        return '{ ' + ', '.join('%s: %s' % (k, bson_repr(x)) for k, x in v.items()) + ' }'
    if isinstance(v, list):
        return '[ ' + ', '.join(bson_repr(x) for x in v) + ' ]' if v else '[]'
    if isinstance(v, bool):
        return 'true' if v else 'false'
    if v is None:
        return 'null'
    if isinstance(v, ObjectId):
        return "ObjectId('%s')" % v
    if isinstance(v, Code):
        return 'Code("%s")' % v
    if isinstance(v, str):
        return '"%s"' % v.replace('\\', '\\\\').replace('"', '\\"')
    if isinstance(v, datetime.datetime):
        return 'new Date(%d)' % bson_millis(v)
    if isinstance(v, Decimal128):
        return 'NumberDecimal("%s")' % v
    if isinstance(v, Binary):
        return 'BinData(%d, %s)' % (v.subtype, v.hex().upper())
    if isinstance(v, Timestamp):
        return 'Timestamp(%d, %d)' % (v.time, v.inc)
    return str(v)


def bson_millis(dt):
    delta = dt.replace(tzinfo=None) - datetime.datetime(1970, 1, 1)
    return delta.days * 86400000 + delta.seconds * 1000 + delta.microseconds // 1000


def get_values(doc, path):
    """Values of a dotted path in doc, arrays expanded as an index does (multikey).
    Returns (present, values)."""
    cur = [doc]
    for part in path.split('.'):
        nxt = []
        for c in cur:
            if isinstance(c, Mapping):
                if part in c:
                    nxt.append(c[part])
            elif isinstance(c, list):
                if part.isdigit() and int(part) < len(c):
                    nxt.append(c[int(part)])
                else:
                    for x in c:
                        if isinstance(x, Mapping) and part in x:
                            nxt.append(x[part])
        cur = nxt
        if not cur:
            return False, [None]
    out = []
    for c in cur:
        if isinstance(c, list):
            out.extend(c if c else [None])
        else:
            out.append(c)
    return True, out


# ---------------------------------------------------------------- the catalog

class Coll:
    """One namespace: a collection, a view or a time-series collection."""

    def __init__(self, db, name, kind='collection', options=None):
        self.db, self.name, self.kind = db, name, kind
        self.options = options if options is not None else OrderedDict()
        self.uuid = Binary(uuid.uuid4().bytes, 4) if kind == 'collection' else None
        self.raw = {}          # id key -> raw bytes of the stored document
        self.size = 0          # sum of raw sizes (capped collections)
        self.ukeys = {}        # unique index name -> {key: count}
        self.indexes = []
        if kind != 'view':
            idx = OrderedDict([('v', 2), ('key', OrderedDict([('_id', 1)])), ('name', '_id_')])
            if self.collation():
                idx['collation'] = self.collation()
            self.indexes.append(idx)
            if kind == 'timeseries':
                self.indexes = []
            mm_client[db]._store[name].create()

    @property
    def ns(self):
        return '%s.%s' % (self.db, self.name)

    @property
    def mm(self):
        return mm_client[self.db][self.name]

    @property
    def store(self):
        return mm_client[self.db]._store[self.name]

    def collation(self):
        c = self.options.get('collation')
        return c if isinstance(c, Mapping) and c.get('locale') != 'simple' else None

    def capped(self):
        return bool(self.options.get('capped'))

    def docs(self):
        return list(self.store._documents.values())

    def raw_of(self, key, doc):
        r = self.raw.get(key)
        if r is None:
            r = encode(doc)
            self.raw[key] = r
        return r

    def id_index(self):
        return self.indexes[0] if self.indexes and self.indexes[0]['name'] == '_id_' else None


def colls_of(db):
    return catalog.get(db, OrderedDict())


def get_coll(db, name):
    return colls_of(db).get(name)


def check_db_name(db):
    if not db or len(db) >= 64 or any(c in db for c in '/\\. "$*<>:|?\x00'):
        raise CmdError(73, 'Invalid database name: \'%s\'' % db)


LEGAL_SYSTEM = {'system.js', 'system.views', 'system.users', 'system.roles', 'system.version',
                'system.sessions', 'system.replset', 'system.healthlog', 'system.profile'}


def check_coll_name(db, name, for_write=True):
    if not isinstance(name, str):
        raise CmdError(73, 'collection name has invalid type %s' % type(name).__name__)
    if not name or '$' in name or '\x00' in name or name.startswith('.'):
        raise CmdError(73, 'Invalid collection name: %s' % name)
    if for_write and name.startswith('system.') and name not in LEGAL_SYSTEM \
            and not name.startswith('system.buckets.'):
        raise CmdError(73, 'Invalid system namespace: %s.%s' % (db, name))


def add_coll(coll):
    check_db_name(coll.db)
    catalog.setdefault(coll.db, OrderedDict())[coll.name] = coll
    return coll


def remove_coll(coll):
    colls = catalog.get(coll.db)
    if colls is not None and colls.get(coll.name) is coll:
        del colls[coll.name]
        if not colls:
            del catalog[coll.db]
    if coll.kind != 'view':
        mm_client[coll.db]._store._collections.pop(coll.name, None)
    for cid in [c for c, cur in cursors.items() if cur.coll is coll]:
        cursors[cid].killed = 'collection dropped'


def implicit_coll(db, name):
    """The collection an insert or createIndexes writes to, created when missing."""
    c = get_coll(db, name)
    if c is None:
        check_db_name(db)
        check_coll_name(db, name)
        c = add_coll(Coll(db, name))
        log_op('c', db + '.$cmd', OrderedDict([('create', name), ('idIndex', c.indexes[0])]), ui=c.uuid)
        return c, True
    return c, False


def view_defs_coll(db):
    """<db>.system.views, kept in step with the db's views as mongod does."""
    c = get_coll(db, 'system.views')
    if c is None:
        c = add_coll(Coll(db, 'system.views'))
    return c


def sync_view_def(view, remove=False):
    sv = view_defs_coll(view.db)
    key = hkey(view.ns)
    if key in sv.store._documents:
        del sv.store._documents[key]
        sv.raw.pop(key, None)
    if not remove:
        d = OrderedDict([('_id', view.ns), ('viewOn', view.options.get('viewOn')),
                         ('pipeline', view.options.get('pipeline', []))])
        if 'collation' in view.options:
            d['collation'] = view.options['collation']
        if 'timeseries' in view.options:
            d = OrderedDict([('_id', view.ns), ('timeseries', view.options['timeseries'])])
        sv.store._documents[key] = d


def bootstrap():
    c = add_coll(Coll('admin', 'system.version'))
    store_doc(c, encode(OrderedDict([('_id', 'featureCompatibilityVersion'), ('version', '5.0')])))
    c = add_coll(Coll('config', 'system.sessions'))
    c.indexes.append(OrderedDict([('v', 2), ('key', OrderedDict([('lastUse', 1)])),
                                  ('name', 'lsidTTLIndex'), ('expireAfterSeconds', 1800)]))
    c = add_coll(Coll('local', 'startup_log', options=OrderedDict([('capped', True), ('size', 10485760)])))
    store_doc(c, encode(OrderedDict([('_id', 'fakemongo-%d' % int(START)), ('hostname', '127.0.0.1'),
                                     ('startTime', datetime.datetime.utcfromtimestamp(int(START))),
                                     ('pid', Int64(os.getpid())),
                                     ('buildinfo', OrderedDict([('version', VERSION)]))])))
    if SETNAME:
        add_coll(Coll('local', 'oplog.rs', options=OrderedDict([('capped', True), ('size', Int64(1 << 30)),
                                                                ('autoIndexId', False)])))
        get_coll('local', 'oplog.rs').indexes = []
        c = add_coll(Coll('local', 'system.replset'))
        store_doc(c, encode(OrderedDict([('_id', SETNAME), ('version', 1), ('term', 1),
                                         ('members', [OrderedDict([('_id', 0), ('host', ME)])])])))


def store_doc(coll, raw, doc=None):
    if doc is None:
        doc = decode(raw)
    key = id_key(doc)
    coll.store._documents[key] = doc
    coll.raw[key] = raw
    coll.size += len(raw)
    return key, doc


# ---------------------------------------------------------------- oplog

def log_op(op, ns, o, o2=None, ui=None):
    if not SETNAME:
        return
    e = OrderedDict([('op', op), ('ns', ns)])
    if ui is not None:
        e['ui'] = ui
    e['o'] = o
    if o2 is not None:
        e['o2'] = o2
    e['ts'] = next_ts()
    e['t'] = Int64(1)
    e['v'] = Int64(2)
    e['wall'] = datetime.datetime.utcnow().replace(microsecond=0)
    oplog.append(e)


def last_optime():
    return OrderedDict([('ts', oplog[-1]['ts'] if oplog else cluster_time()), ('t', Int64(1))])


# ---------------------------------------------------------------- unique indexes

def index_collation(coll, spec):
    c = spec.get('collation', coll.collation())
    return c if isinstance(c, Mapping) and c.get('locale') != 'simple' else None


def index_keys(coll, spec, doc):
    """The keys doc has in index spec (empty when sparse/partial leaves it out)."""
    pfe = spec.get('partialFilterExpression')
    if pfe is not None and not mm_filtering.filter_applies(pfe, doc):
        return []
    coll_ = index_collation(coll, spec)
    fold = bool(coll_) and int(coll_.get('strength', 3)) <= 2
    per_field, any_present = [], False
    for f in spec['key']:
        present, vals = get_values(doc, f)
        any_present = any_present or present
        per_field.append([hkey(v, fold) for v in vals])
    if spec.get('sparse') and not any_present:
        return []
    return list(set(itertools.product(*per_field)))


def key_value(spec, doc):
    out = OrderedDict()
    for f in spec['key']:
        present, vals = get_values(doc, f)
        out[f] = vals[0] if present else None
    return out


def unique_specs(coll):
    return [s for s in coll.indexes if s.get('unique') and s['name'] != '_id_']


def build_ukeys(coll, spec, docs=None):
    """Counts of every key of a unique index; raises WriteErr on a duplicate."""
    counts = {}
    for d in (coll.docs() if docs is None else docs):
        for k in index_keys(coll, spec, d):
            if k in counts:
                raise dup_error(coll, spec, d)
            counts[k] = 1
    return counts


def dup_error(coll, spec, doc):
    kv = key_value(spec, doc)
    return WriteErr(11000, 'E11000 duplicate key error collection: %s index: %s dup key: %s'
                    % (coll.ns, spec['name'], bson_repr(kv)),
                    keyPattern=OrderedDict(spec['key']), keyValue=kv)


def ukeys_for(coll, spec):
    if spec['name'] not in coll.ukeys:
        coll.ukeys[spec['name']] = build_ukeys(coll, spec)
    return coll.ukeys[spec['name']]


def check_unique(coll, doc):
    """Raises WriteErr 11000 if doc collides in _id or a unique index; returns the keys
    to add once it is stored."""
    if id_key(doc) in coll.store._documents:
        return_spec = coll.id_index() or OrderedDict([('key', {'_id': 1}), ('name', '_id_')])
        raise dup_error(coll, return_spec, doc)
    adds = []
    for spec in unique_specs(coll):
        counts = ukeys_for(coll, spec)
        keys = index_keys(coll, spec, doc)
        if any(k in counts for k in keys):
            raise dup_error(coll, spec, doc)
        adds.append((counts, keys))
    return adds


def forget_doc(coll, key):
    doc = coll.store._documents.pop(key)
    raw = coll.raw.pop(key, None)
    coll.size -= len(raw) if raw is not None else len(encode(doc))
    for spec in unique_specs(coll):
        counts = coll.ukeys.get(spec['name'])
        if counts is not None:
            for k in index_keys(coll, spec, doc):
                counts.pop(k, None)
    return doc


# ---------------------------------------------------------------- validation ($jsonSchema subset)

_BSON_TYPES = {
    'double': lambda v: isinstance(v, float),
    'string': lambda v: isinstance(v, str) and not isinstance(v, Code),
    'object': lambda v: isinstance(v, (Mapping, DBRef)),
    'array': lambda v: isinstance(v, list),
    'binData': lambda v: isinstance(v, (Binary, bytes)),
    'objectId': lambda v: isinstance(v, ObjectId),
    'bool': lambda v: isinstance(v, bool),
    'date': lambda v: isinstance(v, datetime.datetime),
    'null': lambda v: v is None,
    'regex': lambda v: isinstance(v, (Regex, re.Pattern)),
    'javascript': lambda v: isinstance(v, Code) and v.scope is None,
    'javascriptWithScope': lambda v: isinstance(v, Code) and v.scope is not None,
    'int': lambda v: isinstance(v, int) and not isinstance(v, (bool, Int64)),
    'timestamp': lambda v: isinstance(v, Timestamp),
    'long': lambda v: isinstance(v, Int64),
    'decimal': lambda v: isinstance(v, Decimal128),
    'minKey': lambda v: isinstance(v, MinKey),
    'maxKey': lambda v: isinstance(v, MaxKey),
}
_BSON_TYPES['number'] = lambda v: any(_BSON_TYPES[t](v) for t in ('int', 'long', 'double', 'decimal'))
_JSON_TYPES = {'object': 'object', 'array': 'array', 'string': 'string', 'number': 'number',
               'boolean': 'bool', 'null': 'null'}
_SCHEMA_IGNORED = {'title', 'description', 'encrypt', 'encryptMetadata', '$schema', 'id'}


def _num(v):
    if isinstance(v, Decimal128):
        return v.to_decimal()
    return decimal.Decimal(v) if not isinstance(v, float) else v


def _cmp_num(a, b):
    a, b = _num(a), _num(b)
    if isinstance(a, decimal.Decimal) != isinstance(b, decimal.Decimal):
        a, b = float(a), float(b)
    return (a > b) - (a < b)


def schema_ok(s, v):
    for kw, arg in s.items():
        if kw in _SCHEMA_IGNORED:
            continue
        if kw in ('bsonType', 'type'):
            names = arg if isinstance(arg, list) else [arg]
            table = _BSON_TYPES if kw == 'bsonType' else {n: _BSON_TYPES[_JSON_TYPES[n]] for n in names if n in _JSON_TYPES}
            if any(n not in table for n in names):
                raise NotImplementedError('$jsonSchema %s %r' % (kw, arg))
            if not any(table[n](v) for n in names):
                return False
        elif kw == 'enum':
            if not any(hkey(v) == hkey(x) for x in arg):
                return False
        elif kw == 'required':
            if isinstance(v, Mapping) and any(f not in v for f in arg):
                return False
        elif kw == 'properties':
            if isinstance(v, Mapping):
                for f, sub in arg.items():
                    if f in v and not schema_ok(sub, v[f]):
                        return False
        elif kw == 'patternProperties':
            if isinstance(v, Mapping):
                for pat, sub in arg.items():
                    for f in v:
                        if re.search(pat, f) and not schema_ok(sub, v[f]):
                            return False
        elif kw == 'additionalProperties':
            if isinstance(v, Mapping):
                known = set(s.get('properties', {}))
                pats = list(s.get('patternProperties', {}))
                extra = [f for f in v if f not in known and not any(re.search(p, f) for p in pats)]
                if arg is False and extra:
                    return False
                if isinstance(arg, Mapping) and not all(schema_ok(arg, v[f]) for f in extra):
                    return False
        elif kw in ('minProperties', 'maxProperties'):
            if isinstance(v, Mapping):
                if (kw == 'minProperties' and len(v) < arg) or (kw == 'maxProperties' and len(v) > arg):
                    return False
        elif kw == 'items':
            if isinstance(v, list):
                if isinstance(arg, Mapping):
                    if not all(schema_ok(arg, x) for x in v):
                        return False
                else:
                    if not all(schema_ok(sub, x) for sub, x in zip(arg, v)):
                        return False
                    extra = v[len(arg):]
                    add = s.get('additionalItems', True)
                    if add is False and extra:
                        return False
                    if isinstance(add, Mapping) and not all(schema_ok(add, x) for x in extra):
                        return False
        elif kw == 'additionalItems':
            continue
        elif kw in ('minItems', 'maxItems'):
            if isinstance(v, list):
                if (kw == 'minItems' and len(v) < arg) or (kw == 'maxItems' and len(v) > arg):
                    return False
        elif kw == 'uniqueItems':
            if arg and isinstance(v, list) and len({hkey(x) for x in v}) != len(v):
                return False
        elif kw in ('minimum', 'maximum'):
            if _BSON_TYPES['number'](v):
                c = _cmp_num(v, arg)
                excl = s.get('exclusiveMinimum' if kw == 'minimum' else 'exclusiveMaximum') is True
                if kw == 'minimum' and (c < 0 or (excl and c == 0)):
                    return False
                if kw == 'maximum' and (c > 0 or (excl and c == 0)):
                    return False
        elif kw in ('exclusiveMinimum', 'exclusiveMaximum'):
            continue
        elif kw == 'multipleOf':
            if _BSON_TYPES['number'](v) and _num(v) % _num(arg) != 0:
                return False
        elif kw in ('minLength', 'maxLength'):
            if isinstance(v, str) and not isinstance(v, Code):
                if (kw == 'minLength' and len(v) < arg) or (kw == 'maxLength' and len(v) > arg):
                    return False
        elif kw == 'pattern':
            if isinstance(v, str) and not isinstance(v, Code) and not re.search(arg, v):
                return False
        elif kw == 'allOf':
            if not all(schema_ok(x, v) for x in arg):
                return False
        elif kw == 'anyOf':
            if not any(schema_ok(x, v) for x in arg):
                return False
        elif kw == 'oneOf':
            if sum(1 for x in arg if schema_ok(x, v)) != 1:
                return False
        elif kw == 'not':
            if schema_ok(arg, v):
                return False
        elif kw == 'dependencies':
            if isinstance(v, Mapping):
                for f, dep in arg.items():
                    if f in v:
                        if isinstance(dep, list):
                            if any(x not in v for x in dep):
                                return False
                        elif not schema_ok(dep, v):
                            return False
        else:
            raise NotImplementedError('$jsonSchema keyword %s' % kw)
    return True


def validate_doc(coll, doc):
    """True if doc passes the collection's validator (or the validator cannot be evaluated:
    then a warning goes to stderr and the document is accepted)."""
    val = coll.options.get('validator')
    if not val:
        return True
    try:
        rest = OrderedDict()
        for k, v in val.items():
            if k == '$jsonSchema':
                if not schema_ok(v, doc):
                    return False
            else:
                rest[k] = v
        return not rest or mm_filtering.filter_applies(rest, doc)
    except NotImplementedError as e:
        print('fakemongo: validator of %s not evaluated (%s): document accepted' % (coll.ns, e),
              file=sys.stderr, flush=True)
        return True


def validation_applies(coll, bypass):
    return (not bypass and coll.options.get('validator')
            and coll.options.get('validationLevel', 'strict') != 'off'
            and coll.options.get('validationAction', 'error') != 'warn')


def validation_error(doc):
    return WriteErr(121, 'Document failed validation',
                    errInfo=OrderedDict([('failingDocumentId', doc.get('_id')),
                                         ('details', OrderedDict([('operatorName', '$jsonSchema'),
                                                                  ('schemaRulesNotSatisfied', [])]))]))


# ---------------------------------------------------------------- cursors and replies

_cursor_ids = itertools.count(7_000_000_001)


class Cursor:
    def __init__(self, ns, docs, coll=None, tail=None):
        self.ns, self.docs, self.coll, self.tail = ns, docs, coll, tail
        self.pos = 0
        self.killed = None


def take_batch(docs, pos, count):
    """Docs from pos: at most count (0: no count limit), at most 16 MiB (at least one)."""
    out, size = [], 0
    i = pos
    while i < len(docs) and (not count or len(out) < count):
        d = docs[i]
        n = len(d.raw)
        if out and size + n > MAX_BATCH_BYTES:
            break
        out.append(d)
        size += n
        i += 1
    return out, i


def cursor_reply(ns, docs, batch_size, single=False, coll=None, tail=None, at_cluster_time=None):
    """A cursor reply. batch_size: None for find's default first batch (101 documents),
    'all' for no count limit (listCollections, listIndexes), 0 for an empty first batch.
    A tailable cursor stays open when its first query found something, as in mongod."""
    docs = [as_raw(d) for d in docs]
    if batch_size == 'all':
        batch, pos = take_batch(docs, 0, 0)
    else:
        bs = 101 if batch_size is None else int(batch_size)
        batch, pos = take_batch(docs, 0, bs) if bs > 0 else ([], 0)
    cid = 0
    if not single and (pos < len(docs) or (tail is not None and docs)):
        cid = next(_cursor_ids)
        c = Cursor(ns, docs, coll, tail)
        c.pos = pos
        cursors[cid] = c
    cur = OrderedDict([('firstBatch', batch), ('id', Int64(cid)), ('ns', ns)])
    if at_cluster_time is not None:
        cur['atClusterTime'] = at_cluster_time
    return OrderedDict([('cursor', cur)])


def sleep_unlocked(seconds):
    """Waits with both the server's and mockupdb's locks released."""
    lock.release()
    server._lock.release()
    try:
        stopping.wait(seconds)
    finally:
        server._lock.acquire()
        lock.acquire()


# ---------------------------------------------------------------- queries

def sort_docs(docs, sort):
    if not sort:
        return docs
    for key, direction in reversed(list(sort.items())):
        if isinstance(direction, Mapping):
            raise not_implemented('sort by %s' % bson_repr(direction))
        desc = (direction < 0) if not isinstance(direction, str) else False
        if key == '$natural':
            if desc:
                docs = docs[::-1]
            continue
        docs = sorted(docs, key=lambda x, k=key: mm_filtering.resolve_sort_key(k, x), reverse=desc)
    return docs


def check_hint(coll, hint):
    if hint is None or hint == {} or hint == '':
        return
    if isinstance(hint, Mapping) and '$natural' in hint:
        return
    for s in coll.indexes:
        if (isinstance(hint, str) and s['name'] == hint) or \
                (isinstance(hint, Mapping) and list(hint.items()) == list(s['key'].items())):
            return
    raise CmdError(2, 'error processing query: ns=%s planner returned error :: caused by :: '
                      'hint provided does not correspond to an existing index' % coll.ns)


def matching(coll, flt):
    docs = coll.docs()
    if flt:
        try:
            docs = [d for d in docs if mm_filtering.filter_applies(flt, d)]
        except NotImplementedError as e:
            raise not_implemented('this query (mongomock: %s)' % e)
    return docs


def project(coll, docs, projection):
    out = []
    for d in docs:
        try:
            out.append(coll.mm._copy_only_fields(d, OrderedDict(projection), OrderedDict))
        except (ValueError, NotImplementedError) as e:
            raise not_implemented('this projection (mongomock: %s)' % e)
    return out


def run_pipeline(db, docs, pipeline):
    for st in pipeline:
        for op in st:
            if op in ('$out', '$merge', '$collStats', '$indexStats', '$currentOp', '$changeStream',
                      '$listSessions', '$planCacheStats', '$search'):
                raise not_implemented('the %s stage' % op)
    try:
        return list(mongomock.aggregate.process_pipeline(docs, mm_client[db], pipeline, None))
    except NotImplementedError as e:
        raise not_implemented('this pipeline (mongomock: %s)' % e)
    except mongomock.OperationFailure as e:
        raise CmdError(e.code or 2, str(e))


def view_source(view, depth=0):
    """(base collection or None, full pipeline) of a view."""
    if depth > 20:
        raise CmdError(2, 'View depth too deep or view cycle detected; maximum depth is 20')
    on = get_coll(view.db, view.options.get('viewOn'))
    pipe = list(view.options.get('pipeline', []))
    if on is None:
        return None, pipe
    if on.kind == 'view':
        base, p = view_source(on, depth + 1)
        return base, p + pipe
    return on, pipe


def copies(docs):
    return [copy.deepcopy(d) for d in docs]


def view_docs(view, extra):
    base, pipe = view_source(view)
    src = copies(base.docs()) if base is not None else []
    return run_pipeline(view.db, src, pipe + extra)


def find_docs(coll, cmd):
    """The result of a find on a collection, as RawBSONDocument or decoded docs."""
    flt = cmd.get('filter') or {}
    sort = cmd.get('sort') or None
    projection = cmd.get('projection') or None
    skip = int(cmd.get('skip') or 0)
    limit = int(cmd.get('limit') or 0)
    if skip < 0:
        raise CmdError(51024, "BSON field 'skip' value must be >= 0, actual value '%d'" % skip)
    if limit < 0:
        raise CmdError(51024, "BSON field 'limit' value must be >= 0, actual value '%d'" % limit)
    if coll is None:
        return []
    if coll.kind == 'view':
        extra = []
        if flt:
            extra.append({'$match': flt})
        if sort:
            extra.append({'$sort': sort})
        if skip:
            extra.append({'$skip': skip})
        if limit:
            extra.append({'$limit': limit})
        if projection:
            extra.append({'$project': projection})
        return view_docs(coll, extra)
    hint = cmd.get('hint')
    check_hint(coll, hint)
    docs = matching(coll, flt)
    if isinstance(hint, Mapping) and hint.get('$natural', 1) < 0 and not sort:
        docs = docs[::-1]
    docs = sort_docs(docs, sort)
    docs = docs[skip:]
    if limit:
        docs = docs[:limit]
    if projection:
        return project(coll, docs, projection)
    return [RawBSONDocument(coll.raw_of(id_key(d), d), RAW_OPTS) for d in docs]


# ---------------------------------------------------------------- command checks

TXN_COMMANDS = {'find', 'getmore', 'killcursors', 'aggregate', 'distinct', 'insert', 'update',
                'delete', 'findandmodify', 'create', 'createindexes', 'committransaction',
                'aborttransaction', 'count'}
SNAPSHOT_COMMANDS = {'find', 'aggregate', 'distinct'}


def check_generic(cmd, name, lname):
    rc = cmd.get('readConcern') or {}
    level = rc.get('level') if isinstance(rc, Mapping) else None
    if 'txnNumber' in cmd and not SETNAME:
        raise CmdError(20, 'Transaction numbers are only allowed on a replica set member or mongos')
    in_txn = cmd.get('autocommit') is False
    if in_txn and lname not in TXN_COMMANDS:
        raise CmdError(263, "Cannot run '%s' in a multi-document transaction." % name)
    if level not in (None, 'local', 'majority', 'linearizable', 'available', 'snapshot'):
        raise CmdError(9, "Invalid value for readConcern.level: %s" % level)
    if level == 'snapshot':
        if not SETNAME:
            raise CmdError(123, 'node needs to be a replica set member to use readConcern: snapshot')
        if not in_txn and lname not in SNAPSHOT_COMMANDS:
            raise CmdError(72, 'Command %s does not support { readConcern: { level: "snapshot", '
                               'provenance: "clientSupplied" } } :: caused by :: read concern not supported'
                           % name)
    elif level == 'linearizable' and not SETNAME:
        raise CmdError(123, 'node needs to be a replica set member to use read concern')
    if isinstance(rc, Mapping) and 'atClusterTime' in rc and level != 'snapshot':
        raise CmdError(72, 'readConcern.atClusterTime can only be used with level snapshot')


def snapshot_time(cmd):
    rc = cmd.get('readConcern') or {}
    if isinstance(rc, Mapping) and rc.get('level') == 'snapshot' and cmd.get('autocommit') is not False:
        return rc.get('atClusterTime') or cluster_time()
    return None


def own_fields(cmd, name, allowed):
    for k in cmd:
        if k != name and k not in GENERIC and k not in allowed:
            raise CmdError(40415, "BSON field '%s.%s' is an unknown field." % (name, k))


def write_reply(n, errors, extra=()):
    r = OrderedDict([('n', n)])
    r.update(extra)
    if errors:
        r['writeErrors'] = errors
    if SETNAME:
        r['electionId'] = ELECTION_ID
        r['opTime'] = last_optime()
    return r


# ---------------------------------------------------------------- commands

def c_hello(req, cmd, db, name):
    tv = cmd.get('topologyVersion')
    wait = cmd.get('maxAwaitTimeMS')
    if isinstance(tv, Mapping) and wait is not None and tv.get('processId') == PROCESS_ID:
        # An awaitable hello (streaming monitor): nothing changes here, so mongod would
        # answer after maxAwaitTimeMS.
        sleep_unlocked(min(float(wait), 60000.0) / 1000.0)
    d = OrderedDict([('topologyVersion', OrderedDict([('processId', PROCESS_ID), ('counter', Int64(0))]))])
    if SETNAME:
        d.update([('hosts', [ME]), ('setName', SETNAME), ('setVersion', 1)])
    legacy = name.lower() == 'ismaster'
    d.update([('ismaster' if legacy else 'isWritablePrimary', True)])
    if SETNAME:
        d.update([('secondary', False), ('primary', ME), ('me', ME), ('electionId', ELECTION_ID),
                  ('lastWrite', OrderedDict([('opTime', last_optime()),
                                             ('lastWriteDate', datetime.datetime.utcnow().replace(microsecond=0)),
                                             ('majorityOpTime', last_optime()),
                                             ('majorityWriteDate', datetime.datetime.utcnow().replace(microsecond=0))]))])
    d.update([('maxBsonObjectSize', MAX_BSON), ('maxMessageSizeBytes', 48000000),
              ('maxWriteBatchSize', 100000), ('localTime', datetime.datetime.utcnow()),
              ('logicalSessionTimeoutMinutes', 30), ('connectionId', 1),
              ('minWireVersion', 0), ('maxWireVersion', 13), ('readOnly', False)])
    if cmd.get('helloOk'):
        d['helloOk'] = True
    return d


def c_ok(req, cmd, db, name):
    return OrderedDict()


def c_buildinfo(req, cmd, db, name):
    return OrderedDict([('version', VERSION), ('gitVersion', 'fakemongo'), ('modules', []),
                        ('allocator', 'system'), ('javascriptEngine', 'none'), ('sysInfo', 'deprecated'),
                        ('versionArray', [5, 0, 0, 0]), ('bits', 64), ('debug', False),
                        ('maxBsonObjectSize', MAX_BSON), ('storageEngines', ['inMemory'])])


def c_whatsmyuri(req, cmd, db, name):
    return OrderedDict([('you', '127.0.0.1:%d' % req.client_port)])


def c_serverstatus(req, cmd, db, name):
    return OrderedDict([('host', ME), ('version', VERSION), ('process', 'mongod'), ('pid', Int64(os.getpid())),
                        ('uptime', float(int(time.time() - START))), ('localTime', datetime.datetime.utcnow()),
                        ('storageEngine', OrderedDict([('name', 'inMemory')]))])


def c_connectionstatus(req, cmd, db, name):
    return OrderedDict([('authInfo', OrderedDict([('authenticatedUsers', []), ('authenticatedUserRoles', [])]))])


def c_getcmdlineopts(req, cmd, db, name):
    parsed = OrderedDict([('net', OrderedDict([('bindIp', '127.0.0.1'), ('port', PORT)]))])
    if SETNAME:
        parsed['replication'] = OrderedDict([('replSet', SETNAME)])
    return OrderedDict([('argv', sys.argv), ('parsed', parsed)])


def c_startsession(req, cmd, db, name):
    return OrderedDict([('id', OrderedDict([('id', Binary(uuid.uuid4().bytes, 4))])), ('timeoutMinutes', 30)])


def c_replsetgetstatus(req, cmd, db, name):
    if not SETNAME:
        raise CmdError(76, 'not running with --replSet')
    return OrderedDict([('set', SETNAME), ('date', datetime.datetime.utcnow()), ('myState', 1), ('term', Int64(1)),
                        ('optimes', OrderedDict([('lastCommittedOpTime', last_optime()),
                                                 ('appliedOpTime', last_optime()),
                                                 ('durableOpTime', last_optime())])),
                        ('members', [OrderedDict([('_id', 0), ('name', ME), ('health', 1.0), ('state', 1),
                                                  ('stateStr', 'PRIMARY'), ('optime', last_optime()),
                                                  ('self', True)])])])


def c_fsync(req, cmd, db, name):
    if db != 'admin':
        raise CmdError(13, 'fsync may only be run against the admin database.')
    if cmd.get('lock'):
        raise not_implemented('fsync with lock')
    return OrderedDict([('numFiles', 1)])


def c_listdatabases(req, cmd, db, name):
    if db != 'admin':
        raise CmdError(13, 'listDatabases may only be run against the admin database.')
    names = sorted(set(catalog) | {'admin', 'config', 'local'})
    out = []
    total = 0
    for n in names:
        size = sum(c.size for c in colls_of(n).values())
        size = (size + 4095) // 4096 * 4096 + 4096 * max(1, len(colls_of(n)))
        total += size
        out.append(OrderedDict([('name', n), ('sizeOnDisk', float(size)), ('empty', False)]))
    flt = cmd.get('filter')
    if flt:
        out = [d for d in out if mm_filtering.filter_applies(flt, d)]
    if cmd.get('nameOnly'):
        return OrderedDict([('databases', [OrderedDict([('name', d['name'])]) for d in out])])
    return OrderedDict([('databases', out), ('totalSize', float(total)), ('totalSizeMb', Int64(total >> 20))])


def coll_info(c):
    d = OrderedDict([('name', c.name)])
    if c.kind == 'view':
        d['type'] = 'view'
        d['options'] = copy.deepcopy(c.options)
        d['info'] = OrderedDict([('readOnly', True)])
    elif c.kind == 'timeseries':
        d['type'] = 'timeseries'
        d['options'] = copy.deepcopy(c.options)
        d['info'] = OrderedDict([('readOnly', False)])
    else:
        d['type'] = 'collection'
        d['options'] = copy.deepcopy(c.options)
        d['info'] = OrderedDict([('readOnly', False), ('uuid', c.uuid)])
        if c.id_index():
            d['idIndex'] = copy.deepcopy(c.id_index())
    return d


def c_listcollections(req, cmd, db, name):
    own_fields(cmd, name, {'filter', 'nameOnly', 'authorizedCollections', 'cursor', 'includePendingDrops'})
    colls = list(colls_of(db).values())
    real = sorted([c for c in colls if c.kind == 'collection'], key=lambda c: c.uuid)
    views = sorted([c for c in colls if c.kind != 'collection'], key=lambda c: c.name)
    docs = [coll_info(c) for c in real + views]
    flt = cmd.get('filter') or {}
    if flt:
        try:
            docs = [d for d in docs if mm_filtering.filter_applies(flt, d)]
        except NotImplementedError as e:
            raise not_implemented('this listCollections filter (mongomock: %s)' % e)
    if cmd.get('nameOnly'):
        docs = [OrderedDict([('name', d['name']), ('type', d['type'])]) for d in docs]
    bs = (cmd.get('cursor') or {}).get('batchSize')
    return cursor_reply('%s.$cmd.listCollections' % db, docs, 'all' if bs is None else bs)


CREATE_OPTIONS = {'capped', 'autoIndexId', 'size', 'max', 'storageEngine', 'validator', 'validationLevel',
                  'validationAction', 'indexOptionDefaults', 'viewOn', 'pipeline', 'collation',
                  'timeseries', 'expireAfterSeconds', 'clusteredIndex', 'changeStreamPreAndPostImages',
                  'recordPreImages', 'encryptedFields', 'idIndex', 'temp', 'flags'}


def c_create(req, cmd, db, name):
    cname = cmd[name]
    check_db_name(db)
    check_coll_name(db, cname)
    own_fields(cmd, name, CREATE_OPTIONS)
    opts = OrderedDict((k, v) for k, v in cmd.items() if k != name and k not in GENERIC)
    if opts.get('capped') and 'size' not in opts:
        raise CmdError(72, "the 'size' field is required when 'capped' is true")
    if 'size' in opts and (not isinstance(opts['size'], (int, float)) or opts['size'] < 0):
        raise CmdError(2, 'size has to be >= 0')
    if 'pipeline' in opts and 'viewOn' not in opts:
        raise CmdError(9, "'pipeline' requires 'viewOn' to also be specified")
    if 'viewOn' in opts:
        if not isinstance(opts['viewOn'], str) or not opts['viewOn']:
            raise CmdError(2, "'viewOn' must be a non-empty string")
        if not isinstance(opts.get('pipeline', []), list):
            raise CmdError(14, "'pipeline' must be an array")
        if opts.get('capped') or 'timeseries' in opts or 'validator' in opts:
            raise CmdError(72, 'Invalid option for a view')
    if opts.get('validationLevel', 'strict') not in ('off', 'strict', 'moderate'):
        raise CmdError(2, "Enumeration value '%s' for field 'validationLevel' is not a valid value."
                       % opts['validationLevel'])
    if opts.get('validationAction', 'error') not in ('error', 'warn'):
        raise CmdError(2, "Enumeration value '%s' for field 'validationAction' is not a valid value."
                       % opts['validationAction'])
    if 'timeseries' in opts:
        ts = opts['timeseries']
        if not isinstance(ts, Mapping) or not isinstance(ts.get('timeField'), str):
            raise CmdError(40414, "BSON field 'create.timeseries.timeField' is missing but a required field")
    if 'collation' in opts and not (isinstance(opts['collation'], Mapping) and 'locale' in opts['collation']):
        raise CmdError(40414, "BSON field 'collation.locale' is missing but a required field")
    if get_coll(db, cname) is not None:
        raise CmdError(48, 'Collection already exists. NS: %s.%s' % (db, cname))
    kind = 'view' if 'viewOn' in opts else 'timeseries' if 'timeseries' in opts else 'collection'
    c = add_coll(Coll(db, cname, kind, opts))
    if kind != 'collection':
        sync_view_def(c)
    o = OrderedDict([('create', cname)])
    o.update(opts)
    if kind == 'collection':
        o['idIndex'] = c.indexes[0]
    log_op('c', db + '.$cmd', o, ui=c.uuid)
    return OrderedDict()


def c_drop(req, cmd, db, name):
    cname = cmd[name]
    c = get_coll(db, cname)
    if c is None:
        raise CmdError(26, 'ns not found')
    if cname == 'system.views':
        for v in [x for x in colls_of(db).values() if x.kind != 'collection']:
            remove_coll(v)
    n = len(c.indexes)
    remove_coll(c)
    if c.kind != 'collection':
        sync_view_def(c, remove=True)
    log_op('c', db + '.$cmd', OrderedDict([('drop', cname)]), ui=c.uuid)
    if c.kind == 'view':
        return OrderedDict([('ns', c.ns)])
    return OrderedDict([('nIndexesWas', n), ('ns', c.ns)])


def c_dropdatabase(req, cmd, db, name):
    for c in list(colls_of(db).values()):
        remove_coll(c)
    catalog.pop(db, None)
    log_op('c', db + '.$cmd', OrderedDict([('dropDatabase', 1)]))
    return OrderedDict([('dropped', db)])


def parse_ns(v, what):
    if not isinstance(v, str) or '.' not in v or v.startswith('.') or v.endswith('.'):
        raise CmdError(73, 'Invalid %s namespace: %s' % (what, v))
    return v.split('.', 1)


def c_renamecollection(req, cmd, db, name):
    if db != 'admin':
        raise CmdError(13, 'renameCollection may only be run against the admin database.')
    own_fields(cmd, name, {'to', 'dropTarget', 'stayTemp'})
    sdb, sname = parse_ns(cmd[name], 'source')
    if 'to' not in cmd:
        raise CmdError(40414, "BSON field 'renameCollection.to' is missing but a required field")
    tdb, tname = parse_ns(cmd['to'], 'target')
    check_db_name(tdb)
    check_coll_name(tdb, tname)
    src = get_coll(sdb, sname)
    if src is None:
        raise CmdError(26, 'Source collection %s.%s does not exist' % (sdb, sname))
    if src.kind != 'collection':
        raise CmdError(166, 'cannot rename view: %s' % src.ns)
    if (sdb, sname) == (tdb, tname):
        raise CmdError(20, "Can't rename a collection to itself")
    if sname.startswith('system.') or tname.startswith('system.'):
        raise CmdError(20, 'renaming system collections is not allowed: %s -> %s' % (src.ns, cmd['to']))
    tgt = get_coll(tdb, tname)
    drop_target = cmd.get('dropTarget')
    if tgt is not None:
        if not drop_target:
            raise CmdError(48, 'target namespace exists')
        if isinstance(drop_target, Binary) and drop_target != tgt.uuid:
            raise CmdError(26, 'Target collection %s UUID does not match the provided UUID' % tgt.ns)
        remove_coll(tgt)
        if tgt.kind != 'collection':
            sync_view_def(tgt, remove=True)
    # Move the documents (same objects, same order), options, index specs and caches.
    cstore = mm_client[sdb]._store._collections.pop(sname)
    cstore.name = tname
    mm_client[tdb]._store._collections[tname] = cstore
    del catalog[sdb][sname]
    if not catalog[sdb]:
        del catalog[sdb]
    src.db, src.name = tdb, tname
    if sdb != tdb:
        src.uuid = Binary(uuid.uuid4().bytes, 4)
    for cur in cursors.values():
        if cur.coll is src:
            cur.killed = 'collection renamed'
    catalog.setdefault(tdb, OrderedDict())[tname] = src
    log_op('c', sdb + '.$cmd', OrderedDict([('renameCollection', '%s.%s' % (sdb, sname)),
                                            ('to', '%s.%s' % (tdb, tname)), ('stayTemp', False),
                                            ('dropTarget', bool(drop_target))]))
    return OrderedDict()


INDEX_FIELDS = {'v', 'key', 'name', 'ns', 'unique', 'sparse', 'expireAfterSeconds',
                'partialFilterExpression', 'collation', 'hidden', 'weights', 'default_language',
                'language_override', 'textIndexVersion', '2dsphereIndexVersion', 'bits', 'min', 'max',
                'bucketSize', 'storageEngine', 'wildcardProjection', 'background', 'coarsestIndexedLevel',
                'finestIndexedLevel', 'dropDups', 'clustered', 'prepareUnique'}


def norm_spec(ns, default_collation, ix):
    if not isinstance(ix, Mapping):
        raise CmdError(14, "The 'indexes' field must be an array of index specifications")
    for k in ix:
        if k not in INDEX_FIELDS:
            raise CmdError(197, "The field '%s' is not valid for an index specification. "
                                "Specification: %s" % (k, bson_repr(ix)))
    key = ix.get('key')
    if not isinstance(key, Mapping) or not key:
        raise CmdError(9, "Error in specification %s :: caused by :: The 'key' field must be a "
                          "non-empty object" % bson_repr(ix))
    if not isinstance(ix.get('name'), str) or not ix.get('name'):
        raise CmdError(9, "Error in specification %s :: caused by :: The 'name' field is a required "
                          "property of an index specification" % bson_repr(ix))
    if 'ns' in ix and ix['ns'] != ns:
        raise CmdError(2, "The value of the field 'ns' (%s) doesn't match the namespace '%s'" % (ix['ns'], ns))
    if ix.get('v', 2) not in (1, 2):
        raise CmdError(197, 'Invalid index specification %s; cannot create an index with v=%s'
                       % (bson_repr(ix), ix.get('v')))
    spec = OrderedDict()
    if 'v' not in ix:
        spec['v'] = 2
    for k, v in ix.items():
        if k != 'ns':
            spec[k] = v
    if 'collation' not in spec and default_collation and not any(
            isinstance(v, str) and v in ('2d', '2dsphere', 'geoHaystack') for v in key.values()):
        spec['collation'] = copy.deepcopy(default_collation)
    return spec


def spec_options(s):
    return {k: v for k, v in s.items() if k not in ('v', 'name', 'background')}


def c_createindexes(req, cmd, db, name):
    own_fields(cmd, name, {'indexes', 'commitQuorum', 'ignoreUnknownIndexOptions', 'isTimeseriesNamespace'})
    cname = cmd[name]
    existing = get_coll(db, cname)
    if existing is not None and existing.kind == 'view':
        raise CmdError(166, 'Namespace %s is a view, not a collection' % existing.ns)
    idx = cmd.get('indexes')
    if not isinstance(idx, list) or not idx:
        raise CmdError(2, 'Must specify at least one index to create')
    if existing is None:
        check_db_name(db)
        check_coll_name(db, cname)
    specs = [norm_spec('%s.%s' % (db, cname), existing.collation() if existing else None, ix) for ix in idx]
    coll, created = implicit_coll(db, cname) if existing is None else (existing, False)
    before = len(coll.indexes)
    new = []
    for spec in specs:
        same_name = next((s for s in coll.indexes + new if s['name'] == spec['name']), None)
        same_key = next((s for s in coll.indexes + new if list(s['key'].items()) == list(spec['key'].items())
                         and s.get('collation') == spec.get('collation')
                         and s.get('partialFilterExpression') == spec.get('partialFilterExpression')), None)
        if same_name is not None:
            if list(same_name['key'].items()) != list(spec['key'].items()):
                raise CmdError(86, 'An existing index has the same name as the requested index. When index '
                                   'names are not specified, they are auto generated and can cause conflicts. '
                                   'Please refer to our documentation. Requested index: %s, existing index: %s'
                               % (bson_repr(spec), bson_repr(same_name)))
            if spec_options(same_name) != spec_options(spec):
                raise CmdError(85, 'An equivalent index already exists with the same name but different '
                                   'options. Requested index: %s, existing index: %s'
                               % (bson_repr(spec), bson_repr(same_name)))
            continue
        if same_key is not None:
            if spec_options(same_key) == spec_options(spec):
                raise CmdError(85, 'Index already exists with a different name: %s' % same_key['name'])
            raise CmdError(85, 'An equivalent index already exists with a different name and options. '
                               'Requested index: %s, existing index: %s' % (bson_repr(spec), bson_repr(same_key)))
        if spec.get('unique'):
            try:
                counts = build_ukeys(coll, spec)
            except WriteErr as e:
                raise CmdError(11000, e.errmsg, **e.extra)
            coll.ukeys[spec['name']] = counts
        new.append(spec)
    for spec in new:
        coll.indexes.append(spec)
        o = OrderedDict([('createIndexes', cname)])
        o.update(spec)
        log_op('c', db + '.$cmd', o, ui=coll.uuid)
    r = OrderedDict([('numIndexesBefore', before), ('numIndexesAfter', len(coll.indexes)),
                     ('createdCollectionAutomatically', created)])
    if not new:
        r['note'] = 'all indexes already exist'
    if SETNAME:
        r['commitQuorum'] = 'votingMembers'
    return r


def c_listindexes(req, cmd, db, name):
    own_fields(cmd, name, {'cursor', 'includeBuildUUIDs', 'includeIndexBuildInfo'})
    c = get_coll(db, cmd[name])
    if c is None:
        raise CmdError(26, 'ns does not exist: %s.%s' % (db, cmd[name]))
    if c.kind == 'view':
        raise CmdError(166, 'Namespace %s is a view, not a collection' % c.ns)
    bs = (cmd.get('cursor') or {}).get('batchSize')
    return cursor_reply('%s.$cmd.listIndexes.%s' % (db, c.name), copy.deepcopy(c.indexes),
                        'all' if bs is None else bs)


def c_dropindexes(req, cmd, db, name):
    own_fields(cmd, name, {'index'})
    c = get_coll(db, cmd[name])
    if c is None:
        raise CmdError(26, 'ns not found %s.%s' % (db, cmd[name]))
    if c.kind == 'view':
        raise CmdError(166, 'Namespace %s is a view, not a collection' % c.ns)
    want = cmd.get('index')
    was = len(c.indexes)
    if want == '*':
        drop = [s for s in c.indexes if s['name'] != '_id_']
    else:
        wants = want if isinstance(want, list) else [want]
        drop = []
        for w in wants:
            hit = [s for s in c.indexes if (isinstance(w, str) and s['name'] == w)
                   or (isinstance(w, Mapping) and list(s['key'].items()) == list(w.items()))]
            if not hit:
                if isinstance(w, str):
                    raise CmdError(27, 'index not found with name [%s]' % w)
                raise CmdError(27, "can't find index with key: %s" % bson_repr(w))
            if len(hit) > 1:
                raise CmdError(2, '%d indexes found for key: %s, identify by name instead.'
                               % (len(hit), bson_repr(w)))
            if hit[0]['name'] == '_id_':
                raise CmdError(72, 'cannot drop _id index')
            drop.extend(hit)
    for s in drop:
        c.indexes.remove(s)
        c.ukeys.pop(s['name'], None)
        log_op('c', db + '.$cmd', OrderedDict([('dropIndexes', c.name), ('index', s['name'])]), ui=c.uuid)
    r = OrderedDict([('nIndexesWas', was)])
    if want == '*':
        r['msg'] = 'non-_id indexes dropped for collection'
    return r


def insert_one(coll, raw, bypass):
    raw = prepare_insert(raw)
    try:
        doc = decode(raw)
    except Exception as e:
        raise WriteErr(2, 'fakemongo cannot decode this document (%s: %s)' % (type(e).__name__, e))
    if validation_applies(coll, bypass) and not validate_doc(coll, doc):
        raise validation_error(doc)
    adds = check_unique(coll, doc)
    key, doc = store_doc(coll, raw, doc)
    for counts, keys in adds:
        for k in keys:
            counts[k] = 1
    log_op('i', coll.ns, doc, OrderedDict([('_id', doc['_id'])]), ui=coll.uuid)
    if coll.capped():
        trim_capped(coll)


def trim_capped(coll):
    mx = coll.options.get('max')
    size = coll.options.get('size') or 0
    docs = coll.store._documents
    while docs and ((mx and len(docs) > mx) or (size and coll.size > size and len(docs) > 1)):
        forget_doc(coll, next(iter(docs)))


def c_insert(req, cmd, db, name):
    own_fields(cmd, name, {'documents', 'ordered', 'bypassDocumentValidation'})
    cname = cmd[name]
    docs = cmd.get('documents')
    if not isinstance(docs, list):
        raise CmdError(40414, "BSON field 'insert.documents' is missing but a required field")
    if not docs or len(docs) > 100000:
        raise CmdError(16, 'Write batch sizes must be between 1 and 100000. Got %d operations.' % len(docs))
    if cname == 'system.views':
        raise not_implemented('direct writes to system.views (create views with create/viewOn)')
    check_coll_name(db, cname)
    coll = get_coll(db, cname)
    ordered = cmd.get('ordered', True)
    bypass = bool(cmd.get('bypassDocumentValidation'))
    if coll is not None and coll.kind == 'view':
        return write_reply(0, [WriteErr(166, 'Namespace %s is a view, not a collection' % coll.ns).entry(0)])
    if coll is None:
        coll, _ = implicit_coll(db, cname)
    n, errors = 0, []
    for i, d in enumerate(docs):
        raw = d.raw if isinstance(d, RawBSONDocument) else encode(d)
        try:
            insert_one(coll, raw, bypass)
            n += 1
        except WriteErr as e:
            errors.append(e.entry(i))
            if ordered:
                break
    return write_reply(n, errors)


def snapshot_docs(coll):
    return OrderedDict((k, copy.deepcopy(d)) for k, d in coll.store._documents.items())


def restore_docs(coll, snap):
    coll.store._documents.clear()
    coll.store._documents.update(snap)
    coll.ukeys = {}


def rekey(coll, before):
    """After mongomock changed documents: store keys from _id again, drop stale raw bytes
    of changed documents, recompute sizes."""
    docs = OrderedDict()
    for d in coll.store._documents.values():
        docs[id_key(d)] = d
    changed = []
    for k, d in docs.items():
        old = before.get(k)
        if old is None or encode(old) != encode(d):
            coll.raw.pop(k, None)
            changed.append(k)
    for k in list(coll.raw):
        if k not in docs:
            del coll.raw[k]
    coll.store._documents.clear()
    coll.store._documents.update(docs)
    coll.size = sum(len(coll.raw_of(k, d)) for k, d in docs.items())
    coll.ukeys = {}
    return changed


def c_update(req, cmd, db, name):
    own_fields(cmd, name, {'updates', 'ordered', 'bypassDocumentValidation', 'let'})
    cname = cmd[name]
    coll = get_coll(db, cname)
    if coll is not None and coll.kind == 'view':
        raise CmdError(166, 'Namespace %s is a view, not a collection' % coll.ns)
    ordered = cmd.get('ordered', True)
    bypass = bool(cmd.get('bypassDocumentValidation'))
    n = nmod = 0
    upserted, errors = [], []
    for i, u in enumerate(cmd.get('updates') or []):
        try:
            if not isinstance(u.get('u'), Mapping):
                raise not_implemented('pipeline updates')
            for k in ('arrayFilters', 'hint', 'collation'):
                if u.get(k):
                    raise not_implemented('update with %s' % k)
            if coll is None:
                if not u.get('upsert'):
                    continue
                coll, _ = implicit_coll(db, cname)
            before = snapshot_docs(coll)
            raw_before = dict(coll.raw)
            valid_before = {k: validate_doc(coll, d) for k, d in before.items()} \
                if validation_applies(coll, bypass) else {}
            op = u['u']
            try:
                if u.get('multi'):
                    if not any(k.startswith('$') for k in op):
                        raise WriteErr(9, 'multi update is not supported for replacement-style update')
                    r = coll.mm.update_many(u['q'], op, upsert=u.get('upsert', False))
                elif any(k.startswith('$') for k in op):
                    r = coll.mm.update_one(u['q'], op, upsert=u.get('upsert', False))
                else:
                    r = coll.mm.replace_one(u['q'], op, upsert=u.get('upsert', False))
            except mongomock.WriteError as e:
                restore_docs(coll, before)
                if "immutable field '_id'" in str(e):
                    raise WriteErr(66, "Performing an update on the path '_id' would modify the "
                                       "immutable field '_id'")
                raise WriteErr(e.code or 2, str(e))
            except NotImplementedError as e:
                restore_docs(coll, before)
                raise not_implemented('this update (mongomock: %s)' % e)
            changed = rekey(coll, before)
            try:
                for spec in unique_specs(coll):
                    coll.ukeys[spec['name']] = build_ukeys(coll, spec)
                if validation_applies(coll, bypass):
                    level = coll.options.get('validationLevel', 'strict')
                    for k in changed:
                        d = coll.store._documents[k]
                        if (level == 'strict' or valid_before.get(k, True)) and not validate_doc(coll, d):
                            raise validation_error(d)
                if coll.capped():
                    for k in changed:
                        if k in before and len(coll.raw_of(k, coll.store._documents[k])) != len(encode(before[k])):
                            raise WriteErr(10003, 'Cannot change the size of a document in a capped collection: '
                                                  '%d != %d' % (len(encode(before[k])),
                                                                len(coll.raw_of(k, coll.store._documents[k]))))
            except WriteErr:
                restore_docs(coll, before)
                coll.raw = raw_before
                rekey(coll, before)
                raise
            n += r.matched_count
            nmod += r.modified_count
            if r.upserted_id is not None:
                n += 1
                upserted.append(OrderedDict([('index', i), ('_id', r.upserted_id)]))
            for k in changed:
                d = coll.store._documents[k]
                if k in before:
                    log_op('u', coll.ns, d, OrderedDict([('_id', d['_id'])]), ui=coll.uuid)
                else:
                    log_op('i', coll.ns, d, OrderedDict([('_id', d['_id'])]), ui=coll.uuid)
        except WriteErr as e:
            errors.append(e.entry(i))
            if ordered:
                break
    extra = [('nModified', nmod)]
    if upserted:
        extra.append(('upserted', upserted))
    return write_reply(n, errors, extra)


def c_delete(req, cmd, db, name):
    own_fields(cmd, name, {'deletes', 'ordered', 'let'})
    coll = get_coll(db, cmd[name])
    if coll is not None and coll.kind == 'view':
        raise CmdError(166, 'Namespace %s is a view, not a collection' % coll.ns)
    ordered = cmd.get('ordered', True)
    n, errors = 0, []
    for i, d in enumerate(cmd.get('deletes') or []):
        try:
            if coll is None:
                continue
            if d.get('hint') or d.get('collation'):
                raise not_implemented('delete with hint or collation')
            if coll.capped():
                raise WriteErr(20, 'cannot remove from a capped collection: %s' % coll.ns)
            victims = matching(coll, d.get('q') or {})
            if d.get('limit', 0) == 1:
                victims = victims[:1]
            for v in victims:
                k = id_key(v)
                forget_doc(coll, k)
                log_op('d', coll.ns, OrderedDict([('_id', v['_id'])]), ui=coll.uuid)
            n += len(victims)
        except WriteErr as e:
            errors.append(e.entry(i))
            if ordered:
                break
    return write_reply(n, errors)


FIND_FIELDS = {'filter', 'sort', 'projection', 'hint', 'skip', 'limit', 'batchSize', 'singleBatch',
               'maxScan', 'max', 'min', 'returnKey', 'showRecordId', 'tailable', 'oplogReplay',
               'noCursorTimeout', 'awaitData', 'allowPartialResults', 'collation', 'allowDiskUse',
               'let', 'readOnce', 'ntoreturn', 'exhaust'}


def c_find(req, cmd, db, name):
    own_fields(cmd, name, FIND_FIELDS)
    for k in ('returnKey', 'showRecordId', 'min', 'max'):
        if cmd.get(k):
            raise not_implemented('find with %s' % k)
    cname = cmd[name]
    ns = '%s.%s' % (db, cname)
    bs = cmd.get('batchSize')
    if bs is not None and bs < 0:
        raise CmdError(51024, "BSON field 'batchSize' value must be >= 0, actual value '%d'" % bs)
    at = snapshot_time(cmd)
    if ns == 'local.oplog.rs' and SETNAME:
        return find_oplog(cmd, ns, bs, at)
    coll = get_coll(db, cname)
    tail = None
    if cmd.get('tailable'):
        if coll is None or not coll.capped():
            raise CmdError(2, 'error processing query: ns=%s :: caused by :: tailable cursor requested on '
                              'non capped collection' % ns)
        if cmd.get('sort') and list(cmd['sort'].items()) != [('$natural', 1)]:
            raise CmdError(2, 'cannot use tailable option with a sort other than {$natural: 1}')
        if cmd.get('projection'):
            raise not_implemented('tailable cursors with a projection')
        tail = {'filter': cmd.get('filter') or {}, 'await': bool(cmd.get('awaitData')), 'last': None}
    docs = find_docs(coll, cmd)
    if tail is not None and docs:
        tail['last'] = id_key(decode(docs[-1].raw))
    return cursor_reply(ns, docs, bs, single=bool(cmd.get('singleBatch')), coll=coll, tail=tail,
                        at_cluster_time=at)


def find_oplog(cmd, ns, bs, at):
    flt = cmd.get('filter') or {}
    docs = [e for e in oplog if not flt or mm_filtering.filter_applies(flt, e)]
    if (cmd.get('sort') or {}).get('$natural') == -1 or (cmd.get('hint') or {}).get('$natural') == -1:
        docs = docs[::-1]
    if cmd.get('limit'):
        docs = docs[:abs(int(cmd['limit']))]
    tail = None
    if cmd.get('tailable'):
        tail = {'filter': flt, 'await': bool(cmd.get('awaitData')), 'oplog_pos': len(oplog)}
    return cursor_reply(ns, docs, bs, single=bool(cmd.get('singleBatch')), tail=tail, at_cluster_time=at)


def tail_new_docs(cur):
    t = cur.tail
    if 'oplog_pos' in t:
        new = oplog[t['oplog_pos']:]
        t['oplog_pos'] = len(oplog)
        return [e for e in new if not t['filter'] or mm_filtering.filter_applies(t['filter'], e)]
    coll = cur.coll
    keys = list(coll.store._documents)
    if t['last'] is None:
        start = 0
    elif t['last'] in coll.store._documents:
        start = keys.index(t['last']) + 1
    else:
        raise CmdError(136, 'CollectionScan died due to position in capped collection being deleted. '
                            'Last seen record id: RecordId(%s)' % bson_repr(t['last'][1:]))
    docs = [coll.store._documents[k] for k in keys[start:]]
    if keys[start:]:
        t['last'] = keys[-1]
    if t['filter']:
        docs = [d for d in docs if mm_filtering.filter_applies(t['filter'], d)]
    return [RawBSONDocument(coll.raw_of(id_key(d), d), RAW_OPTS) for d in docs]


def c_getmore(req, cmd, db, name):
    own_fields(cmd, name, {'collection', 'batchSize', 'maxTimeMS', 'term', 'lastKnownCommittedOpTime'})
    cid = int(cmd[name])
    cur = cursors.get(cid)
    if cur is None:
        raise CmdError(43, 'cursor id %d not found' % cid)
    want_ns = '%s.%s' % (db, cmd.get('collection'))
    if want_ns != cur.ns:
        raise CmdError(13, "Requested getMore on namespace '%s', but cursor belongs to a different "
                           "namespace %s" % (want_ns, cur.ns))
    if cur.killed:
        del cursors[cid]
        raise CmdError(175, 'cursor killed: %s' % cur.killed)
    bs = cmd.get('batchSize') or 0
    if cur.tail is not None:
        if cur.pos >= len(cur.docs):
            cur.docs, cur.pos = [as_raw(d) for d in tail_new_docs(cur)], 0
            if not cur.docs and cur.tail.get('await'):
                deadline = time.time() + float(cmd.get('maxTimeMS') or 1000) / 1000.0
                while not cur.docs and time.time() < deadline and not stopping.is_set():
                    sleep_unlocked(0.05)
                    if cursors.get(cid) is not cur:
                        raise CmdError(43, 'cursor id %d not found' % cid)
                    cur.docs, cur.pos = [as_raw(d) for d in tail_new_docs(cur)], 0
        batch, cur.pos = take_batch(cur.docs, cur.pos, bs)
        keep = True
    else:
        batch, cur.pos = take_batch(cur.docs, cur.pos, bs)
        keep = cur.pos < len(cur.docs)
    if not keep:
        del cursors[cid]
    return OrderedDict([('cursor', OrderedDict([('nextBatch', batch), ('id', Int64(cid if keep else 0)),
                                                ('ns', cur.ns)]))])


def c_killcursors(req, cmd, db, name):
    ids = [Int64(i) for i in cmd.get('cursors', [])]
    killed, missing = [], []
    for i in ids:
        (killed if cursors.pop(int(i), None) is not None else missing).append(i)
    return OrderedDict([('cursorsKilled', killed), ('cursorsNotFound', missing), ('cursorsAlive', []),
                        ('cursorsUnknown', [])])


def c_count(req, cmd, db, name):
    own_fields(cmd, name, {'query', 'limit', 'skip', 'hint', 'collation', 'fields'})
    coll = get_coll(db, cmd[name])
    flt = cmd.get('query') or {}
    skip = int(cmd.get('skip') or 0)
    limit = abs(int(cmd.get('limit') or 0))
    if coll is None:
        return OrderedDict([('n', 0)])
    if coll.kind == 'view':
        extra = ([{'$match': flt}] if flt else []) + ([{'$skip': skip}] if skip else []) + \
                ([{'$limit': limit}] if limit else [])
        n = len(view_docs(coll, extra))
    else:
        check_hint(coll, cmd.get('hint'))
        n = len(matching(coll, flt)[skip:])
        if limit:
            n = min(n, limit)
    return OrderedDict([('n', n)])


def c_distinct(req, cmd, db, name):
    own_fields(cmd, name, {'key', 'query', 'collation', 'hint'})
    coll = get_coll(db, cmd[name])
    key = cmd.get('key')
    if not isinstance(key, str):
        raise CmdError(40414, "BSON field 'distinct.key' is missing but a required field")
    flt = cmd.get('query') or {}
    if coll is None:
        docs = []
    elif coll.kind == 'view':
        docs = view_docs(coll, [{'$match': flt}] if flt else [])
    else:
        docs = matching(coll, flt)
    seen, values = set(), []
    for d in docs:
        present, vals = get_values(d, key)
        if not present:
            continue
        for v in vals:
            k = hkey(v)
            if k not in seen:
                seen.add(k)
                values.append(v)
    r = OrderedDict([('values', values)])
    at = snapshot_time(cmd)
    if at is not None:
        r['atClusterTime'] = at
    return r


def c_aggregate(req, cmd, db, name):
    own_fields(cmd, name, {'pipeline', 'cursor', 'explain', 'allowDiskUse', 'collation', 'hint', 'let',
                           'bypassDocumentValidation', 'exchange', 'fromMongos', 'needsMerge',
                           'isMapReduceCommand', 'collectionUUID'})
    target = cmd[name]
    pipeline = cmd.get('pipeline')
    if not isinstance(pipeline, list):
        raise CmdError(14, "'pipeline' option must be specified as an array")
    if 'cursor' not in cmd and not cmd.get('explain'):
        raise CmdError(9, "The 'cursor' option is required, except for aggregate with the explain argument")
    if cmd.get('explain'):
        raise not_implemented('aggregate explain')
    if not isinstance(target, str):
        raise not_implemented('collectionless aggregate ($currentOp, $documents, ...)')
    ns = '%s.%s' % (db, target)
    bs = (cmd.get('cursor') or {}).get('batchSize')
    at = snapshot_time(cmd)
    coll = get_coll(db, target)
    simple = all(len(st) == 1 and next(iter(st)) in ('$match', '$sort', '$skip', '$limit') for st in pipeline)
    if coll is not None and coll.kind != 'view' and simple:
        # Whole stored documents: answer from the raw bytes, as find does.
        docs = coll.docs()
        for st in pipeline:
            op, arg = next(iter(st.items()))
            if op == '$match':
                try:
                    docs = [d for d in docs if mm_filtering.filter_applies(arg, d)]
                except NotImplementedError as e:
                    raise not_implemented('this query (mongomock: %s)' % e)
            elif op == '$sort':
                docs = sort_docs(docs, arg)
            elif op == '$skip':
                docs = docs[int(arg):]
            elif op == '$limit':
                docs = docs[:int(arg)]
        docs = [RawBSONDocument(coll.raw_of(id_key(d), d), RAW_OPTS) for d in docs]
    elif coll is None:
        docs = run_pipeline(db, [], pipeline)
    elif coll.kind == 'view':
        docs = view_docs(coll, pipeline)
    else:
        docs = run_pipeline(db, copies(coll.docs()), pipeline)
    return cursor_reply(ns, docs, bs, at_cluster_time=at)


def c_collstats(req, cmd, db, name):
    coll = get_coll(db, cmd[name])
    if coll is None:
        raise CmdError(26, 'ns not found')
    if coll.kind == 'view':
        raise CmdError(166, 'Namespace %s is a view, not a collection' % coll.ns)
    n = len(coll.store._documents)
    size = coll.size if coll.capped() else sum(len(coll.raw_of(k, d)) for k, d in coll.store._documents.items())
    r = OrderedDict([('ns', coll.ns), ('size', size), ('count', n)])
    if n:
        r['avgObjSize'] = size // n
    r.update([('storageSize', (size + 4095) // 4096 * 4096 + 4096), ('freeStorageSize', 0),
              ('capped', coll.capped())])
    if coll.capped():
        r['max'] = coll.options.get('max', 0)
        r['maxSize'] = coll.options.get('size')
    r.update([('nindexes', len(coll.indexes)), ('indexBuilds', []),
              ('totalIndexSize', 4096 * len(coll.indexes)), ('totalSize', size + 4096 * (1 + len(coll.indexes))),
              ('indexSizes', OrderedDict((s['name'], 4096) for s in coll.indexes)), ('scaleFactor', 1)])
    return r


def c_dbstats(req, cmd, db, name):
    colls = list(colls_of(db).values())
    real = [c for c in colls if c.kind != 'view']
    objects = sum(len(c.store._documents) for c in real)
    size = sum(sum(len(c.raw_of(k, d)) for k, d in c.store._documents.items()) for c in real)
    return OrderedDict([('db', db), ('collections', len(real)), ('views', len(colls) - len(real)),
                        ('objects', objects), ('avgObjSize', float(size // objects) if objects else 0.0),
                        ('dataSize', float(size)), ('storageSize', float(size + 4096 * len(real))),
                        ('indexes', sum(len(c.indexes) for c in real)),
                        ('indexSize', float(4096 * sum(len(c.indexes) for c in real))),
                        ('totalSize', float(size + 4096 * len(real))), ('scaleFactor', 1.0),
                        ('fsUsedSize', 0.0), ('fsTotalSize', 0.0)])


# Command names are case-sensitive in mongod; these are its names and aliases.
COMMANDS = {
    'hello': c_hello, 'isMaster': c_hello, 'ismaster': c_hello,
    'ping': c_ok, 'endSessions': c_ok, 'refreshSessions': c_ok, 'killSessions': c_ok,
    'getLastError': c_ok, 'getlasterror': c_ok, 'getParameter': c_ok, 'commitTransaction': c_ok,
    'abortTransaction': c_ok, 'logout': c_ok, 'getFreeMonitoringStatus': c_ok,
    'buildInfo': c_buildinfo, 'buildinfo': c_buildinfo, 'whatsmyuri': c_whatsmyuri,
    'serverStatus': c_serverstatus, 'connectionStatus': c_connectionstatus,
    'getCmdLineOpts': c_getcmdlineopts, 'startSession': c_startsession,
    'replSetGetStatus': c_replsetgetstatus, 'fsync': c_fsync,
    'listDatabases': c_listdatabases, 'listCollections': c_listcollections, 'create': c_create,
    'drop': c_drop, 'dropDatabase': c_dropdatabase, 'renameCollection': c_renamecollection,
    'createIndexes': c_createindexes, 'listIndexes': c_listindexes, 'dropIndexes': c_dropindexes,
    'deleteIndexes': c_dropindexes,
    'insert': c_insert, 'update': c_update, 'delete': c_delete, 'find': c_find, 'getMore': c_getmore,
    'killCursors': c_killcursors, 'count': c_count, 'distinct': c_distinct, 'aggregate': c_aggregate,
    'collStats': c_collstats, 'collstats': c_collstats, 'dbStats': c_dbstats, 'dbstats': c_dbstats,
}


def dispatch(req, cmd):
    if '$fakemongoDecodeError' in cmd:
        raise CmdError(22, 'fakemongo could not decode the request: %s' % cmd['$fakemongoDecodeError'])
    if not cmd:
        raise CmdError(59, 'no such command: \'\'')
    name = next(iter(cmd))
    lname = name.lower()
    if isinstance(req, mockupdb.OpMsg):
        db = req.namespace
    else:
        db = req.namespace.split('.')[0]
    fn = COMMANDS.get(name)
    if fn is None:
        raise CmdError(59, "no such command: '%s'" % name)
    check_generic(cmd, name, lname)
    return fn(req, cmd, db, name)


def finish(reply):
    if 'ok' not in reply:
        reply['ok'] = 1.0
    if SETNAME:
        ct = cluster_time()
        reply['$clusterTime'] = OrderedDict([('clusterTime', ct),
                                             ('signature', OrderedDict([('hash', Binary(b'\x00' * 20, 0)),
                                                                        ('keyId', Int64(0))]))])
        reply['operationTime'] = ct
    return reply


def handle(req):
    no_reply = isinstance(req, mockupdb.OpMsg) and req.flags & mockupdb.OP_MSG_FLAGS['moreToCome']
    with lock:
        try:
            reply = dispatch(req, req.doc)
        except CmdError as e:
            reply = e.doc()
        except WriteErr as e:
            reply = CmdError(e.code, e.errmsg, **e.extra).doc()
        except Exception as e:  # report as a command error, keep serving
            traceback.print_exc(file=sys.stderr)
            reply = CmdError(1, 'fakemongo internal error: %s: %s' % (type(e).__name__, e)).doc()
        reply = finish(reply)
    if not no_reply:
        try:
            req.replies(reply)
        except OSError:
            pass        # the client went away (e.g. during an awaitable hello)
    return True


# ---------------------------------------------------------------- OP_MSG unpacking that keeps raw documents

class RawOpMsg(mockupdb.OpMsg):
    """OP_MSG whose document sequences (insert's 'documents') stay raw BSON, and whose
    decoding errors come back as a command error instead of killing the connection."""

    @classmethod
    def unpack(cls, msg, client, server, request_id):
        try:
            return cls._unpack(msg, client, server, request_id)
        except Exception as e:
            return mockupdb.OpMsg(OrderedDict([('$fakemongoDecodeError', '%s: %s' % (type(e).__name__, e)),
                                               ('$db', 'admin')]),
                                  namespace='admin', flags=0, _client=client, request_id=request_id,
                                  _server=server)

    @classmethod
    def _unpack(cls, msg, client, server, request_id):
        payload = OrderedDict()
        flags, = struct.unpack_from('<I', msg, 0)
        end = len(msg) - (4 if flags & 1 else 0)
        pos = 4
        sequences = []
        while pos < end:
            kind = msg[pos]
            pos += 1
            size, = _I32.unpack_from(msg, pos)
            if kind == 0:
                body = bson.decode(msg[pos:pos + size], codec_options=OPTS)
                if isinstance(body.get('documents'), list):
                    # insert's documents inside the body: keep their bytes too
                    body['documents'] = list(RawBSONDocument(msg[pos:pos + size], RAW_OPTS)['documents'])
                payload.update(body)
                pos += size
            elif kind == 1:
                z = msg.index(b'\x00', pos + 4)
                ident = msg[pos + 4:z].decode()
                docs, p = [], z + 1
                while p < pos + size:
                    n, = _I32.unpack_from(msg, p)
                    docs.append(RawBSONDocument(msg[p:p + n], RAW_OPTS) if ident == 'documents'
                                else bson.decode(msg[p:p + n], codec_options=OPTS))
                    p += n
                sequences.append((ident, docs))
                pos += size
            else:
                raise ValueError('unknown OP_MSG section kind %d' % kind)
        for ident, docs in sequences:
            payload[ident] = docs
        return mockupdb.OpMsg(payload, namespace=payload['$db'], flags=flags, _client=client,
                              request_id=request_id, _server=server)


mockupdb.OPCODES[mockupdb.OP_MSG] = RawOpMsg
# mockupdb formats every request and reply for its (disabled) verbose log: keep that cheap.
for _cls in vars(mockupdb).values():
    if isinstance(_cls, type) and issubclass(_cls, (mockupdb.Request, mockupdb.Reply)):
        _cls.__repr__ = lambda self: type(self).__name__


# ---------------------------------------------------------------- TTL monitor

def ttl_pass():
    now = datetime.datetime.utcnow()
    for colls in list(catalog.values()):
        for coll in list(colls.values()):
            if coll.kind == 'view' or coll.capped():
                continue
            for spec in coll.indexes:
                secs = spec.get('expireAfterSeconds')
                if secs is None or len(spec['key']) != 1 or not isinstance(secs, (int, float)):
                    continue
                field = next(iter(spec['key']))
                for k, d in list(coll.store._documents.items()):
                    if spec.get('partialFilterExpression') and \
                            not mm_filtering.filter_applies(spec['partialFilterExpression'], d):
                        continue
                    present, vals = get_values(d, field)
                    dates = [v for v in vals if isinstance(v, datetime.datetime)]
                    if present and dates and min(dates) + datetime.timedelta(seconds=secs) < now:
                        forget_doc(coll, k)
                        log_op('d', coll.ns, OrderedDict([('_id', d['_id'])]), ui=coll.uuid)


def ttl_monitor():
    while not stopping.wait(TTL_INTERVAL):
        with lock:
            try:
                ttl_pass()
            except Exception:
                traceback.print_exc(file=sys.stderr)


# ---------------------------------------------------------------- main

def main():
    global server
    bootstrap()
    server = mockupdb.MockupDB(port=PORT, auto_ismaster=False, request_timeout=3600)
    server._address = ('127.0.0.1', PORT)   # loopback only
    server.autoresponds(handle)
    try:
        server.run()
    except OSError as e:
        sys.exit('fakemongo: cannot listen on %s: %s' % (ME, e))

    def on_signal(signum, frame):
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threading.Thread(target=ttl_monitor, daemon=True).start()
    print('fakemongo listening on %s setName=%s' % (ME, SETNAME), flush=True)
    while not stopping.wait(1):
        pass
    try:
        server._listening_sock.close()
    except OSError:
        pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == '__main__':
    main()
