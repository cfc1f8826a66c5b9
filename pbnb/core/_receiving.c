/* C twins of the receive path's hot steps: FrameReader._read_frames and the
 * common case of FrameReader.feed (pbnb/core/wire.py), the frame loop that
 * every message of every connection goes through; and Broker._on_observe
 * (pbnb/core/broker.py), the quick path of the update every observer of a
 * cache gets (QuickObserve, at the end of this file).
 *
 * FrameLoop(...)(reader, data, pos, budget) does what the Python loop does,
 * step for step: it cuts ``data[pos:]`` into frames (u32 body length, u16
 * header length, header, payload), refuses a prefix through check_prefix,
 * decodes a header with msgpack's unpackb and, when that quick decode is
 * refused, through decode_header, hands a repeated header's bytes over as the
 * same list, and calls ``reader.handlers[kind](header, payload)``. The
 * unusual cases (a refused prefix or header, a kind not allowed now, a
 * handler's ValueError) go to the same Python functions the twin calls, so
 * both say the same; tests/test_core_twins.py holds the two to the same
 * dispatches, reader state and errors.
 *
 * The reader's state lives in its __slots__; the loop reads and writes them at
 * the offsets their member descriptors give, as CPython's own slot access
 * does, and hands anything but a FrameReader fed bytes or a bytearray to the
 * Python twin. Pyodide and machines without a compiler use the Python twin.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

/* u32 body length | u16 header length (wire.FRAME_PREFIX); the body counts the second. */
#define PREFIX_SIZE 6
#define LENGTH_SIZE 4

/* The reader's slots the loop uses. */
enum {
    MAX_FRAME, CLOSED, HANDLERS, LAST_RAW, LAST_HEADER, BACKLOG, BACKLOG_AT, NEEDED,
    ASSEMBLY, PENDING_SIZE, PREAMBLE_SEEN, SLOT_COUNT
};
static const char *const slot_names[SLOT_COUNT] = {
    "max_frame", "closed", "handlers", "_last_raw", "_last_header", "_backlog", "_backlog_at", "_needed",
    "_assembly", "_pending_size", "_preamble_seen",
};

typedef struct {
    PyObject_HEAD
    PyTypeObject *reader_type; /* FrameReader: the only type whose slots the offsets fit */
    PyObject *unpackb;         /* msgpack.unpackb: the quick header decode */
    PyObject *check_prefix;    /* wire.check_prefix: raises for a refused prefix */
    PyObject *decode_header;   /* wire.decode_header: the slow header decode, which says what is wrong */
    PyObject *refuse_kind;     /* wire._refuse_kind(reader, kind): raises */
    PyObject *malformed;       /* wire._malformed(kind, error): the ProtocolError to raise */
    PyObject *slow;            /* FrameReader._read_frames: the Python twin */
    PyObject *slow_feed;       /* FrameReader.feed: the twin of feed() */
    PyObject *handler_errors;  /* (ValueError, TypeError, IndexError): a handler's, made malformed */
    Py_ssize_t copied_payload; /* wire._COPIED_PAYLOAD: larger payloads are views */
    Py_ssize_t offsets[SLOT_COUNT];
    vectorcallfunc vectorcall;
} FrameLoop;

static inline PyObject **
slot_at(PyObject *obj, Py_ssize_t offset)
{
    return (PyObject **)((char *)obj + offset);
}

static inline PyObject **
slot(FrameLoop *self, PyObject *reader, int which)
{
    return slot_at(reader, self->offsets[which]);
}

/* A new reference to a slot's value; NULL with AttributeError if it is unset. */
static PyObject *
slot_get(FrameLoop *self, PyObject *reader, int which)
{
    PyObject *value = *slot(self, reader, which);
    if (value == NULL) {
        PyErr_Format(PyExc_AttributeError, "'%.100s' object has no attribute '%s'", Py_TYPE(reader)->tp_name,
                     slot_names[which]);
        return NULL;
    }
    return Py_NewRef(value);
}

/* Set a slot to ``value``, taking the reference. */
static void
slot_take(FrameLoop *self, PyObject *reader, int which, PyObject *value)
{
    PyObject **place = slot(self, reader, which);
    PyObject *old = *place;
    *place = value;
    Py_XDECREF(old);
}

static inline Py_ssize_t
read_be(const unsigned char *in, int size)
{
    Py_ssize_t value = 0;
    for (int i = 0; i < size; i++) {
        value = (value << 8) | in[i];
    }
    return value;
}

/* bytes or a bytearray (as ``data`` is) of ``data[start:stop]``. */
static PyObject *
cut(int is_bytes, const char *base, Py_ssize_t start, Py_ssize_t stop)
{
    return is_bytes ? PyBytes_FromStringAndSize(base + start, stop - start)
                    : PyByteArray_FromStringAndSize(base + start, stop - start);
}

