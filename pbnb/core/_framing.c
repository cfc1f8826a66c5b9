/* The C twin of FrameReader._read_frames (pbnb/core/wire.py): the frame loop
 * that every message of every connection goes through, and of the common case
 * of FrameReader.feed that leads to it.
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
slot(FrameLoop *self, PyObject *reader, int which)
{
    return (PyObject **)((char *)reader + self->offsets[which]);
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

/* reader._keep(data[pos:], needed): a frame cut short waits for more bytes. */
static int
keep(PyObject *reader, int is_bytes, const char *base, Py_ssize_t pos, Py_ssize_t end, Py_ssize_t needed)
{
    PyObject *rest = cut(is_bytes, base, pos, end);
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
        PyObject *closed = *slot(self, reader, CLOSED);
        if (closed != Py_False) { /* a handler closed the reader: the rest is ignored */
            int truth = closed == NULL ? -1 : PyObject_IsTrue(closed);
            if (closed == NULL) {
                slot_get(self, reader, CLOSED); /* unset: raises AttributeError */
            }
            if (truth != 0) {
                outcome = truth < 0 ? -1 : 0;
                break;
            }
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
            outcome = keep(reader, is_bytes, base, pos, end, PREFIX_SIZE) < 0 ? -1 : 1;
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
            outcome = keep(reader, is_bytes, base, pos, end, LENGTH_SIZE + body) < 0 ? -1 : 1;
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
    .tp_name = "pbnb.core._framing.FrameLoop",
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

static int
add_types(PyObject *module)
{
    return PyModule_AddType(module, &FrameLoopType);
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, add_types},
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#ifdef Py_GIL_DISABLED
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pbnb.core._framing",
    .m_doc = "The C twin of the frame reader's loop (see pbnb/core/wire.py).",
    .m_size = 0,
    .m_slots = slots,
};

PyMODINIT_FUNC
PyInit__framing(void)
{
    return PyModuleDef_Init(&module);
}