/* Whether ``raw`` (the last header's bytes) holds exactly ``size`` bytes at ``at``. */
static int
same_bytes(PyObject *raw, const char *at, Py_ssize_t size)
{
    if (PyBytes_CheckExact(raw)) {
        return PyBytes_GET_SIZE(raw) == size && memcmp(PyBytes_AS_STRING(raw), at, size) == 0;
    }
    if (PyByteArray_CheckExact(raw)) {
        return PyByteArray_GET_SIZE(raw) == size && memcmp(PyByteArray_AS_STRING(raw), at, size) == 0;
    }
    return 0;
}

static int
is_kind_list(PyObject *header)
{
    return header != NULL && PyList_CheckExact(header) && PyList_GET_SIZE(header) > 0
        && PyLong_CheckExact(PyList_GET_ITEM(header, 0));
}

/* reader._keep(data[pos:], needed): a frame cut short waits for more bytes. (Sliced as
 * Python slices: bytes from 0 are the bytes themselves, not a copy of a large frame's start.) */
static int
keep(PyObject *reader, PyObject *data, Py_ssize_t pos, Py_ssize_t end, Py_ssize_t needed)
{
    PyObject *rest = PySequence_GetSlice(data, pos, end);
    if (rest == NULL) {
        return -1;
    }
    PyObject *result = PyObject_CallMethod(reader, "_keep", "On", rest, needed);
    Py_DECREF(rest);
    Py_XDECREF(result);
    return result == NULL ? -1 : 0;
}

/* The frame's header: the last one if its bytes repeat, else decoded (and remembered). */
static PyObject *
frame_header(FrameLoop *self, PyObject *reader, int is_bytes, const char *base, Py_ssize_t start,
             Py_ssize_t stop)
{
    PyObject *last_raw = *slot(self, reader, LAST_RAW);
    if (last_raw != NULL && same_bytes(last_raw, base + start, stop - start)) {
        return slot_get(self, reader, LAST_HEADER);
    }
    PyObject *raw = cut(is_bytes, base, start, stop);
    if (raw == NULL) {
        return NULL;
    }
    PyObject *header = PyObject_CallOneArg(self->unpackb, raw);
    if (header == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            Py_DECREF(raw);
            return NULL;
        }
        PyErr_Clear();
    }
    if (!is_kind_list(header)) {
        Py_XDECREF(header);
        header = PyObject_CallOneArg(self->decode_header, raw);
        if (header == NULL) {
            Py_DECREF(raw);
            return NULL;
        }
    }
    slot_take(self, reader, LAST_RAW, raw);
    slot_take(self, reader, LAST_HEADER, Py_NewRef(header));
    return header;
}

/* The frame's payload: a copy if small, else a view of ``data`` (one view per call, made once). */
static PyObject *
frame_payload(FrameLoop *self, PyObject *data, PyObject **view, int is_bytes, const char *base,
              Py_ssize_t start, Py_ssize_t stop)
{
    if (stop - start <= self->copied_payload) {
        return cut(is_bytes, base, start, stop);
    }
    if (*view == NULL && (*view = PyMemoryView_FromObject(data)) == NULL) {
        return NULL;
    }
    PyObject *first = PyLong_FromSsize_t(start), *last = PyLong_FromSsize_t(stop);
    PyObject *range = first && last ? PySlice_New(first, last, NULL) : NULL;
    Py_XDECREF(first);
    Py_XDECREF(last);
    if (range == NULL) {
        return NULL;
    }
    PyObject *payload = PyObject_GetItem(*view, range);
    Py_DECREF(range);
    return payload;
}

/* reader.handlers.get(kind), or NULL with no error set if there is none. */
static PyObject *
frame_handler(FrameLoop *self, PyObject *reader, PyObject *kind)
{
    PyObject *handlers = slot_get(self, reader, HANDLERS);
    if (handlers == NULL) {
        return NULL;
    }
    PyObject *handler;
    if (PyDict_CheckExact(handlers)) {
        handler = Py_XNewRef(PyDict_GetItemWithError(handlers, kind));
    }
    else {
        handler = PyObject_CallMethod(handlers, "get", "O", kind);
    }
    Py_DECREF(handlers);
    if (handler == Py_None) {
        Py_CLEAR(handler);
    }
    return handler;
}

/* Hand the frame to its handler; a handler's ValueError, TypeError or IndexError becomes malformed(). */
static int
dispatch(FrameLoop *self, PyObject *reader, PyObject *header, PyObject *payload)
{
    PyObject *kind = PyList_CheckExact(header) && PyList_GET_SIZE(header) > 0
        ? Py_NewRef(PyList_GET_ITEM(header, 0))
        : PySequence_GetItem(header, 0); /* (a handler changed a kept header: fail as Python would) */
    if (kind == NULL) {
        return -1;
    }
    PyObject *handler = frame_handler(self, reader, kind);
    if (handler == NULL) {
        if (!PyErr_Occurred()) {
            Py_XDECREF(PyObject_CallFunctionObjArgs(self->refuse_kind, reader, kind, NULL));
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_SystemError, "_refuse_kind returned");
            }
        }
        Py_DECREF(kind);
        return -1;
    }
    PyObject *args[2] = {header, payload};
    PyObject *result = PyObject_Vectorcall(handler, args, 2, NULL);
    Py_DECREF(handler);
    if (result != NULL) {
        Py_DECREF(result);
        Py_DECREF(kind);
        return 0;
    }
    if (PyErr_ExceptionMatches(self->handler_errors)) {
        PyObject *type, *error, *traceback;
        PyErr_Fetch(&type, &error, &traceback);
        PyErr_NormalizeException(&type, &error, &traceback);
        PyObject *refusal = PyObject_CallFunctionObjArgs(self->malformed, kind, error, NULL);
        Py_XDECREF(type);
        Py_XDECREF(error);
        Py_XDECREF(traceback);
        if (refusal != NULL) {
            PyErr_SetObject((PyObject *)Py_TYPE(refusal), refusal);
            Py_DECREF(refusal);
        }
    }
    Py_DECREF(kind);
    return -1;
}

/* Whether the reader is closed: 1 or 0, -1 with an error (AttributeError if unset). */
static int
reader_closed(FrameLoop *self, PyObject *reader)
{
    PyObject *closed = *slot(self, reader, CLOSED);
    if (closed == Py_False) {
        return 0;
    }
    if (closed == NULL) {
        Py_XDECREF(slot_get(self, reader, CLOSED)); /* unset: it raises AttributeError */
        return -1;
    }
    return PyObject_IsTrue(closed);
}

/* The loop over data[pos:]: 0 when it ran out of bytes or the reader closed (_needed reset),
 * 1 when it stopped early (a frame cut short, the budget spent), -1 on error. */
static int
read_frames(FrameLoop *self, PyObject *reader, PyObject *data, Py_ssize_t pos, Py_ssize_t budget,
            long long max_frame, PyObject *max_frame_object)
{
    int is_bytes = PyBytes_CheckExact(data);
    Py_ssize_t end = is_bytes ? PyBytes_GET_SIZE(data) : PyByteArray_GET_SIZE(data);
    PyObject *view = NULL;
    int outcome = 0;
    while (pos < end) {
        int closed = reader_closed(self, reader);
        if (closed != 0) { /* a handler closed the reader: the rest is ignored */
            outcome = closed < 0 ? -1 : 0;
            break;
        }
        if (budget == 0) {
            PyObject *at = PyLong_FromSsize_t(pos);
            if (at == NULL) {
                outcome = -1;
                break;
            }
            slot_take(self, reader, BACKLOG, Py_NewRef(data));
            slot_take(self, reader, BACKLOG_AT, at);
            outcome = 1;
            break;
        }
        budget -= 1;
        const char *base = is_bytes ? PyBytes_AS_STRING(data) : PyByteArray_AS_STRING(data);
        if (end - pos < PREFIX_SIZE) {
            outcome = keep(reader, data, pos, end, PREFIX_SIZE) < 0 ? -1 : 1;
            break;
        }
        Py_ssize_t body = read_be((const unsigned char *)base + pos, 4);
        Py_ssize_t head_len = read_be((const unsigned char *)base + pos + 4, 2);
        if (body > max_frame || head_len + 2 > body || head_len == 0) {
            PyObject *fine = PyObject_CallFunction(self->check_prefix, "nnO", body, head_len, max_frame_object);
            if (fine == NULL) {
                outcome = -1;
                break;
            }
            Py_DECREF(fine);
        }
        Py_ssize_t stop = pos + LENGTH_SIZE + body;
        if (stop > end) {
            outcome = keep(reader, data, pos, end, LENGTH_SIZE + body) < 0 ? -1 : 1;
            break;
        }
        Py_ssize_t head_end = pos + PREFIX_SIZE + head_len;
        PyObject *header = frame_header(self, reader, is_bytes, base, pos + PREFIX_SIZE, head_end);
        if (header == NULL) {
            outcome = -1;
            break;
        }
        PyObject *payload = frame_payload(self, data, &view, is_bytes, base, head_end, stop);
        pos = stop;
        int failed = payload == NULL || dispatch(self, reader, header, payload) < 0;
        Py_DECREF(header);
        Py_XDECREF(payload);
        if (failed) {
            outcome = -1;
            break;
        }
    }
    Py_XDECREF(view);
    return outcome;
}

/* The loop over data[pos:] with the reader's limit; _needed reset once every frame is dispatched. */
static int
run(FrameLoop *self, PyObject *reader, PyObject *data, Py_ssize_t pos, Py_ssize_t budget)
{
    PyObject *max_frame_object = slot_get(self, reader, MAX_FRAME);
    if (max_frame_object == NULL) {
        return -1;
    }
    int overflow;
    long long max_frame = PyLong_AsLongLongAndOverflow(max_frame_object, &overflow);
    if (overflow) {
        max_frame = overflow > 0 ? LLONG_MAX : -1;
    }
    int outcome = max_frame == -1 && PyErr_Occurred()
        ? -1
        : read_frames(self, reader, data, pos, budget, max_frame, max_frame_object);
    Py_DECREF(max_frame_object);
    if (outcome == 0) { /* every frame dispatched (or the reader closed): the next starts with a prefix */
        slot_take(self, reader, NEEDED, PyLong_FromLong(PREFIX_SIZE));
    }
    return outcome < 0 ? -1 : 0;
}

static PyObject *
frame_loop_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    FrameLoop *self = (FrameLoop *)callable;
    if (PyVectorcall_NARGS(nargsf) != 4 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "FrameLoop takes (reader, data, pos, budget)");
        return NULL;
    }
    PyObject *reader = args[0], *data = args[1];
    if (Py_TYPE(reader) != self->reader_type || !(PyBytes_CheckExact(data) || PyByteArray_CheckExact(data))) {
        return PyObject_Vectorcall(self->slow, args, 4, NULL);
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[2]);
    if (pos == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t budget = PyLong_AsSsize_t(args[3]);
    if (budget == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (run(self, reader, data, pos, budget) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* feed(reader, data, max_frames): FrameReader.feed. Its common case is done here (a
 * FrameReader past its preamble, holding nothing, fed bytes): the loop over them, then
 * whether frames wait. Anything else goes to FrameReader.feed. */
static PyObject *
frame_loop_feed(FrameLoop *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "feed takes (reader, data, max_frames)");
        return NULL;
    }
    PyObject *reader = args[0], *data = args[1];
    if (Py_TYPE(reader) != self->reader_type || !PyBytes_CheckExact(data) || PyBytes_GET_SIZE(data) == 0
        || *slot(self, reader, CLOSED) != Py_False || *slot(self, reader, PREAMBLE_SEEN) != Py_True
        || *slot(self, reader, BACKLOG) != Py_None || *slot(self, reader, ASSEMBLY) != Py_None) {
        return PyObject_Vectorcall(self->slow_feed, args, 3, NULL);
    }
    PyObject *pending = *slot(self, reader, PENDING_SIZE);
    Py_ssize_t max_frames = PyLong_AsSsize_t(args[2]);
    if (max_frames == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (pending == NULL || !PyLong_CheckExact(pending) || PyLong_AsSsize_t(pending) != 0) {
        PyErr_Clear();
        return PyObject_Vectorcall(self->slow_feed, args, 3, NULL);
    }
    if (run(self, reader, data, 0, max_frames ? max_frames : -1) < 0) {
        return NULL;
    }
    return PyBool_FromLong(*slot(self, reader, BACKLOG) != Py_None);
}

static int
slot_offset(PyTypeObject *type, const char *name, Py_ssize_t *offset)
{
    PyObject *descriptor = PyObject_GetAttrString((PyObject *)type, name);
    if (descriptor == NULL) {
        return -1;
    }
    int fits = Py_IS_TYPE(descriptor, &PyMemberDescr_Type)
        && ((PyMemberDescrObject *)descriptor)->d_member->type == T_OBJECT_EX;
    if (fits) {
        *offset = ((PyMemberDescrObject *)descriptor)->d_member->offset;
    }
    Py_DECREF(descriptor);
    if (!fits) {
        PyErr_Format(PyExc_TypeError, "%.100s.%s is not a slot", type->tp_name, name);
        return -1;
    }
    return 0;
}

static PyObject *
frame_loop_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyTypeObject *reader_type;
    PyObject *unpackb, *check_prefix, *decode_header, *refuse_kind, *malformed, *slow, *slow_feed;
    Py_ssize_t copied_payload;
    if (!PyArg_ParseTuple(args, "O!OOOOOOOn:FrameLoop", &PyType_Type, &reader_type, &unpackb, &check_prefix,
                          &decode_header, &refuse_kind, &malformed, &slow, &slow_feed, &copied_payload)) {
        return NULL;
    }
    Py_ssize_t offsets[SLOT_COUNT];
    for (int i = 0; i < SLOT_COUNT; i++) {
        if (slot_offset(reader_type, slot_names[i], &offsets[i]) < 0) {
            return NULL;
        }
    }
    PyObject *handler_errors = PyTuple_Pack(3, PyExc_ValueError, PyExc_TypeError, PyExc_IndexError);
    if (handler_errors == NULL) {
        return NULL;
    }
    FrameLoop *self = (FrameLoop *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(handler_errors);
        return NULL;
    }
    self->reader_type = (PyTypeObject *)Py_NewRef(reader_type);
    self->unpackb = Py_NewRef(unpackb);
    self->check_prefix = Py_NewRef(check_prefix);
    self->decode_header = Py_NewRef(decode_header);
    self->refuse_kind = Py_NewRef(refuse_kind);
    self->malformed = Py_NewRef(malformed);
    self->slow = Py_NewRef(slow);
    self->slow_feed = Py_NewRef(slow_feed);
    self->handler_errors = handler_errors;
    self->copied_payload = copied_payload;
    memcpy(self->offsets, offsets, sizeof(offsets));
    self->vectorcall = frame_loop_vectorcall;
    return (PyObject *)self;
}

static int
frame_loop_traverse(FrameLoop *self, visitproc visit, void *arg)
{
    Py_VISIT(self->reader_type);
    Py_VISIT(self->unpackb);
    Py_VISIT(self->check_prefix);
    Py_VISIT(self->decode_header);
    Py_VISIT(self->refuse_kind);
    Py_VISIT(self->malformed);
    Py_VISIT(self->slow);
    Py_VISIT(self->slow_feed);
    Py_VISIT(self->handler_errors);
    return 0;
}

static int
frame_loop_clear(FrameLoop *self)
{
    Py_CLEAR(self->reader_type);
    Py_CLEAR(self->unpackb);
    Py_CLEAR(self->check_prefix);
    Py_CLEAR(self->decode_header);
    Py_CLEAR(self->refuse_kind);
    Py_CLEAR(self->malformed);
    Py_CLEAR(self->slow);
    Py_CLEAR(self->slow_feed);
    Py_CLEAR(self->handler_errors);
    return 0;
}

static void
frame_loop_dealloc(FrameLoop *self)
{
    PyObject_GC_UnTrack(self);
    frame_loop_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef frame_loop_methods[] = {
    {"feed", (PyCFunction)(void (*)(void))frame_loop_feed, METH_FASTCALL,
     "feed(reader, data, max_frames): FrameReader.feed, its common case in C."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject FrameLoopType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pbnb.core._receiving.FrameLoop",
    .tp_doc = "FrameLoop(reader_type, unpackb, check_prefix, decode_header, refuse_kind, malformed, slow, "
              "slow_feed, copied_payload): the C twin of FrameReader._read_frames, called as "
              "loop(reader, data, pos, budget), and of FrameReader.feed (its feed method).",
    .tp_basicsize = sizeof(FrameLoop),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(FrameLoop, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = frame_loop_new,
    .tp_traverse = (traverseproc)frame_loop_traverse,
    .tp_clear = (inquiry)frame_loop_clear,
    .tp_dealloc = (destructor)frame_loop_dealloc,
    .tp_methods = frame_loop_methods,
};

/* ---- the quick path of a cache update --------------------------------------
 *
 * QuickObserve(broker, call_received, call_fields, unpackb, no_ext, tree_depth_exceeds, plain)
 * is a Broker's OBSERVE handler: Broker._on_observe in C. A no-answer PLAIN
 * update naming a method, of a live copy, whose payload is [[args...], {}]
 * without ext and within the depth limit, is queued as CallReceived; anything
 * else goes to Broker._on_call, as in the Python twin (and a header of the
 * wrong shape to _on_observe itself, which says what is wrong). It reads the
 * broker's slots at their offsets; the broker must be exactly a Broker (a
 * subclass may override _on_observe, and then gets its own). The event is made as
 * call_received(0, method, args, kwargs, None, target, name, broker) would make it, its
 * slots (call_fields, in that order; the rest keep their default, None) set directly:
 * calling the class would run its Python __init__.
 */
#define EVENT_VALUES 8
#define EVENT_FIELDS 9

enum {
    SOUND_UPDATE, TABLES, BARE_LIMIT, RUNNING, MAX_INBOUND_CALLS, HELD_EVENTS, MAX_DEPTH, EVENTS,
    BROKER_SLOTS
};
static const char *const broker_slot_names[BROKER_SLOTS] = {
    "_sound_update", "_tables", "_bare_limit", "_running", "_max_inbound_calls", "_held_events",
    "_max_depth", "_events",
};

typedef struct {
    PyObject_HEAD
    PyObject *broker;
    PyTypeObject *call_received;  /* events.CallReceived */
    Py_ssize_t event_offsets[EVENT_FIELDS];
    PyObject *unpackb;            /* msgpack.unpackb */
    PyObject *unpack_options;     /* (False, no_ext): strict_map_key, ext_hook */
    PyObject *unpack_names;       /* ("strict_map_key", "ext_hook") */
    PyObject *tree_depth_exceeds; /* serialize.tree_depth_exceeds */
    PyObject *plain;              /* serialize.PLAIN */
    PyObject *cache_imports_name, *weak_name, *awaiting_state_name, *pb_method_name, *on_call_name,
        *on_observe_name;
    Py_ssize_t offsets[BROKER_SLOTS];
    vectorcallfunc vectorcall;
} QuickObserve;

static Py_ssize_t
broker_int(QuickObserve *self, int which)
{
    PyObject *value = *slot_at(self->broker, self->offsets[which]);
    if (value == NULL) {
        PyErr_Format(PyExc_AttributeError, "Broker has no attribute '%s'", broker_slot_names[which]);
        return -1;
    }
    return PyLong_AsSsize_t(value);
}

static PyObject *
call_broker(QuickObserve *self, PyObject *name, PyObject *header, PyObject *payload)
{
    PyObject *args[3] = {self->broker, header, payload};
    return PyObject_VectorcallMethod(name, args, 3, NULL);
}

/* The header's checks, done once per header list (it is remembered in _sound_update): 1 if a
 * no-answer PLAIN update naming a method, 0 if not, -1 on error. */
static int
sound_update(QuickObserve *self, PyObject *header)
{
    PyObject *request_id = PyList_GET_ITEM(header, 1), *cache_id = PyList_GET_ITEM(header, 2);
    PyObject *name = PyList_GET_ITEM(header, 3), *mode = PyList_GET_ITEM(header, 4);
    if (!PyLong_CheckExact(cache_id) || !PyLong_CheckExact(request_id) || PyObject_IsTrue(request_id)) {
        return 0;
    }
    int plain = PyObject_RichCompareBool(mode, self->plain, Py_EQ);
    if (plain <= 0) {
        return plain;
    }
    return PyUnicode_CheckExact(name) && PyUnicode_IsIdentifier(name);
}

/* A CallReceived holding ``values`` (see above). */
static PyObject *
new_event(QuickObserve *self, PyObject *const *values)
{
    PyObject *event = self->call_received->tp_alloc(self->call_received, 0);
    if (event != NULL) {
        for (int i = 0; i < EVENT_FIELDS; i++) {
            *slot_at(event, self->event_offsets[i]) = Py_NewRef(i < EVENT_VALUES ? values[i] : Py_None);
        }
    }
    return event;
}

/* What the copy ``weak`` refers to (if alive) makes of a payload of [[args...], {}]: the event
 * queued (1), or 0 for anything else (no copy, no such method, an ext, another shape, too
 * deep); -1 on error. */
static int
queue_update(QuickObserve *self, PyObject *weak, PyObject *name, PyObject *payload, Py_ssize_t size)
{
    PyObject *target = PyObject_CallNoArgs(weak);
    if (target == NULL) {
        return -1;
    }
    PyObject *method = Py_NewRef(Py_None);
    if (target != Py_None) {
        PyObject *method_args[3] = {target, name, Py_None};
        Py_SETREF(method, PyObject_VectorcallMethod(self->pb_method_name, method_args, 3, NULL));
        if (method == NULL) {
            Py_DECREF(target);
            return -1;
        }
    }
    PyObject *unpack_args[3] = {payload, PyTuple_GET_ITEM(self->unpack_options, 0),
                                PyTuple_GET_ITEM(self->unpack_options, 1)};
    PyObject *call = PyObject_Vectorcall(self->unpackb, unpack_args, 1, self->unpack_names);
    int queued = 0;
    if (call == NULL) {
        queued = PyErr_ExceptionMatches(PyExc_Exception) ? 0 : -1;
        if (queued == 0) {
            PyErr_Clear();
        }
    }
    else if (method != Py_None && PyList_CheckExact(call) && PyList_GET_SIZE(call) == 2
             && PyList_CheckExact(PyList_GET_ITEM(call, 0)) && PyDict_CheckExact(PyList_GET_ITEM(call, 1))
             && PyDict_GET_SIZE(PyList_GET_ITEM(call, 1)) == 0) {
        PyObject *args = PyList_GET_ITEM(call, 0), *kwargs = PyList_GET_ITEM(call, 1);
        Py_ssize_t max_depth = broker_int(self, MAX_DEPTH);
        int too_deep = max_depth == -1 && PyErr_Occurred() ? -1 : 0;
        if (too_deep == 0 && size > max_depth) { /* a payload this short cannot nest deeper */
            /* ``call`` is [args, kwargs], what the Python twin measures */
            PyObject *depth_args[2] = {call, *slot_at(self->broker, self->offsets[MAX_DEPTH])};
            PyObject *exceeds = PyObject_Vectorcall(self->tree_depth_exceeds, depth_args, 2, NULL);
            too_deep = exceeds == NULL ? -1 : PyObject_IsTrue(exceeds);
            Py_XDECREF(exceeds);
        }
        if (too_deep < 0) {
            queued = -1;
        }
        else if (!too_deep) {
            PyObject *zero = PyLong_FromLong(0);
            PyObject *values[EVENT_VALUES] = {zero, method, args, kwargs, Py_None, target, name, self->broker};
            PyObject *event = zero == NULL ? NULL : new_event(self, values);
            Py_XDECREF(zero);
            PyObject *events = event == NULL ? NULL : *slot_at(self->broker, self->offsets[EVENTS]);
            queued = events == NULL || PyList_Append(events, event) < 0 ? -1 : 1;
            Py_XDECREF(event);
        }
    }
    Py_XDECREF(call);
    Py_DECREF(method);
    Py_DECREF(target);
    return queued;
}

static PyObject *
quick_observe_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    QuickObserve *self = (QuickObserve *)callable;
    if (PyVectorcall_NARGS(nargsf) != 2 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "QuickObserve takes (header, payload)");
        return NULL;
    }
    PyObject *header = args[0], *payload = args[1];
    if (!PyList_CheckExact(header) || PyList_GET_SIZE(header) != 5) {
        return call_broker(self, self->on_observe_name, header, payload);
    }
    PyObject **sound = slot_at(self->broker, self->offsets[SOUND_UPDATE]);
    if (header != *sound) {
        int checked = sound_update(self, header);
        if (checked <= 0) {
            return checked < 0 ? NULL : call_broker(self, self->on_call_name, header, payload);
        }
        PyObject *old = *sound;
        *sound = Py_NewRef(header);
        Py_XDECREF(old);
    }
    PyObject *tables = *slot_at(self->broker, self->offsets[TABLES]);
    PyObject *imports = tables == NULL ? NULL : PyObject_GetAttr(tables, self->cache_imports_name);
    if (imports == NULL) {
        return NULL;
    }
    PyObject *cache = PyDict_CheckExact(imports)
        ? Py_XNewRef(PyDict_GetItemWithError(imports, PyList_GET_ITEM(header, 2)))
        : PyObject_CallMethod(imports, "get", "O", PyList_GET_ITEM(header, 2));
    Py_DECREF(imports);
    if (cache == NULL && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t size = PyObject_Size(payload);
    int queued = size < 0 ? -1 : 0;
    if (cache != NULL && cache != Py_None && queued == 0) {
        Py_ssize_t bare_limit = broker_int(self, BARE_LIMIT), running = broker_int(self, RUNNING);
        Py_ssize_t max_running = broker_int(self, MAX_INBOUND_CALLS);
        PyObject *awaiting = PyErr_Occurred() ? NULL : PyObject_GetAttr(cache, self->awaiting_state_name);
        PyObject *weak = awaiting == NULL ? NULL : PyObject_GetAttr(cache, self->weak_name);
        int awaits = weak == NULL ? -1 : PyObject_IsTrue(awaiting);
        if (awaits < 0) {
            queued = -1;
        }
        else if (size <= bare_limit && running < max_running
                 && *slot_at(self->broker, self->offsets[HELD_EVENTS]) == Py_None && !awaits
                 && weak != Py_None) {
            PyObject *name = Py_NewRef(PyList_GET_ITEM(header, 3)); /* held: Python code runs */
            queued = queue_update(self, weak, name, payload, size);
            Py_DECREF(name);
        }
        Py_XDECREF(awaiting);
        Py_XDECREF(weak);
    }
    Py_XDECREF(cache);
    if (queued != 0) {
        return queued < 0 ? NULL : Py_NewRef(Py_None);
    }
    return call_broker(self, self->on_call_name, header, payload);
}

static PyObject *
quick_observe_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *broker, *call_fields, *unpackb, *no_ext, *tree_depth_exceeds, *plain;
    PyTypeObject *call_received;
    if (!PyArg_ParseTuple(args, "OO!O!OOOO:QuickObserve", &broker, &PyType_Type, &call_received,
                          &PyTuple_Type, &call_fields, &unpackb, &no_ext, &tree_depth_exceeds, &plain)) {
        return NULL;
    }
    Py_ssize_t offsets[BROKER_SLOTS], event_offsets[EVENT_FIELDS];
    for (int i = 0; i < BROKER_SLOTS; i++) {
        if (slot_offset(Py_TYPE(broker), broker_slot_names[i], &offsets[i]) < 0) {
            return NULL;
        }
    }
    if (PyTuple_GET_SIZE(call_fields) != EVENT_FIELDS) {
        PyErr_Format(PyExc_TypeError, "%.100s has %zd fields, not %d", call_received->tp_name,
                     PyTuple_GET_SIZE(call_fields), EVENT_FIELDS);
        return NULL;
    }
    for (int i = 0; i < EVENT_FIELDS; i++) {
        const char *field = PyUnicode_AsUTF8(PyTuple_GET_ITEM(call_fields, i));
        if (field == NULL || slot_offset(call_received, field, &event_offsets[i]) < 0) {
            return NULL;
        }
    }
    QuickObserve *self = (QuickObserve *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->broker = Py_NewRef(broker);
    self->call_received = (PyTypeObject *)Py_NewRef(call_received);
    memcpy(self->event_offsets, event_offsets, sizeof(event_offsets));
    self->unpackb = Py_NewRef(unpackb);
    self->unpack_options = PyTuple_Pack(2, Py_False, no_ext);
    self->unpack_names = Py_BuildValue("(ss)", "strict_map_key", "ext_hook");
    self->tree_depth_exceeds = Py_NewRef(tree_depth_exceeds);
    self->plain = Py_NewRef(plain);
    self->cache_imports_name = PyUnicode_InternFromString("cache_imports");
    self->weak_name = PyUnicode_InternFromString("weak");
    self->awaiting_state_name = PyUnicode_InternFromString("awaiting_state");
    self->pb_method_name = PyUnicode_InternFromString("_pb_method");
    self->on_call_name = PyUnicode_InternFromString("_on_call");
    self->on_observe_name = PyUnicode_InternFromString("_on_observe");
    memcpy(self->offsets, offsets, sizeof(offsets));
    self->vectorcall = quick_observe_vectorcall;
    if (!self->unpack_options || !self->unpack_names || !self->cache_imports_name || !self->weak_name
        || !self->awaiting_state_name || !self->pb_method_name || !self->on_call_name
        || !self->on_observe_name) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int
quick_observe_traverse(QuickObserve *self, visitproc visit, void *arg)
{
    Py_VISIT(self->broker);
    Py_VISIT(self->call_received);
    Py_VISIT(self->unpackb);
    Py_VISIT(self->unpack_options);
    Py_VISIT(self->tree_depth_exceeds);
    Py_VISIT(self->plain);
    return 0;
}

static int
quick_observe_clear(QuickObserve *self)
{
    Py_CLEAR(self->broker);
    Py_CLEAR(self->call_received);
    Py_CLEAR(self->unpackb);
    Py_CLEAR(self->unpack_options);
    Py_CLEAR(self->unpack_names);
    Py_CLEAR(self->tree_depth_exceeds);
    Py_CLEAR(self->plain);
    Py_CLEAR(self->cache_imports_name);
    Py_CLEAR(self->weak_name);
    Py_CLEAR(self->awaiting_state_name);
    Py_CLEAR(self->pb_method_name);
    Py_CLEAR(self->on_call_name);
    Py_CLEAR(self->on_observe_name);
    return 0;
}

static void
quick_observe_dealloc(QuickObserve *self)
{
    PyObject_GC_UnTrack(self);
    quick_observe_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject QuickObserveType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pbnb.core._receiving.QuickObserve",
    .tp_doc = "QuickObserve(broker, call_received, call_fields, unpackb, no_ext, tree_depth_exceeds, "
              "plain): the C twin of broker._on_observe, called as handler(header, payload).",
    .tp_basicsize = sizeof(QuickObserve),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(QuickObserve, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = quick_observe_new,
    .tp_traverse = (traverseproc)quick_observe_traverse,
    .tp_clear = (inquiry)quick_observe_clear,
    .tp_dealloc = (destructor)quick_observe_dealloc,
};

static int
add_types(PyObject *module)
{
    if (PyModule_AddType(module, &FrameLoopType) < 0) {
        return -1;
    }
    return PyModule_AddType(module, &QuickObserveType);
}

/* Its types are static: shared by every interpreter, so not one with a GIL of its own. And
 * not marked Py_MOD_GIL_NOT_USED: the twins swap a reader's or broker's slots as Python
 * code does, relying on the GIL as it does. */
static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, add_types},
    {0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pbnb.core._receiving",
    .m_doc = "C twins of the receive path: the frame reader's loop (see pbnb/core/wire.py) and a "
             "cache update's quick path (Broker._on_observe).",
    .m_size = 0,
    .m_slots = slots,
};

PyMODINIT_FUNC
PyInit__receiving(void)
{
    return PyModuleDef_Init(&module);
}
